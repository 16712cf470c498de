"""SQLite state (WAL) under ``data_dir``: users, memory, dedupe, inbox/outbox, audit, media, calls.

One connection per store, used from worker threads behind a lock, so the event loop never
waits on disk. Users are keyed by an HMAC-SHA256 of their phone number with a per-install
secret, so one phone is one user across calls and WhatsApp and no table holds a raw number
except where a reply must be addressed (inbox/outbox/calls, purged after use).

Durability (protocols.md §3.6, §5.2, §7): an inbound message is written to the inbox in the
same transaction that claims its dedupe key, before the webhook answers 200; ``finish`` writes
its replies to the outbox and marks it done atomically, so a crash at any point either
re-runs the message (no reply was queued) or leaves exactly one queued reply. When the write
cannot get the lock in time, ``channels.spool`` persists the message instead and replays it
through ``accept`` later.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from voicebot.engines.base import Blocking
from voicebot.logs import redact
from voicebot.messages import Exchange

__all__ = ["AuditRecord", "InboxItem", "MediaRecord", "OutboxItem", "Store"]

T = TypeVar("T")
DAY = 86_400.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user TEXT PRIMARY KEY, lang TEXT, scheme TEXT, created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS exchanges (
    id INTEGER PRIMARY KEY AUTOINCREMENT, user TEXT NOT NULL, question TEXT NOT NULL,
    answer TEXT NOT NULL, scheme TEXT, ts REAL NOT NULL);
CREATE INDEX IF NOT EXISTS exchanges_user ON exchanges(user, id);
CREATE TABLE IF NOT EXISTS dedupe (key TEXT PRIMARY KEY, value TEXT, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS inbox (
    id TEXT PRIMARY KEY, channel TEXT NOT NULL, payload TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS inbox_status ON inbox(status, created);
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY, parent TEXT NOT NULL, seq INTEGER NOT NULL, channel TEXT NOT NULL,
    payload TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL, last_error TEXT, provider_ref TEXT NOT NULL DEFAULT '',
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(status, next_attempt);
CREATE INDEX IF NOT EXISTS outbox_parent ON outbox(parent, seq);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, turn TEXT NOT NULL,
    channel TEXT NOT NULL, user TEXT NOT NULL, lang TEXT NOT NULL, question TEXT NOT NULL,
    sources TEXT NOT NULL, engines TEXT NOT NULL, latency_ms REAL NOT NULL, outcome TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_ts ON audit(ts);
CREATE TABLE IF NOT EXISTS media (
    token TEXT PRIMARY KEY, path TEXT NOT NULL, content_type TEXT NOT NULL,
    expires REAL NOT NULL, owner TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS media_owner ON media(owner);
CREATE TABLE IF NOT EXISTS calls (
    call TEXT PRIMARY KEY, user TEXT NOT NULL, lang TEXT, caller TEXT NOT NULL,
    callee TEXT NOT NULL, last TEXT, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS parked (
    call TEXT NOT NULL, turn TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (call, turn));
"""


@dataclass(frozen=True, slots=True)
class InboxItem:
    id: str
    channel: str
    payload: dict[str, Any]
    attempts: int
    created: float


