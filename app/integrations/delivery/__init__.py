"""Delivery channels: the interface (``base``) and the registry of channels by name."""

from app.integrations.delivery.base import DeliveryChannel
from app.integrations.registry import Registry

# No channel ships yet: each channel module registers its DeliveryChannel class here.
channels: Registry[type[DeliveryChannel]] = Registry("delivery channel", ())

__all__ = ["DeliveryChannel", "channels"]
