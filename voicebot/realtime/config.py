"""Settings and plug-in points of realtime calls: ``RealtimeConfig``, ``CallInfo``, ``Hooks``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from voicebot.messages import Answer
from voicebot.realtime.endpoint import EndpointConfig

__all__ = [
    "DTMF_MENU",
    "DTMF_REPEAT",
    "DTMF_SLOWER",
    "DTMF_WHATSAPP",
    "CallInfo",
    "Hooks",
    "RealtimeConfig",
]

# Keypad during the stream works as in turn-based mode (issue 5): the same four keys.
DTMF_REPEAT: Final = "1"
DTMF_SLOWER: Final = "2"
DTMF_MENU: Final = "0"
DTMF_WHATSAPP: Final = "9"


@dataclass(frozen=True, slots=True)
class RealtimeConfig:
    """Tuning of realtime calls; durations in seconds unless the name says ms."""

    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    max_lead: float = 0.1  # audio queued at Twilio, at most (§2.4: small keeps `clear` sharp)
    preroll: float = 0.3  # caller audio kept before the VAD onset (§2.5 step 5)
    tail: float = 0.2  # audio after the last voiced window, for Whisper's last word
    repeat_after: float = 1.0  # an utterance this long that Whisper finds empty gets "repeat"
    speculate: bool = True  # transcribe at the pause, before the end of the turn
    synth_ahead: int = 2  # sentences synthesised ahead of the one playing
    reprompt_after: float = 8.0  # silence (after the bot stops) before a re-prompt
    max_reprompts: int = 2  # then goodbye and hang up
    reprompt_phrase: str = "please_repeat"
    greeting_phrase: str = "greeting"
    goodbye_timeout: float = 15.0  # longest wait for the goodbye to play before hanging up
    max_calls: int = 16  # calls at once in this process; more hear "busy"
    model_slots: int = 2  # turns in STT → answer → first TTS sentence at once (≈ cores)
    queue_timeout: float = 4.0  # wait for a slot before saying "busy"
    start_timeout: float = 10.0  # a socket must send a valid `start` within this
    require_signature: bool = False  # also demand X-Twilio-Signature on the upgrade (§2.6)
    # Phrases synthesised per pack at start-up (with the greeting and re-prompt), so they
    # start within milliseconds on a call; others are cached the first time they are said.
    warm_phrases: tuple[str, ...] = ("busy", "goodbye")


@dataclass(frozen=True, slots=True)
class CallInfo:
    """Who the stream belongs to (from the authenticated ``start`` message, §2.2)."""

    call_sid: str
    stream_sid: str
    lang: str
    account_sid: str = ""


@dataclass(slots=True)
class Hooks:
    """What the rest of the app plugs in; each may be ``None``.

    ``whatsapp``: send the last answer to the caller on WhatsApp (key 9); True when queued.
    ``busy``: a caller met the busy limit (e.g. schedule a call-back or a WhatsApp answer).
    ``conversation``: the memory key for a call (default ``call:<CallSid>``), e.g. the
    caller's user key so the conversation continues on WhatsApp.
    """

    whatsapp: Callable[[CallInfo, Answer], Awaitable[bool]] | None = None
    busy: Callable[[CallInfo], Awaitable[None]] | None = None
    conversation: Callable[[CallInfo], Awaitable[str]] | None = None
