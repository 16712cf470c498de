"""The channels' part of a graceful stop (voicebot/drain.py): turns in flight finish, the
replies due go out, and no provider call is cut half-way.

A send cut off after the provider took the message would be sent again by the next process
(the outbox is at-least-once), so every sender is a ``TrackedSender`` that counts its calls in
flight and the drain waits for them too. In embedded mode a send in flight is also visible as
an outbox item that is due; in scale mode it is leased in Redis, and only the count shows it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from voicebot.channels.base import Outbound, Sender
from voicebot.channels.delivery import Delivery
from voicebot.channels.runtime import Runtime
from voicebot.drain import until

__all__ = ["TrackedSender", "drain_background"]

_LOGGER = logging.getLogger(__name__)


class TrackedSender:
    """A ``Sender`` that counts its sends in flight."""

    def __init__(self, inner: Sender) -> None:
        self.inner = inner
        self.in_flight = 0

    async def send(self, message: Outbound, *, ref: str = "") -> str:
        self.in_flight += 1
        try:
            return await self.inner.send(message, ref=ref)
        finally:
            self.in_flight -= 1


def _sending(rt: Runtime) -> int:
    return sum(s.in_flight for s in rt.senders.values() if isinstance(s, TrackedSender))


async def drain_background(rt: Runtime, deliveries: Sequence[Delivery], deadline: float) -> None:
    """Finish the messages and voice turns in flight, then send the replies due, by
    ``deadline`` (loop clock). Messages not started stay in the inbox for the next start."""
    loop = asyncio.get_running_loop()
    for delivery in deliveries:
        unanswered = await delivery.drain(max(deadline - loop.time(), 0.0))
        if unanswered:
            _LOGGER.warning("%d message(s) unanswered: they stay in the inbox", unanswered)
    if not await until(lambda: rt.jobs.running() == 0, deadline):
        _LOGGER.warning("%d voice turn(s) unfinished at the deadline", rt.jobs.running())
    while True:
        left = deadline - loop.time()
        due = await rt.store.next_outbox_time()
        if not _sending(rt) and (due is None or due > time.time() + left):
            return  # nothing in flight, nothing that comes due before the deadline
        if left <= 0:
            _LOGGER.warning("replies still due at the deadline are sent after the restart")
            return
        rt.wake_outbox()
        await asyncio.sleep(min(0.05, left))
