"""The inbox's fallback: an fsync'd append-only file for messages the store cannot take in time.

Rule: no accepted message is ever lost — it is persisted before the webhook acknowledges it,
and answered after a restart. Normally ``Store.accept`` persists it. When SQLite stays
write-locked past ``ACCEPT_DEADLINE`` (another process holds the lock, the disk stalls),
``accept_inbound`` appends the message to ``<data_dir>/inbox-spool.jsonl`` and fsyncs it
instead, so the webhook still answers 200 in time: Twilio does not reliably redeliver a
WhatsApp webhook that failed (protocols.md §3.6), and Meta retries but a 5xx for every
message of a long lock only moves the problem.

While the spool holds messages, new ones join it behind them (a user's messages keep their
order); the delivery worker replays it into the inbox as soon as the store takes writes
again, and at start-up. Replay goes through ``Store.accept``, which dedupes on the message
id: a message spooled while its slow first write did land after all, or redelivered by the
provider, is answered once. A record is dropped from the spool only after the store has it.
If the spool cannot be written either (disk full), the webhook answers 503: the honest
answer when nothing could be persisted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web

from voicebot.state import StateStore

if TYPE_CHECKING:
    from voicebot.channels.runtime import Runtime

__all__ = ["ACCEPT_DEADLINE", "SPOOL_FILE", "Spool", "Spooled", "accept_inbound"]

_LOGGER = logging.getLogger(__name__)
SPOOL_FILE = "inbox-spool.jsonl"
# How long a webhook waits for the inbox write before spooling. Well inside Twilio's 15 s
# (§1.2) and the lower guesses for Meta's (§5.2); longer than a normal write under load.
ACCEPT_DEADLINE = 2.0


@dataclass(frozen=True, slots=True)
class Spooled:
    """One message as ``Store.accept`` takes it."""

    item_id: str
    channel: str
    payload: dict[str, Any]
    ttl: float


class Spool:
    """Append, read back and drop records of one JSON-lines file; thread-safe, one process."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        # Left over by a previous process: new messages must queue behind it (a stat at start).
        self._pending = path.is_file() and path.stat().st_size > 0

    @property
    def pending(self) -> bool:
        """True while the file holds records that are not in the store yet."""
        return self._pending

    async def append(self, record: Spooled) -> None:
        """Write one record and fsync it; OSError (e.g. ENOSPC) when that failed."""
        line = json.dumps(asdict(record), ensure_ascii=False).encode("utf-8") + b"\n"
        await asyncio.to_thread(self._append, line)

    def _append(self, line: bytes) -> None:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                start = os.fstat(fd).st_size
                if start and os.pread(fd, 1, start - 1) != b"\n":
                    line = b"\n" + line  # a torn tail (crash mid-write) stays a line of its own
                try:
                    view = memoryview(line)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except OSError:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)  # no half record for the next one to follow
                    raise
            finally:
                os.close(fd)
            if created:
                _fsync_dir(self.path.parent)
            self._pending = True

    async def read(self) -> tuple[list[Spooled], int]:
        """The records in order, and the file offset they end at (for ``drop``)."""
        return await asyncio.to_thread(self._read)

    def _read(self) -> tuple[list[Spooled], int]:
        with self._lock:  # appends hold it too: a line without its newline is a torn write
            try:
                data = self.path.read_bytes()
            except FileNotFoundError:
                return [], 0
        records: list[Spooled] = []
        for raw in data.splitlines():
            try:
                records.append(Spooled(**json.loads(raw)))
            except (ValueError, TypeError):
                if raw.strip():  # torn by a crash mid-write: it was never acknowledged
                    _LOGGER.warning("skipping a damaged spool line (%d bytes)", len(raw))
        return records, len(data)

    async def drop(self, upto: int) -> None:
        """Forget the first ``upto`` bytes (records the store has now)."""
        await asyncio.to_thread(self._drop, upto)

    def _drop(self, upto: int) -> None:
        with self._lock:
            try:
                rest = self.path.read_bytes()[upto:]
            except FileNotFoundError:
                rest = b""
            if not rest and upto:
                with open(self.path, "r+b") as handle:
                    handle.truncate(0)
                    os.fsync(handle.fileno())
            elif rest:  # appended meanwhile: keep the tail, atomically
                tmp = self.path.with_suffix(".tmp")
                with open(tmp, "wb") as handle:
                    handle.write(rest)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, self.path)
                _fsync_dir(self.path.parent)
            self._pending = bool(rest)

    async def replay(self, store: StateStore) -> int:
        """Move every record into the store's inbox; returns how many were new there.

        Raises what the store raises (still locked): the records stay, replay again later.
        """
        records, upto = await self.read()
        fresh = 0
        for rec in records:
            if await store.accept(rec.item_id, rec.channel, rec.payload, ttl=rec.ttl):
                fresh += 1
        await self.drop(upto)
        return fresh


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def accept_inbound(
    rt: Runtime, item_id: str, channel: str, payload: dict[str, Any], *, ttl: float
) -> bool:
    """Persist an inbound message before its webhook is acknowledged (``Store.accept``).

    Returns False for a redelivery of a message the store already has. When the store does
    not take the write within ``ACCEPT_DEADLINE``, or fails, or older messages wait in the
    spool, the message is spooled instead (True: it is new as far as this webhook knows).
    Raises 503 when neither could persist it.
    """
    spool = rt.spool
    if spool is None:  # scale mode: Redis is the only durable store a web node has
        return await rt.store.accept(item_id, channel, payload, ttl=ttl)
    if not spool.pending:
        try:
            async with asyncio.timeout(ACCEPT_DEADLINE):
                return await rt.store.accept(item_id, channel, payload, ttl=ttl)
        except Exception as err:  # TimeoutError, sqlite3.OperationalError ("locked"), OSError
            _LOGGER.warning(
                "inbox write failed (%s: %s); spooling %s", type(err).__name__, err, channel
            )
    try:
        await spool.append(Spooled(item_id, channel, payload, ttl))
    except OSError as err:
        _LOGGER.error("inbox spool write failed too (%s); answering 503", err)
        rt.metrics.inc("voicebot_errors_total", code="inbox-spool-failed")
        raise web.HTTPServiceUnavailable(text="the message could not be stored") from err
    rt.metrics.inc("voicebot_errors_total", code="inbox-spooled")
    rt.wake_spool()
    return True
