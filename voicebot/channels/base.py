"""Channel-neutral message types and the two things every messaging provider must do.

Provider payloads (Twilio form fields, Meta JSON) are parsed into ``Inbound`` inside each
channel module and never travel further; replies leave as ``Outbound`` and only the channel's
``Sender`` turns them back into a provider request.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from voicebot.errors import ChannelError

__all__ = ["Inbound", "MediaFetcher", "Outbound", "SendError", "Sender"]


@dataclass(frozen=True, slots=True)
class Inbound:
    """One accepted user message, as stored in the inbox.

    ``phone`` is the E.164 identity (one phone = one user on every channel); ``reply_to`` and
    ``reply_from`` are the provider addresses for the answer; ``media`` is an opaque provider
    reference (a Twilio media URL, a Meta media id) that only the channel's fetcher understands.
    """

    channel: str
    message_id: str
    phone: str
    reply_to: str
    reply_from: str
    kind: str = "text"  # text | audio | other
    text: str = ""
    media: str = ""
    media_type: str = ""
    limited: str = ""  # "" | "refuse" | "drop": decided by the rate limiter at the webhook
    received: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Inbound:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message to send: text, or a voice note stored in the media store under ``media``."""

    channel: str
    to: str
    sender: str
    kind: str  # text | audio
    text: str = ""
    media: str = ""  # media-store token of an OGG/Opus voice note
    user: str = ""  # hashed user id, for the audit trail of a dead letter

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Outbound:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class SendError(ChannelError):
    """A send failed. ``retryable`` for 429/5xx/timeouts (protocols.md §7); ``ref`` keeps a
    half-done step (e.g. an uploaded Meta media id) so the retry does not redo it."""

    default_code = "channel-send-failed"

    def __init__(
        self, message: str, *, retryable: bool, code: str | None = None, ref: str = ""
    ) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable
        self.ref = ref


class Sender(Protocol):
    """Delivers one ``Outbound``; returns the provider's message id. ``ref`` is what a previous
    attempt left in ``SendError.ref``."""

    async def send(self, message: Outbound, *, ref: str = "") -> str: ...


class MediaFetcher(Protocol):
    """Downloads the media of an inbound message with the provider's credentials, size-capped."""

    async def fetch(self, message: Inbound) -> bytes: ...
