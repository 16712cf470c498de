"""The inbox and outbox workers: accepted messages → answers → provider sends.

Both resume from SQLite on start-up, so a crash loses nothing: an inbound item stays
'pending' until its replies are in the outbox (one transaction, ``Store.finish``); an outbox
item stays 'pending' until the provider accepted it. Messages of one user are answered one
at a time, in arrival order (protocols.md §7, "Order"). Sends that fail with 429/5xx/timeouts
are retried with exponential backoff and jitter, then dead-lettered in the audit log.

Answering and sending have separate limits (``channel_concurrency`` answers, ``SENDS``
provider calls): a burst of new questions never holds back a reply that is already
computed, so replies go out while the burst is still being answered (issue #4).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from collections.abc import Awaitable, Callable

from voicebot.channels.base import Inbound, Outbound, SendError
from voicebot.channels.respond import Responder
from voicebot.channels.runtime import Runtime
from voicebot.drain import until
from voicebot.services import Services
from voicebot.store import AuditRecord, InboxItem, OutboxItem

__all__ = ["SENDS", "Delivery", "backoff"]

_LOGGER = logging.getLogger(__name__)
_STOP_WAIT = 2.0  # seconds the drain waits for the inbox loop to notice its cancel
_IDLE = 5.0  # seconds between scans when nothing wakes the loop
_INBOX_ATTEMPTS = 3  # processing attempts (e.g. the disk failed) before an item is parked
_MAINTENANCE = 600.0
_SPOOL_RETRY = 1.0  # seconds between replays while the store still refuses writes
SENDS = 8  # provider calls in flight at once: I/O-bound, cheap, and they finish a turn


def backoff(attempt: int, base: float, *, cap: float = 300.0) -> float:
    """``base·2^(attempt-1)`` capped, with "equal jitter" so retries of a burst spread out."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return float(delay / 2 + random.uniform(0, delay / 2))


