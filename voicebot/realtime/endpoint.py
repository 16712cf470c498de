"""Endpointing: when a caller's utterance starts, pauses, ends, and when it interrupts the bot.

A pure state machine over VAD probabilities, one 32 ms window at a time, counting time in
audio samples (never the wall clock), so it gives the same answer however fast the audio
arrives. It knows nothing about transcripts: the session asks the recogniser whether a short
utterance was only a backchannel ("haan", "hmm", "avunu" — ``LanguagePack.backchannels``)
and then calls ``discard``.

Events, in the order they can happen within one utterance::

    Started      speech_start_ms of speech: an utterance begins (its first voiced window)
    BargeIn      the bot is speaking and the caller has spoken barge_in_ms: stop the bot
    Committed    the utterance has lasted backchannel_max_s: it cannot be a backchannel
    Paused       pause_ms of silence after speech: a good moment to transcribe speculatively
    Resumed      speech again after Paused: drop the speculation
    Ended        end_silence_ms of silence (or max_utterance_s): the caller's turn is over
    Dropped      the utterance ended with less than min_utterance_ms of voiced audio: noise

Thresholds follow Silero's own hysteresis (faster_whisper/vad.py): a window counts as speech
at ``threshold``; once speaking, it stays speech down to ``neg_threshold``.
"""

from __future__ import annotations

import enum
import math
import unicodedata
from dataclasses import dataclass

__all__ = [
    "EndpointConfig",
    "Endpointer",
    "Event",
    "Kind",
    "Span",
    "is_backchannel",
    "normalize",
]


@dataclass(frozen=True, slots=True)
class EndpointConfig:
    """Timing of turn-taking (issue 5 asks for 600–700 ms end-of-turn silence). The pauses
    inside a spoken sentence (about 100–300 ms) neither end a turn nor start one."""

    threshold: float = 0.5
    neg_threshold: float = 0.35
    speech_start_ms: int = 64  # voiced audio before an utterance counts as started
    # Voiced audio over the bot before it stops. Low, so `clear` goes out within 200 ms of
    # the onset (§2.5), and cheap to get wrong: for a backchannel or a cough the bot resumes.
    barge_in_ms: int = 128
    pause_ms: int = 192  # silence before a speculative transcription
    end_silence_ms: int = 640  # silence that ends the caller's turn
    min_utterance_ms: int = 160  # less voiced audio than this is a click or a cough
    backchannel_max_s: float = 0.6  # longer utterances are never backchannels
    max_utterance_s: float = 30.0  # Whisper's window; longer speech is cut into turns

    def __post_init__(self) -> None:
        if not 0.0 < self.neg_threshold <= self.threshold < 1.0:
            raise ValueError("need 0 < neg_threshold <= threshold < 1")
        if not self.pause_ms < self.end_silence_ms:
            raise ValueError("pause_ms must be shorter than end_silence_ms")


class Kind(enum.Enum):
    STARTED = "started"
    BARGE_IN = "barge-in"
    COMMITTED = "committed"
    PAUSED = "paused"
    RESUMED = "resumed"
    ENDED = "ended"
    DROPPED = "dropped"


@dataclass(frozen=True, slots=True)
class Span:
    """An utterance as sample offsets into the stream: ``start`` is its first voiced sample,
    ``end`` just after its last voiced window; ``voiced`` counts speech samples inside."""

    start: int
    end: int
    voiced: int
    rate: int

    @property
    def seconds(self) -> float:
        return (self.end - self.start) / self.rate


@dataclass(frozen=True, slots=True)
class Event:
    kind: Kind
    span: Span
    at: int  # stream sample offset at which the event was decided


class _State(enum.Enum):
    IDLE = "idle"
    SPEECH = "speech"
    PAUSE = "pause"