@dataclass(frozen=True, slots=True)
class OutboxItem:
    """One reply to send; ``parent`` groups the replies to one inbound, sent in ``seq`` order."""

    id: str
    parent: str
    seq: int
    channel: str
    payload: dict[str, Any]
    attempts: int = 0
    provider_ref: str = ""


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who asked what (hashed user, redacted question), which sources and engines answered."""

    turn: str
    channel: str
    user: str
    lang: str
    question: str
    outcome: str
    latency_ms: float = 0.0
    sources: tuple[str, ...] = ()
    engines: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MediaRecord:
    token: str
    path: str
    content_type: str
    expires: float
    owner: str


class Store:
    """All persistent state. Every public method is async and runs its SQL in a thread."""

    def __init__(self, conn: sqlite3.Connection, secret: bytes, *, turns: int = 6) -> None:
        self._conn = conn
        self._secret = secret
        self._turns = turns
        self._lock = threading.Lock()
        self._blocking = Blocking(limit=1)  # one connection: serialise instead of contending
        self.pending = (0, 0)  # (inbox, outbox) as of the last count; read by /metrics gauges
        self.inbox_idle = 5.0  # the inbox loop rescans this often when nothing wakes it

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    async def open(cls, data_dir: Path) -> Store:
        return await asyncio.to_thread(cls._open_sync, Path(data_dir))

    @classmethod
    def _open_sync(cls, data_dir: Path) -> Store:
        data_dir.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            data_dir / "voicebot.sqlite3", check_same_thread=False, isolation_level=None
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        return cls(conn, _install_secret(data_dir))

    async def close(self) -> None:
        await self._run(self._conn.close)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock:
                return fn(*args)

        return await self._blocking.run(locked)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    # -- users and memory (implements voicebot.memory.Memory) --------------------------------

    def user_key(self, phone: str) -> str:
        """Stable pseudonymous id for a phone number (E.164), the same on every channel."""
        return hmac.new(self._secret, phone.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    async def touch_user(self, user: str) -> bool:
        """Create the user if unknown; True when this is their first contact."""

        def run() -> bool:
            now = time.time()
            cur = self._conn.execute(
                "INSERT INTO users(user, created, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(user) DO NOTHING",
                (user, now, now),
            )
            return cur.rowcount == 1

        return await self._run(run)

    async def language(self, user: str) -> str | None:
        def run() -> str | None:
            row = self._conn.execute("SELECT lang FROM users WHERE user=?", (user,)).fetchone()
            return row[0] if row and row[0] else None

        return await self._run(run)

    async def set_language(self, user: str, lang: str) -> None:
        def run() -> None:
            now = time.time()
            self._conn.execute(
                "INSERT INTO users(user, lang, created, updated) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(user) DO UPDATE SET lang=excluded.lang, updated=excluded.updated",
                (user, lang, now, now),
            )

        await self._run(run)

    async def history(self, conversation: str) -> list[Exchange]:
        def run() -> list[Exchange]:
            rows = self._conn.execute(
                "SELECT question, answer, scheme FROM exchanges WHERE user=? "
                "ORDER BY id DESC LIMIT ?",
                (conversation, self._turns),
            ).fetchall()
            return [Exchange(question=q, answer=a, scheme=s) for q, a, s in reversed(rows)]

        return await self._run(run)

    async def remember(self, conversation: str, exchange: Exchange) -> None:
        def run() -> None:
            now = time.time()
            with self._tx() as db:
                db.execute(
                    "INSERT INTO exchanges(user, question, answer, scheme, ts) VALUES (?,?,?,?,?)",
                    (
                        conversation,
                        redact(exchange.question),
                        exchange.answer,
                        exchange.scheme,
                        now,
                    ),
                )
                db.execute(
                    "DELETE FROM exchanges WHERE user=? AND id NOT IN "
                    "(SELECT id FROM exchanges WHERE user=? ORDER BY id DESC LIMIT ?)",
                    (conversation, conversation, self._turns),
                )
                db.execute(
                    "INSERT INTO users(user, scheme, created, updated) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(user) DO UPDATE SET "
                    "scheme=COALESCE(excluded.scheme, users.scheme), updated=excluded.updated",
                    (conversation, exchange.scheme, now, now),
                )

        await self._run(run)

    # -- dedupe ----------------------------------------------------------------------------

    async def claim(self, key: str, *, ttl: float, value: str | None = None) -> bool:
        """Atomically claim ``key``; False when it was already claimed and has not expired."""

        def run() -> bool:
            now = time.time()
            with self._tx() as db:
                db.execute("DELETE FROM dedupe WHERE key=? AND expires<?", (key, now))
                cur = db.execute(
                    "INSERT INTO dedupe(key, value, expires) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO NOTHING",
                    (key, value, now + ttl),
                )
                return cur.rowcount == 1

        return await self._run(run)

    async def remembered(self, key: str) -> str | None:
        """The value stored with a claimed key (e.g. the TwiML answered the first time)."""

        def run() -> str | None:
            row = self._conn.execute("SELECT value FROM dedupe WHERE key=?", (key,)).fetchone()
            return row[0] if row else None

        return await self._run(run)

    async def set_remembered(self, key: str, value: str) -> None:
        await self._run(
            lambda: self._conn.execute("UPDATE dedupe SET value=? WHERE key=?", (value, key))
        )

    # -- inbox -----------------------------------------------------------------------------

    async def accept(
        self, item_id: str, channel: str, payload: dict[str, Any], *, ttl: float
    ) -> bool:
        """Claim the message id and persist the message in one transaction.

        Returns False for a redelivery: the caller acknowledges it without processing.
        """

        def run() -> bool:
            now = time.time()
            with self._tx() as db:
                db.execute("DELETE FROM dedupe WHERE key=? AND expires<?", (item_id, now))
                cur = db.execute(
                    "INSERT INTO dedupe(key, value, expires) VALUES (?, 'inbox', ?) "
                    "ON CONFLICT(key) DO NOTHING",
                    (item_id, now + ttl),
                )
                if cur.rowcount != 1:
                    return False
                cur = db.execute(
                    "INSERT INTO inbox(id, channel, payload, status, created, updated) "
                    "VALUES (?, ?, ?, 'pending', ?, ?) ON CONFLICT(id) DO NOTHING",
                    (item_id, channel, json.dumps(payload), now, now),
                )
                return cur.rowcount == 1  # 0: answered before its dedupe key expired

        return await self._run(run)

    async def pending_inbox(self, limit: int = 50) -> list[InboxItem]:
        def run() -> list[InboxItem]:
            rows = self._conn.execute(
                "SELECT id, channel, payload, attempts, created FROM inbox "
                "WHERE status='pending' ORDER BY created LIMIT ?",
                (limit,),
            ).fetchall()
            return [InboxItem(i, c, json.loads(p), a, t) for i, c, p, a, t in rows]

        return await self._run(run)

    async def finish(
        self, item_id: str, replies: Sequence[OutboxItem], audit: AuditRecord | None = None
    ) -> None:
        """Queue the replies, log the turn and mark the inbound done — all or nothing."""

        def run() -> None:
            now = time.time()
            with self._tx() as db:
                self._insert_outbox(db, replies, now)
                if audit is not None:
                    self._insert_audit(db, audit, now)
                db.execute("UPDATE inbox SET status='done', updated=? WHERE id=?", (now, item_id))

        await self._run(run)

    async def inbox_failed(self, item_id: str, *, give_up: bool) -> int:
        """Count a failed processing attempt; ``give_up`` parks it as 'failed'."""

        def run() -> int:
            status = "failed" if give_up else "pending"
            self._conn.execute(
                "UPDATE inbox SET attempts=attempts+1, status=?, updated=? WHERE id=?",
                (status, time.time(), item_id),
            )
            row = self._conn.execute("SELECT attempts FROM inbox WHERE id=?", (item_id,))
            found = row.fetchone()
            return int(found[0]) if found else 0

        return await self._run(run)

    # -- outbox ----------------------------------------------------------------------------

    @staticmethod
    def _insert_outbox(db: sqlite3.Connection, items: Sequence[OutboxItem], now: float) -> None:
        db.executemany(
            "INSERT INTO outbox(id, parent, seq, channel, payload, status, next_attempt, "
            "created, updated) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?) "
            "ON CONFLICT(id) DO NOTHING",
            [
                (i.id, i.parent, i.seq, i.channel, json.dumps(i.payload), now, now, now)
                for i in items
            ],
        )

    async def enqueue(self, items: Sequence[OutboxItem]) -> None:
        def run() -> None:
            with self._tx() as db:
                self._insert_outbox(db, items, time.time())

        await self._run(run)

    async def due_outbox(self, limit: int = 20) -> list[OutboxItem]:
        """Pending replies whose time has come and whose earlier siblings are out."""

        def run() -> list[OutboxItem]:
            rows = self._conn.execute(
                "SELECT id, parent, seq, channel, payload, attempts, provider_ref FROM outbox o "
                "WHERE status='pending' AND next_attempt<=? AND NOT EXISTS ("
                " SELECT 1 FROM outbox p WHERE p.parent=o.parent AND p.seq<o.seq"
                " AND p.status='pending') ORDER BY created, seq LIMIT ?",
                (time.time(), limit),
            ).fetchall()
            return [OutboxItem(i, p, s, c, json.loads(d), a, r) for i, p, s, c, d, a, r in rows]

        return await self._run(run)

    async def next_outbox_time(self) -> float | None:
        def run() -> float | None:
            row = self._conn.execute(
                "SELECT MIN(next_attempt) FROM outbox o WHERE status='pending' AND NOT EXISTS ("
                " SELECT 1 FROM outbox p WHERE p.parent=o.parent AND p.seq<o.seq"
                " AND p.status='pending')"
            ).fetchone()
            return float(row[0]) if row and row[0] is not None else None

        return await self._run(run)

    async def outbox_sent(self, item_id: str, provider_ref: str = "") -> None:
        await self._run(
            lambda: self._conn.execute(
                "UPDATE outbox SET status='sent', attempts=attempts+1, provider_ref=?, "
                "updated=? WHERE id=?",
                (provider_ref, time.time(), item_id),
            )
        )

    async def outbox_retry(
        self, item_id: str, *, delay: float, error: str, provider_ref: str = ""
    ) -> None:
        await self._run(
            lambda: self._conn.execute(
                "UPDATE outbox SET attempts=attempts+1, next_attempt=?, last_error=?, "
                "provider_ref=CASE WHEN ?='' THEN provider_ref ELSE ? END, updated=? WHERE id=?",
                (time.time() + delay, error, provider_ref, provider_ref, time.time(), item_id),
            )
        )

    async def outbox_dead(self, item_id: str, *, error: str, audit: AuditRecord) -> None:
        """Dead-letter: stop retrying and leave a trace in the audit log."""

        def run() -> None:
            now = time.time()
            with self._tx() as db:
                db.execute(
                    "UPDATE outbox SET status='dead', attempts=attempts+1, last_error=?, "
                    "updated=? WHERE id=?",
                    (error, now, item_id),
                )
                self._insert_audit(db, audit, now)

        await self._run(run)

    async def outbox(self, status: str | None = None) -> list[tuple[str, str, int]]:
        """(id, status, attempts) of outbox rows, oldest first (for operators and tests)."""

        def run() -> list[tuple[str, str, int]]:
            sql = "SELECT id, status, attempts FROM outbox"
            args: tuple[str, ...] = ()
            if status is not None:
                sql, args = sql + " WHERE status=?", (status,)
            return [
                (str(a), str(b), int(c))
                for a, b, c in self._conn.execute(sql + " ORDER BY created, seq", args)
            ]

        return await self._run(run)

    async def count_pending(self) -> tuple[int, int]:
        def run() -> tuple[int, int]:
            inbox = self._conn.execute("SELECT COUNT(*) FROM inbox WHERE status='pending'")
            outbox = self._conn.execute("SELECT COUNT(*) FROM outbox WHERE status='pending'")
            return int(inbox.fetchone()[0]), int(outbox.fetchone()[0])

        self.pending = await self._run(run)
        return self.pending

    # -- audit -----------------------------------------------------------------------------

    @staticmethod
    def _insert_audit(db: sqlite3.Connection, rec: AuditRecord, now: float) -> None:
        db.execute(
            "INSERT INTO audit(ts, turn, channel, user, lang, question, sources, engines, "
            "latency_ms, outcome) VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                now,
                rec.turn,
                rec.channel,
                rec.user,
                rec.lang,
                redact(rec.question),
                json.dumps(list(rec.sources)),
                json.dumps(rec.engines, sort_keys=True),
                round(rec.latency_ms, 1),
                rec.outcome,
            ),
        )

    async def audit(self, record: AuditRecord) -> None:
        await self._run(lambda: self._insert_audit(self._conn, record, time.time()))

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            cur = self._conn.execute(
                "SELECT ts, turn, channel, user, lang, question, sources, engines, latency_ms, "
                "outcome FROM audit ORDER BY id DESC LIMIT ?",
                (limit,),
            )
            names = [d[0] for d in cur.description]
            out = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
            for row in out:
                row["sources"] = json.loads(row["sources"])
                row["engines"] = json.loads(row["engines"])
            return out

        return await self._run(run)

    # -- media -----------------------------------------------------------------------------

    async def add_media(self, rec: MediaRecord) -> None:
        await self._run(
            lambda: self._conn.execute(
                "INSERT INTO media(token, path, content_type, expires, owner) VALUES (?,?,?,?,?)",
                (rec.token, rec.path, rec.content_type, rec.expires, rec.owner),
            )
        )

    async def media(self, token: str) -> MediaRecord | None:
        def run() -> MediaRecord | None:
            row = self._conn.execute(
                "SELECT token, path, content_type, expires, owner FROM media WHERE token=?",
                (token,),
            ).fetchone()
            return MediaRecord(*row) if row else None

        return await self._run(run)

    async def drop_media(self, owner: str) -> list[str]:
        """Forget the media of ``owner`` (a call); returns the file paths to delete."""
        return await self._drop_media("owner=?", owner)

    async def drop_expired_media(self, now: float) -> list[str]:
        return await self._drop_media("expires<?", now)

    async def _drop_media(self, where: str, arg: str | float) -> list[str]:
        def run() -> list[str]:
            with self._tx() as db:
                paths = [r[0] for r in db.execute(f"SELECT path FROM media WHERE {where}", (arg,))]
                db.execute(f"DELETE FROM media WHERE {where}", (arg,))
            return paths

        return await self._run(run)

    # -- calls and parked voice replies ----------------------------------------------------

    async def put_call(
        self, call: str, *, user: str, lang: str | None, caller: str, callee: str
    ) -> None:
        await self._run(
            lambda: self._conn.execute(
                "INSERT INTO calls(call, user, lang, caller, callee, updated) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(call) DO UPDATE SET lang=COALESCE(excluded.lang, calls.lang), "
                "updated=excluded.updated",
                (call, user, lang, caller, callee, time.time()),
            )
        )

    async def call(self, call: str) -> dict[str, Any] | None:
        def run() -> dict[str, Any] | None:
            row = self._conn.execute(
                "SELECT user, lang, caller, callee, last FROM calls WHERE call=?", (call,)
            ).fetchone()
            if row is None:
                return None
            user, lang, caller, callee, last = row
            return {
                "user": user,
                "lang": lang,
                "caller": caller,
                "callee": callee,
                "last": json.loads(last) if last else None,
            }

        return await self._run(run)

    async def set_call_language(self, call: str, lang: str) -> None:
        await self._run(
            lambda: self._conn.execute(
                "UPDATE calls SET lang=?, updated=? WHERE call=?", (lang, time.time(), call)
            )
        )

    async def set_call_last(self, call: str, last: dict[str, Any]) -> None:
        await self._run(
            lambda: self._conn.execute(
                "UPDATE calls SET last=?, updated=? WHERE call=?",
                (json.dumps(last), time.time(), call),
            )
        )

    async def park(self, call: str, turn: str, payload: dict[str, Any]) -> None:
        await self._run(
            lambda: self._conn.execute(
                "INSERT INTO parked(call, turn, payload, created) VALUES (?,?,?,?) "
                "ON CONFLICT(call, turn) DO UPDATE SET payload=excluded.payload",
                (call, turn, json.dumps(payload), time.time()),
            )
        )

    async def parked(self, call: str, turn: str) -> dict[str, Any] | None:
        def run() -> dict[str, Any] | None:
            row = self._conn.execute(
                "SELECT payload FROM parked WHERE call=? AND turn=?", (call, turn)
            ).fetchone()
            return json.loads(row[0]) if row else None

        return await self._run(run)

    async def end_call(self, call: str) -> None:
        """Forget a finished call: its caller number, parked replies and last answer."""

        def run() -> None:
            with self._tx() as db:
                db.execute("DELETE FROM calls WHERE call=?", (call,))
                db.execute("DELETE FROM parked WHERE call=?", (call,))

        await self._run(run)

    # -- retention -------------------------------------------------------------------------

    async def purge(self, *, audit_days: float, keep_days: float = 7.0) -> dict[str, int]:
        """Delete expired dedupe keys, old audit rows and finished inbox/outbox/call rows."""

        def run() -> dict[str, int]:
            now = time.time()
            done: dict[str, int] = {}
            with self._tx() as db:
                statements = {
                    "dedupe": ("DELETE FROM dedupe WHERE expires<?", now),
                    "audit": ("DELETE FROM audit WHERE ts<?", now - audit_days * DAY),
                    "inbox": (
                        "DELETE FROM inbox WHERE status!='pending' AND updated<?",
                        now - keep_days * DAY,
                    ),
                    "outbox": (
                        "DELETE FROM outbox WHERE status!='pending' AND updated<?",
                        now - keep_days * DAY,
                    ),
                    "exchanges": ("DELETE FROM exchanges WHERE ts<?", now - audit_days * DAY),
                    "calls": ("DELETE FROM calls WHERE updated<?", now - DAY),
                    "parked": ("DELETE FROM parked WHERE created<?", now - DAY),
                }
                for name, (sql, arg) in statements.items():
                    done[name] = db.execute(sql, (arg,)).rowcount
            return done

        return await self._run(run)


def _install_secret(data_dir: Path) -> bytes:
    """The per-install HMAC key for user ids, created once with owner-only permissions."""
    path = data_dir / "install.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text(encoding="ascii").strip())
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(secrets.token_hex(32))
    return bytes.fromhex(path.read_text(encoding="ascii").strip())
