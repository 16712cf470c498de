"""Engine Protocols and the runner that keeps blocking model work off the event loop."""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from voicebot.messages import Audio, Transcript
from voicebot.priority import current

__all__ = ["Blocking", "Glossary", "Synthesizer", "Transcriber", "Translator"]

T = TypeVar("T")


class Blocking:
    """Runs blocking calls in threads, at most ``limit`` at once.

    The limit matches the engine's real parallelism (CTranslate2 ``num_workers``, 1 for
    Piper whose phonemizer is global), so extra callers queue instead of thrashing 2 cores.
    Waiters are admitted by (``voicebot.priority.current()``, arrival): a live call's model
    work goes before queued WhatsApp turns, and with no priority set anywhere the order is
    first come, first served.
    """

    def __init__(self, limit: int = 1) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self._running = 0
        self._queue: list[tuple[int, int, asyncio.Future[None]]] = []  # a heap
        self._order = itertools.count()

    @property
    def waiting(self) -> int:
        return len(self._queue)

    async def run(self, fn: Callable[..., T], /, *args: object, **kwargs: object) -> T:
        await self._acquire()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, functools.partial(fn, *args, **kwargs))
        try:
            result = await asyncio.shield(future)
        except asyncio.CancelledError:
            # The thread cannot be stopped: keep its slot until it really ends, so a hang-up
            # never lets more model calls run at once than the cap allows.
            future.add_done_callback(lambda _f: self._release())
            raise
        except BaseException:
            self._release()
            raise
        self._release()
        return result

    async def _acquire(self) -> None:
        if self._running < self.limit and not self._queue:
            self._running += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (int(current()), next(self._order), waiter)
        heapq.heappush(self._queue, entry)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # granted just as the caller gave up: pass the slot on
            else:
                self._queue.remove(entry)
                heapq.heapify(self._queue)
            raise

    def _release(self) -> None:
        """The slot passes straight to the best waiter, or is freed."""
        while self._queue:
            _, _, waiter = heapq.heappop(self._queue)
            if not waiter.done():
                waiter.set_result(None)
                return
        self._running -= 1


@dataclass(frozen=True, slots=True)
class Glossary:
    """Terms that must survive machine translation unchanged (scheme names, numbers, helplines)."""

    terms: tuple[str, ...] = ()


class Transcriber(Protocol):
    """Speech to text. ``language`` comes from the caller's pack, never auto-detected; so do
    the decoding options (``None``: the engine's default), which an engine may ignore."""

    name: str

    def supports(self, language: str) -> bool: ...

    async def transcribe(
        self,
        audio: Audio,
        *,
        language: str,
        prompt: str | None = None,
        beam_size: int | None = None,
        context_seconds: float | None = None,
    ) -> Transcript: ...


class Translator(Protocol):
    """Text to text between pack translation codes; identity when source == target."""

    name: str

    def supports(self, source: str, target: str) -> bool: ...

    async def translate(
        self, text: str, *, source: str, target: str, glossary: Glossary = Glossary()
    ) -> str: ...


class Synthesizer(Protocol):
    """Text to speech for one voice spec such as ``piper:en_US-joe-medium`` or ``espeak-ng:hi``."""

    name: str

    def supports(self, voice: str) -> bool: ...

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> Audio: ...