class Endpointer:
    """Feed ``push(probability, bot_speaking=…)`` once per VAD window; get events back."""

    def __init__(
        self, config: EndpointConfig = EndpointConfig(), *, window: int = 512, rate: int = 16000
    ) -> None:
        self.config = config
        self.window = window
        self.rate = rate
        self.position = 0  # samples seen
        self._state = _State.IDLE
        self._run = 0  # consecutive voiced samples while idle (onset candidate)
        self._start = 0
        self._last_voiced_end = 0
        self._voiced = 0
        self._silence = 0
        self._barged = False
        self._committed = False
        self._paused = False

    # -- thresholds in samples ----------------------------------------------------------

    def _samples(self, ms: float) -> int:
        """Milliseconds → samples, rounded up to whole windows (the VAD's resolution)."""
        windows = math.ceil(ms * self.rate / 1000 / self.window)
        return max(windows, 1) * self.window

    @property
    def in_utterance(self) -> bool:
        return self._state is not _State.IDLE

    @property
    def speaking(self) -> bool:
        """The caller is producing speech right now (not in a trailing pause)."""
        return self._state is _State.SPEECH

    def span(self) -> Span:
        return Span(self._start, self._last_voiced_end, self._voiced, self.rate)

    # -- the machine -----------------------------------------------------------------------

    def push(self, probability: float, *, bot_speaking: bool = False) -> list[Event]:
        cfg = self.config
        begin = self.position
        self.position += self.window
        voiced = probability >= cfg.threshold or (
            self._state is _State.SPEECH and probability >= cfg.neg_threshold
        )
        events: list[Event] = []
        if self._state is _State.IDLE:
            if not voiced:
                self._run = 0
                return events
            if self._run == 0:
                self._start = begin
            self._run += self.window
            if self._run < self._samples(cfg.speech_start_ms):
                return events
            self._state = _State.SPEECH
            self._voiced = self._run
            self._last_voiced_end = self.position
            self._barged = self._committed = self._paused = False
            self._run = 0
            events.append(self._event(Kind.STARTED))
        elif voiced:
            if self._state is _State.PAUSE:
                self._state = _State.SPEECH
                if self._paused:
                    self._paused = False
                    events.append(self._event(Kind.RESUMED))
            self._silence = 0
            self._voiced += self.window
            self._last_voiced_end = self.position
        else:
            self._state = _State.PAUSE
            self._silence += self.window
            if self._silence >= self._samples(cfg.end_silence_ms):
                return [*events, self._finish()]
            if not self._paused and self._silence >= self._samples(cfg.pause_ms):
                self._paused = True
                events.append(self._event(Kind.PAUSED))
            return events
        # Still (or newly) voiced: decisions that depend on how much speech there has been.
        if bot_speaking and not self._barged and self._voiced >= self._samples(cfg.barge_in_ms):
            self._barged = True
            events.append(self._event(Kind.BARGE_IN))
        if not self._committed and self.span().seconds >= cfg.backchannel_max_s:
            self._committed = True
            events.append(self._event(Kind.COMMITTED))
        if self.position - self._start >= cfg.max_utterance_s * self.rate:
            events.append(self._finish())
        return events

    def discard(self) -> None:
        """Forget the current utterance (it was a backchannel or noise): back to idle."""
        self._state = _State.IDLE
        self._run = self._silence = self._voiced = 0

    def _finish(self) -> Event:
        enough = self._voiced >= self._samples(self.config.min_utterance_ms)
        event = self._event(Kind.ENDED if enough else Kind.DROPPED)
        self.discard()
        return event

    def _event(self, kind: Kind) -> Event:
        return Event(kind, self.span(), self.position)


def normalize(text: str) -> str:
    """Lower-case words without punctuation: "Hmm." and "hmm" are the same backchannel."""
    kept = "".join(ch if ch.isalnum() or ch.isspace() or _is_mark(ch) else " " for ch in text)
    return " ".join(kept.casefold().split())


def _is_mark(ch: str) -> bool:
    # Indic vowel signs and viramas are combining marks, not punctuation: keep them.
    return unicodedata.category(ch).startswith("M")


def is_backchannel(text: str, backchannels: tuple[str, ...]) -> bool:
    """True when ``text`` is only backchannel phrases, repeated or mixed ("haan haan",
    "Hmm, ok.", "हाँ, ठीक है")."""
    said = normalize(text).split()
    phrases = {tuple(p) for p in (normalize(b).split() for b in backchannels) if p}
    if not said or not phrases:
        return False
    longest = max(len(p) for p in phrases)
    # reachable[i]: the first i words split into whole backchannel phrases
    reachable = [True] + [False] * len(said)
    for i in range(len(said)):
        if not reachable[i]:
            continue
        for n in range(1, min(longest, len(said) - i) + 1):
            if tuple(said[i : i + n]) in phrases:
                reachable[i + n] = True
    return reachable[-1]
