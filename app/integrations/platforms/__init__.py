"""Shop platforms: the interface (``base``) and the registry of adapters by platform name."""

from app.integrations.platforms.base import PlatformAdapter
from app.integrations.registry import Registry

# No adapter ships yet: each platform module registers its PlatformAdapter class here.
platforms: Registry[type[PlatformAdapter]] = Registry("shop platform", ())

__all__ = ["PlatformAdapter", "platforms"]
