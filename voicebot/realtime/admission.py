"""Admission control: how many calls, and how many turns in model work, one process takes.

Two cores cannot run eight Whisper decodes at once without every caller waiting longer. So a
turn's model work (STT → answer → first sentence of TTS) needs a slot; slots are granted
strictly first come, first served, from an explicit queue rather than the semaphore's wake-up
order. A turn that cannot get one within ``queue_timeout`` raises ``VoicebotError(code="busy")``
and the call says the pack's ``busy`` phrase instead of leaving dead air (issue 5).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from voicebot.errors import VoicebotError

__all__ = ["Admission"]


class Admission:
    """Process-wide limits: calls at once, and turns doing model work at once."""

    def __init__(self, *, max_calls: int, slots: int, queue_timeout: float) -> None:
        if max_calls < 1 or slots < 1:
            raise ValueError("max_calls and slots must be >= 1")
        self.max_calls = max_calls
        self.slots = slots
        self.queue_timeout = queue_timeout
        self.calls = 0
        self.in_use = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    @property
    def free(self) -> bool:
        """A slot is free right now, with nobody queued before us."""
        return self.in_use < self.slots and not self._waiters

    def enter_call(self) -> bool:
        if self.calls >= self.max_calls:
            return False
        self.calls += 1
        return True

    def leave_call(self) -> None:
        self.calls = max(self.calls - 1, 0)

    async def acquire(self) -> None:
        if self.free:
            self.in_use += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.queue_timeout):
                await waiter
        except TimeoutError:
            self._abandon(waiter)
            raise VoicebotError("no model slot in time", code="busy") from None
        except BaseException:
            self._abandon(waiter)
            raise

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        if waiter.done() and not waiter.cancelled():
            self.release()  # granted just as we gave up: pass the slot on
        else:
            with contextlib.suppress(ValueError):
                self._waiters.remove(waiter)

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next in line
                return
        self.in_use = max(self.in_use - 1, 0)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        await self.acquire()
        try:
            yield
        finally:
            self.release()
