"""The delivery interface: how an issued invoice reaches its buyer (e-mail today; SMS or a
platform's own message next). A channel sends one message and says whether it was accepted;
retries, back-off and the invoice log are the delivery job's business, not the channel's.

Error contract: ``TransientDeliveryError`` (the server is busy or unreachable: retry later);
``PermanentDeliveryError`` (bad address, refused: show the reason, never retry by itself).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import ClassVar


class DeliveryError(Exception):
    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class TransientDeliveryError(DeliveryError):
    pass


class PermanentDeliveryError(DeliveryError):
    pass


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class DeliveryMessage:
    recipient: str
    subject: str
    text: str
    html: str | None = None
    attachments: tuple[Attachment, ...] = ()
    message_id: str | None = None  # the same delivery sent again carries the same id


@dataclass(frozen=True)
class DeliveryReceipt:
    accepted: bool
    reference: str | None = None  # e.g. the SMTP server's queue id


class DeliveryChannel(abc.ABC):
    name: ClassVar[str]  # e.g. "email"

    @abc.abstractmethod
    def send(self, message: DeliveryMessage) -> DeliveryReceipt: ...
