"""Outbound audio of one call: real-time pacing, per-sentence marks, and what the caller heard.

Twilio buffers the ``media`` we send and plays it in order (protocols.md §2.4). Sending a whole
answer at once would make ``clear`` the only way to stop it and hide from us what was heard,
so ``Pacer`` keeps at most ``max_lead`` seconds queued at Twilio, using absolute deadlines on a
play clock (the moment Twilio will have played everything sent so far): no drift, no catch-up
bursts after a stall, and after ``clear`` the clock simply restarts at now.

A ``Reply`` is one thing the bot says, as sentences: their μ-law clips arrive from synthesis
while earlier ones play. A ``mark`` goes after each sentence; its echo means the caller heard
that sentence (§2.3, §2.5). ``heard_text`` is what goes into conversation memory when the
caller interrupts: the sentences confirmed by marks plus the estimated part of the next one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from voicebot.messages import Answer, Exchange

__all__ = ["FRAME_BYTES", "FRAME_SECONDS", "Outbound", "Pacer", "Reply"]

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law: one Media Streams frame (§2.4)
FRAME_SECONDS = 0.02


class Outbound(Protocol):
    """What a call sends to its carrier; ``channels/twilio_stream.py`` speaks the JSON (§2.3)."""

    async def media(self, ulaw: bytes) -> None: ...

    async def mark(self, name: str) -> None: ...

    async def clear(self) -> None: ...

    async def hangup(self) -> None: ...


class Pacer:
    """Real-time pacing with absolute deadlines on a play clock.

    ``play_clock`` is when the far end will have played everything sent so far. A frame may go
    when that leaves at most ``max_lead`` queued. After an underrun (nothing to send for a
    while) the clock restarts at now instead of bursting to catch up.
    """

    def __init__(
        self,
        *,
        max_lead: float = 0.1,
        frame_seconds: float = FRAME_SECONDS,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.max_lead = max_lead
        self.frame_seconds = frame_seconds
        self._clock = clock or asyncio.get_running_loop().time
        self.play_clock = self._clock()

    async def slot(self) -> float:
        """Wait until one more frame may be sent; returns when that frame will start playing."""
        now = self._clock()
        if self.play_clock < now:
            self.play_clock = now
        deadline = self.play_clock + self.frame_seconds - self.max_lead
        if deadline > now:
            await asyncio.sleep(deadline - now)
            now = self._clock()
            if self.play_clock < now:  # overslept past an empty buffer
                self.play_clock = now
        starts = self.play_clock
        self.play_clock += self.frame_seconds
        return starts

    def flush(self) -> None:
        """After ``clear`` the far end's buffer is empty."""
        self.play_clock = self._clock()

    def queued(self) -> float:
        """Seconds of audio still queued at the far end."""
        return max(0.0, self.play_clock - self._clock())


@dataclass(eq=False)
class Reply:
    """One utterance of the bot, sentence by sentence.

    ``clips[i]`` is sentence i's μ-law (``None`` until synthesised, ``b""`` if synthesis
    failed). ``exchange`` is the memory entry this reply completes (answers only): it is written
    once we know how much of the answer was heard.
    """

    number: int
    texts: list[str]
    kind: str = "phrase"  # answer | phrase | phrase:<key> (synthesised into the cache)
    slow: bool = False
    answer: Answer | None = None
    exchange: Exchange | None = None
    clips: list[bytes | None] = field(default_factory=list)
    synth_done: bool = False
    generation: int = 0  # bumped by every clear: older marks are not "heard" (§2.5 step 4)
    heard: int = 0  # sentences confirmed by mark echoes
    playing: int = -1  # sentence being sent now
    starts: dict[int, float] = field(default_factory=dict)  # sentence → play-clock start
    durations: dict[int, float] = field(default_factory=dict)
    first_frame_at: float | None = None
    speech_end: float | None = None  # when the caller stopped speaking (answers: latency)
    sent_all: bool = False
    committed: bool = False
    partial: float = 0.0  # estimated fraction of sentence ``heard`` played when cut off
    stopped: bool = False  # cut off (cleared or hung up): ``heard`` is final until resumed
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if not self.clips:
            self.clips = [None] * len(self.texts)

    def put(self, index: int, clip: bytes) -> None:
        self.clips[index] = clip
        self.changed()

    def finish_synthesis(self) -> None:
        self.synth_done = True
        self.changed()

    def changed(self) -> None:
        self._changed.set()

    async def clip(self, index: int) -> bytes | None:
        """Sentence ``index``'s audio once synthesised; ``None`` if synthesis stopped first."""
        while self.clips[index] is None:
            if self.synth_done:
                return None
            self._changed.clear()
            await self._changed.wait()
        return self.clips[index]

    async def room_for(self, index: int, ahead: int) -> None:
        """Wait until sentence ``index`` is at most ``ahead`` sentences beyond playback, so one
        call's long answer does not hold the synthesiser while others wait for a first
        sentence."""
        while index > self.playing + ahead:
            self._changed.clear()
            await self._changed.wait()

    @property
    def complete(self) -> bool:
        return self.synth_done and all(c for c in self.clips)

    def cut(self, now: float, *, margin: float = 0.0) -> None:
        """Playback stops at ``now``: which sentences were heard, and how much of the next.

        Sentences whose audio finished playing by the play clock ``margin`` seconds before
        ``now`` count as heard even if their mark is still on its way back. Only the first cut
        counts: after a ``clear`` the play clock no longer says anything about this reply.
        """
        if self.stopped:
            return
        self.stopped = True
        index = self.heard
        while index in self.starts and now >= self.starts[index] + self.durations[index] + margin:
            index += 1
        self.heard = index
        start, length = self.starts.get(index), self.durations.get(index)
        if start is None or not length:
            self.partial = 0.0
            return
        self.partial = min(max((now - start) / length, 0.0), 1.0)

    def heard_text(self) -> str:
        """The sentences heard, then the heard share of the interrupted one, marked ``…``."""
        parts = self.texts[: self.heard]
        if self.heard < len(self.texts) and self.partial > 0:
            words = self.texts[self.heard].split()
            taken = words[: round(len(words) * self.partial)]
            if taken:
                parts = [*parts, " ".join(taken) + " …"]
        return " ".join(parts)