class Delivery:
    """Runs the inbox loop (answering) and the outbox loop (sending) over ``rt.store``.

    In scale mode a web node runs only the outbox (``inbox=False``): workers answer.
    ``sends`` bounds the provider calls in flight, apart from the answering limit.
    """

    def __init__(
        self, rt: Runtime, services: Services, *, inbox: bool = True, sends: int = SENDS
    ) -> None:
        self.rt = rt
        self._with_inbox = inbox
        self.responder = Responder(rt, services)
        self._inbox_event = asyncio.Event()
        self._outbox_event = asyncio.Event()
        self._busy: set[str] = set()
        self._sending: set[str] = set()
        self._limit = asyncio.Semaphore(rt.settings.channel_concurrency)  # answering
        self._send_limit = asyncio.Semaphore(sends)  # never shared with answering
        # One lock per user while any of their messages is in flight (weak: no leak).
        self._user_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._spool_event = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: dict[str, asyncio.Task[None]] = {}
        self._draining = False

    def start(self) -> None:
        self.rt.wake_inbox = self._inbox_event.set
        self.rt.wake_outbox = self._outbox_event.set
        self.rt.wake_spool = self._spool_event.set
        loops: dict[str, Callable[[], Awaitable[None]]] = {
            "spool": self._spool_loop,
            "inbox": self._inbox_loop,
            "outbox": self._outbox_loop,
            "maintenance": self._maintenance_loop,
        }
        if self.rt.spool is None:
            del loops["spool"]
        if not self._with_inbox:
            del loops["inbox"]
        for name, loop in loops.items():
            self._loops[name] = asyncio.create_task(self._forever(name, loop), name=name)

    async def close(self) -> None:
        self.rt.wake_inbox = self.rt.wake_outbox = self.rt.wake_spool = lambda: None
        tasks = [*self._loops.values(), *self._tasks]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    @property
    def busy(self) -> int:
        """Inbound messages being answered right now."""
        return len(self._busy)

    async def drain(self, timeout: float) -> int:
        """Stop taking new messages, let the ones in flight finish (up to ``timeout``).

        Returns how many were still unfinished; they stay pending and are retaken elsewhere.
        """
        deadline = asyncio.get_running_loop().time() + timeout
        self._draining = True
        inbox = self._loops.pop("inbox", None)
        if inbox is not None:
            inbox.cancel()
            # Bounded: a cancel that lands inside a Redis blocking read can be swallowed (seen:
            # a worker stuck after "draining: 0 turn(s)" until SIGKILL). The loop takes no new
            # turns once cancelled either way, so the drain goes on without it.
            done, _ = await asyncio.wait({inbox}, timeout=min(timeout, _STOP_WAIT))
            if not done:
                _LOGGER.warning("the inbox loop did not stop within %.0f s", _STOP_WAIT)
        await until(lambda: not self._busy, deadline)
        return len(self._busy)

    async def _forever(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Keep a worker loop alive through unexpected errors (a full disk, a locked DB)."""
        while True:
            try:
                await loop()
                return  # a loop returns only when told to stop (the inbox on drain)
            except asyncio.CancelledError:
                raise
            except Exception:
                _LOGGER.exception("%s worker failed; restarting in 1 s", name)
                await asyncio.sleep(1.0)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception:  # e.g. the store went away while recording the outcome
                _LOGGER.exception("delivery task failed; its item is retried later")

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    async def _wait(event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
        event.clear()

    # -- spool: inbound messages the store could not take in time -------------------------

    async def _spool_loop(self) -> None:
        """Replay the spool into the inbox at start-up and whenever a webhook spooled."""
        spool = self.rt.spool
        assert spool is not None
        while True:
            self._spool_event.clear()
            if spool.pending:
                try:
                    fresh = await spool.replay(self.rt.store)
                except Exception as err:  # still locked: the records stay, try again soon
                    _LOGGER.warning("spool replay waits for the store (%s)", err)
                    await asyncio.sleep(_SPOOL_RETRY)
                    continue
                _LOGGER.info("spool replayed: %d message(s) new in the inbox", fresh)
                if fresh:
                    self._inbox_event.set()
            await self._wait(self._spool_event, _IDLE)

    # -- inbox -----------------------------------------------------------------------------

    async def _inbox_loop(self) -> None:
        while not self._draining:
            self._inbox_event.clear()
            for item in await self.rt.store.pending_inbox(limit=100):
                if self._draining:
                    break  # taken but not started: stays pending, retaken elsewhere
                if item.id not in self._busy:
                    self._busy.add(item.id)
                    self._spawn(self._process(item))
            await self.rt.store.count_pending()
            await self._wait(self._inbox_event, self.rt.store.inbox_idle)

    async def _process(self, item: InboxItem) -> None:
        try:
            user = self.rt.store.user_key(Inbound.from_json(item.payload).phone)
            lock = self._user_locks.setdefault(user, asyncio.Lock())  # strong ref while in use
            async with lock, self._limit:
                reply = await self.responder.respond(item)
                await self.rt.store.finish(item.id, reply.messages, reply.audit)
            self._outbox_event.set()
        except asyncio.CancelledError:
            raise  # stays pending: answered after the restart
        except Exception:
            _LOGGER.exception("inbox item could not be answered")
            give_up = item.attempts + 1 >= _INBOX_ATTEMPTS
            with contextlib.suppress(Exception):
                await self.rt.store.inbox_failed(item.id, give_up=give_up)
            self.rt.metrics.inc("voicebot_errors_total", code="channel-inbox-failed")
        finally:
            self._busy.discard(item.id)
        self._inbox_event.set()

    # -- outbox ----------------------------------------------------------------------------

    async def _outbox_loop(self) -> None:
        while True:
            self._outbox_event.clear()
            for item in await self.rt.store.due_outbox(limit=50):
                if item.id not in self._sending:
                    self._sending.add(item.id)
                    self._spawn(self._send(item))
            await self.rt.store.count_pending()
            upcoming = await self.rt.store.next_outbox_time()
            timeout = _IDLE
            if upcoming is not None:
                timeout = min(_IDLE, max(0.01, upcoming - time.time()))
            await self._wait(self._outbox_event, timeout)

    async def _send(self, item: OutboxItem) -> None:
        store, metrics = self.rt.store, self.rt.metrics
        message = Outbound.from_json(item.payload)
        sender = self.rt.senders.get(item.channel)
        attempt = item.attempts + 1
        try:
            async with self._send_limit:
                if sender is None:
                    raise SendError(
                        f"{item.channel} is not configured",
                        retryable=False,
                        code="channel-not-mounted",
                    )
                ref = await sender.send(message, ref=item.provider_ref)
            await store.outbox_sent(item.id, ref)
            metrics.inc("voicebot_outbound_total", channel=item.channel, outcome="sent")
        except asyncio.CancelledError:
            raise
        except Exception as err:
            code = err.code if isinstance(err, SendError) else "channel-send-retry"
            retryable = err.retryable if isinstance(err, SendError) else True
            ref = err.ref if isinstance(err, SendError) else ""
            metrics.inc("voicebot_errors_total", code=code)
            if retryable and attempt < self.rt.settings.outbox_max_attempts:
                delay = backoff(attempt, self.rt.settings.outbox_backoff_seconds)
                _LOGGER.warning(
                    "send %s failed (%s: %s); retry %d in %.1fs",
                    item.parent,
                    code,
                    err,
                    attempt,
                    delay,
                )
                await store.outbox_retry(
                    item.id, delay=delay, error=str(err)[:500], provider_ref=ref
                )
            else:
                _LOGGER.error(
                    "send %s dead-lettered after %d attempts (%s)", item.parent, attempt, code
                )
                metrics.inc("voicebot_outbound_total", channel=item.channel, outcome="dead")
                audit = AuditRecord(
                    turn=item.parent,
                    channel=item.channel,
                    user=message.user,
                    lang="",
                    question="",
                    outcome=f"dead-letter:{code}",
                )
                await store.outbox_dead(item.id, error=str(err)[:500], audit=audit)
        finally:
            self._sending.discard(item.id)
            self._outbox_event.set()

    # -- retention -------------------------------------------------------------------------

    async def _maintenance_loop(self) -> None:
        while True:
            purged = await self.rt.store.purge(audit_days=self.rt.settings.audit_retention_days)
            purged["media"] = await self.rt.media.purge_expired()
            if any(purged.values()):
                _LOGGER.info("retention purge: %s", purged)
            await asyncio.sleep(_MAINTENANCE)
