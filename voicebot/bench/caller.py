"""One simulated Media Streams caller, driving a ``CallSession`` the way Twilio would.

The caller streams 20 ms μ-law frames in real time (silence when it has nothing to say) and
plays Twilio's side of the line: it takes the bot's frames, echoes each mark once the audio
before it has played, and notes every ``clear``. It hears the greeting, asks the question,
and ~1 s into each answer but the last asks it again over the bot (a barge-in), so one call
yields several reply latencies and barge-ins. What it reports beside the session's own
timings (``CallSession.timings``) is the same latency seen from the line, as a check.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from voicebot.realtime import SessionFactory

__all__ = ["GAP", "Question", "answered", "call"]

FRAME = 0.02  # one Media Streams frame: 20 ms of 8 kHz μ-law
SILENCE = b"\xff" * 160
GAP = 0.2  # a pause this long inside the bot's speech is audible dead air


@dataclass(frozen=True, slots=True)
class Question:
    """The spoken question as Media Streams frames, and which of them carry speech: the caller
    starts speaking in frame ``onset`` and stops at the end of frame ``end - 1``."""

    frames: list[bytes]
    seconds: float
    onset: int
    end: int

    @classmethod
    def from_ulaw(cls, ulaw: bytes) -> Question:
        from voicebot import audio

        frames = audio.ulaw_frames(ulaw)
        voiced = [
            i for i, frame in enumerate(frames) if _level_db(audio.ulaw_to_pcm16(frame)) > -30
        ]
        if not voiced:
            raise ValueError("the question has no frame louder than -30 dBFS")
        return cls(frames, len(frames) * FRAME, voiced[0], voiced[-1] + 1)


def _level_db(pcm: npt.NDArray[np.int16]) -> float:
    rms = float(np.sqrt(np.mean((pcm.astype(np.float32) / 32768.0) ** 2)))
    return 20 * math.log10(rms) if rms > 0 else -math.inf


class _Line:
    """Twilio's end of one Media Stream (the ``Outbound`` a session talks to)."""

    def __init__(self, echo_after: float = 0.1) -> None:
        self.session: Any = None
        self.frames: list[float] = []  # when each bot frame arrived
        self.clears: list[float] = []  # when each `clear` arrived
        self.hung_up = False
        self.echo_after = echo_after  # the pacer keeps at most ~0.1 s queued at Twilio
        self._tasks: set[asyncio.Task[Any]] = set()

    async def media(self, ulaw: bytes) -> None:
        self.frames.append(time.perf_counter())

    async def mark(self, name: str) -> None:
        asyncio.get_running_loop().call_later(self.echo_after, self._echo, name)

    def _echo(self, name: str) -> None:
        if self.session is not None:
            task = asyncio.ensure_future(self.session.mark(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def clear(self) -> None:
        self.clears.append(time.perf_counter())

    async def hangup(self) -> None:
        self.hung_up = True

    def after(self, moment: float) -> float | None:
        """When the first bot frame after ``moment`` arrived."""
        return next((t for t in self.frames if t > moment), None)

    def replied(self, moment: float) -> bool:
        return bool(self.frames) and self.frames[-1] > moment

    def gaps(self, start: float, end: float) -> list[float]:
        """Pauses over ``GAP`` between bot frames that arrived in [start, end)."""
        frames = [t for t in self.frames if start <= t < end]
        return [b - a for a, b in itertools.pairwise(frames) if b - a > GAP]


async def call(
    factory: SessionFactory,
    n: int,
    question: Question,
    *,
    asks: int,
    barge_after: float,
    listen: float,
    delay: float,
) -> dict[str, Any]:
    """One caller: the greeting, then ``asks`` questions, each but the first over the bot."""
    await asyncio.sleep(delay)
    line = _Line()
    from voicebot.realtime import CallInfo

    info = CallInfo(call_sid=f"CA{n:032x}", stream_sid=f"MZ{n:032x}", lang="en")
    session = factory.create(info, line)
    line.session = session
    start = time.perf_counter()
    ticks = itertools.count(1)

    async def send(frame: bytes) -> float:
        """Hand the session one frame at its real-time slot; when it was handed over."""
        wait = start + next(ticks) * FRAME - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        at = time.perf_counter()
        await session.audio(frame)
        return at

    async def quiet(limit: float, until: Callable[[], bool] = lambda: False) -> None:
        deadline = time.perf_counter() + limit
        while time.perf_counter() < deadline and not until():
            await send(SILENCE)

    line_reply: list[float] = []  # last voiced frame sent → first reply frame received
    line_clear: list[float | None] = []  # first voiced frame sent → `clear` (None: never came)
    windows: list[tuple[float, float]] = []  # when each reply played (for dead air)
    started = time.perf_counter()
    try:
        await session.start()
        await quiet(30, lambda: bool(line.frames) and time.perf_counter() - line.frames[-1] > 0.3)
        greeting_end = time.perf_counter()
        for k in range(asks):
            sent = [await send(frame) for frame in question.frames]
            onset, speech_end = sent[question.onset], sent[question.end - 1]
            if k:  # this question talked over the previous answer
                windows[-1] = (windows[-1][0], sent[0])
                cleared = [c - onset for c in line.clears if c > onset - 0.1]
                line_clear.append(cleared[0] if cleared else None)
            await quiet(15, partial(line.replied, speech_end))  # end of turn, then the answer
            first = line.after(speech_end)
            if first is None:
                break
            line_reply.append(first - speech_end)
            windows.append((first, math.inf))
            await quiet(barge_after if k < asks - 1 else listen)
    finally:
        await session.close()
    timings = list(session.timings)

    def session_timing(what: str) -> list[float]:
        return [round(s, 4) for kind, s in timings if kind == what]

    return {
        "asks": asks,
        "greeting_frames": sum(1 for t in line.frames if t < greeting_end),
        "greeting_gaps": len(line.gaps(start, greeting_end)),
        "line_greeting_s": round(line.frames[0] - started, 4) if line.frames else None,
        "greeting_latency_s": session_timing("greeting"),
        "reply_latency_s": session_timing("reply"),
        "clear_latency_s": session_timing("clear"),
        "line_reply_s": [round(s, 4) for s in line_reply],
        "line_clear_s": [None if s is None else round(s, 4) for s in line_clear],
        "reply_gaps": [round(g, 3) for a, b in windows for g in line.gaps(a, b)],
        "transcripts": list(session.transcripts),
        "clears": len(line.clears),
        "hung_up": line.hung_up,
    }


def answered(calls: Sequence[dict[str, Any]]) -> int:
    """Calls in which every question was transcribed and answered, every barge-in cleared."""
    return sum(
        1
        for c in calls
        if len(c["line_reply_s"]) == c["asks"] <= len(c["transcripts"])
        and all(s is not None for s in c["line_clear_s"])
    )
