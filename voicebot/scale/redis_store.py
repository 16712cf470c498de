"""Scale-mode state on Redis: the same ``StateStore`` the SQLite store is, for many processes.

Keys live under ``<prefix>:`` (``settings.redis_prefix``). What goes where:

- users, conversation memory, dedupe keys (``SET NX PX``), calls and parked voice replies:
  plain keys and hashes, most with a TTL so nothing needs a purge job;
- the inbox: the stream ``<prefix>:in`` with the consumer group ``workers``. ``accept`` claims
  the dedupe key and ``XADD``s in one Lua script, before the webhook answers 200. Workers
  ``XREADGROUP``; ``finish`` queues the replies, writes the audit record and ``XACK``s in one
  script, guarded by ``<prefix>:done:<message id>`` (``SET NX``), so a turn retaken from a
  dead worker with ``XAUTOCLAIM`` is never answered twice;
- the outbox: one hash per reply plus the sorted set ``<prefix>:ob:due`` (score = next
  attempt). Only the first reply of a message is due at first; sending it promotes the next,
  so replies go out in order. ``due_outbox`` leases what it returns (pushes the score
  forward), so several senders never send the same reply at once; a sender that dies loses
  only its lease. Dead letters go to ``<prefix>:ob:dead`` and the audit stream;
- media: ``RedisMediaStore`` keeps voice-note bytes in Redis with the token's TTL, so any
  web node can serve a file a worker synthesised.

Durability is Redis's: run it with AOF (``appendonly yes``) as ``deploy/`` does.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from voicebot.channels.media import MediaStore
from voicebot.config import Settings
from voicebot.logs import redact
from voicebot.messages import Exchange
from voicebot.state import is_outage
from voicebot.store import DAY, AuditRecord, InboxItem, MediaRecord, OutboxItem

__all__ = ["GROUP", "QueueStats", "RedisLimiter", "RedisMediaStore", "RedisStore"]

_LOGGER = logging.getLogger(__name__)
GROUP = "workers"
_DONE_TTL = 9 * DAY  # longer than any provider's redelivery window (Meta: 7 days)
_HEARTBEAT_STALE = 10.0  # a worker silent this long is not counted as alive
_OUTAGE = 30.0  # how long a finished turn or a completed send waits for Redis to return
_BLOCK_MS = 1000  # XREADGROUP blocks this long, so shutdown and reclaim stay responsive

# Shared by finish and enqueue: ARGV from ``base`` on is (id, parent, seq, channel, payload)*.
_ENQUEUE = """
local function enqueue(prefix, due, all, now, base)
  local prev = nil
  for i = base, #ARGV, 5 do
    local id = ARGV[i]
    local key = prefix .. ':ob:' .. id
    if redis.call('EXISTS', key) == 0 then
      local status = 'held'
      if prev == nil then status = 'pending' end
      redis.call('HSET', key, 'parent', ARGV[i+1], 'seq', ARGV[i+2], 'channel', ARGV[i+3],
        'payload', ARGV[i+4], 'status', status, 'attempts', 0, 'provider_ref', '',
        'next', '', 'created', now, 'updated', now)
      redis.call('ZADD', all, now, id)
      if prev == nil then
        redis.call('ZADD', due, 'NX', now, id)
      else
        redis.call('HSET', prefix .. ':ob:' .. prev, 'next', id)
      end
      prev = id
    end
  end
end
"""

# KEYS: dedupe key, inbox stream. ARGV: ttl ms, id, channel, payload.
_ACCEPT = """
if redis.call('SET', KEYS[1], 'inbox', 'NX', 'PX', ARGV[1]) then
  return redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'channel', ARGV[3], 'payload', ARGV[4])
end
return false
"""

# KEYS: done marker, inbox stream, due, all, audit.
# ARGV: prefix, group, entry id, done ttl ms, now, audit json, then the replies.
_FINISH = (
    _ENQUEUE
    + """
local first = redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[4])
if first then
  enqueue(ARGV[1], KEYS[3], KEYS[4], ARGV[5], 7)
  if ARGV[6] ~= '' then
    redis.call('XADD', KEYS[5], 'MAXLEN', '~', '1000000', '*', 'rec', ARGV[6])
  end
end
if ARGV[3] ~= '' then redis.call('XACK', KEYS[2], ARGV[2], ARGV[3]) end
if first then return 1 end
return 0
"""
)

# KEYS: due, all. ARGV: prefix, now, then the replies.
_ENQUEUE_ONLY = _ENQUEUE + "\nenqueue(ARGV[1], KEYS[1], KEYS[2], ARGV[2], 3)\nreturn 1\n"

# KEYS: due. ARGV: prefix, now, lease until, limit. Returns flat (id, fields...) rows.
_DUE = """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[2], 'LIMIT', 0, ARGV[4])
local out = {}
for _, id in ipairs(ids) do
  local h = redis.call('HMGET', ARGV[1] .. ':ob:' .. id,
    'parent', 'seq', 'channel', 'payload', 'attempts', 'provider_ref')
  if h[1] then
    redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id)
    table.insert(out, id)
    for _, v in ipairs(h) do table.insert(out, v or '') end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
"""

# KEYS: item, due, dead list. ARGV: prefix, id, status, now, provider ref, error, keep ms.
_COMPLETE = """
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[1], 'status', ARGV[3], 'updated', ARGV[4], 'last_error', ARGV[6])
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'provider_ref', ARGV[5]) end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if ARGV[3] == 'dead' then redis.call('LPUSH', KEYS[3], ARGV[2]) end
local nxt = redis.call('HGET', KEYS[1], 'next')
if nxt and nxt ~= '' then
  local nkey = ARGV[1] .. ':ob:' .. nxt
  if redis.call('HGET', nkey, 'status') == 'held' then
    redis.call('HSET', nkey, 'status', 'pending')
    redis.call('ZADD', KEYS[2], ARGV[4], nxt)
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
return 1
"""

# KEYS: bucket. ARGV: capacity, refill per second, now. The same rules as RateLimiter.
_BUCKET = """
local cap, rate, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local h = redis.call('HMGET', KEYS[1], 'tokens', 'stamp', 'refused')
local tokens = tonumber(h[1]) or cap
local stamp = tonumber(h[2]) or now
local refused = tonumber(h[3]) or -1e12
tokens = math.min(cap, tokens + math.max(0, now - stamp) * rate)
local result = 'drop'
if tokens >= 1 then
  tokens = tokens - 1
  result = 'allow'
elseif now - refused >= 60 then
  refused = now
  result = 'refuse'
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now),
  'refused', tostring(refused))
redis.call('EXPIRE', KEYS[1], 120)
return result
"""


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The inbox queue as the web nodes export it: depth, age of the oldest turn, workers."""

    depth: int = 0
    oldest_seconds: float = 0.0
    workers: int = 0


def _entry_ms(entry_id: str) -> int:
    return int(entry_id.split("-", 1)[0])


class RedisStore:
    """``voicebot.state.StateStore`` on Redis (``redis.asyncio``). One per process."""

    def __init__(self, client: Any, raw: Any, settings: Settings, secret: bytes) -> None:
        # redis-py's annotations are unions of sync and async results: keep the client Any.
        self._r: Any = client
        self._raw: Any = raw  # the same server without response decoding, for media bytes
        self._settings = settings
        self._secret = secret
        p = settings.redis_prefix
        self._p = p
        self._stream, self._due, self._all = f"{p}:in", f"{p}:ob:due", f"{p}:ob:all"
        self._audit, self._dead, self._workers = f"{p}:audit", f"{p}:ob:dead", f"{p}:workers"
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self.pending = (0, 0)
        self.inbox_idle = 0.0  # pending_inbox itself blocks on XREADGROUP
        self.stats = QueueStats()
        self.shed = 0  # turns answered text-only because they waited too long
        self._turns = 6
        # A sender owns a due reply this long; after that another node may send it.
        self._lease = max(5.0, 2 * settings.http_timeout_seconds)
        self._inflight: dict[str, str] = {}  # message id → stream entry id
        self._freed = asyncio.Event()
        self._counted = 0.0
        self._reclaimed = 0.0
        self._accept = client.register_script(_ACCEPT)
        self._finish = client.register_script(_FINISH)
        self._enqueue = client.register_script(_ENQUEUE_ONLY)
        self._due_script = client.register_script(_DUE)
        self._complete = client.register_script(_COMPLETE)
        self.bucket = client.register_script(_BUCKET)

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    async def open(cls, settings: Settings) -> RedisStore:
        """Connect, create the consumer group and share the install secret (first one wins)."""
        import redis.asyncio as redis

        opts: dict[str, Any] = {
            "socket_timeout": _BLOCK_MS / 1000 + 5.0,
            "socket_connect_timeout": 5.0,
            "health_check_interval": 15,
        }
        client = redis.Redis.from_url(settings.redis_url, decode_responses=True, **opts)
        raw = redis.Redis.from_url(settings.redis_url, decode_responses=False, **opts)
        p = settings.redis_prefix
        await client.set(f"{p}:install-key", secrets.token_hex(32), nx=True)
        secret = bytes.fromhex(str(await client.get(f"{p}:install-key")))
        store = cls(client, raw, settings, secret)
        await store.ensure_group()
        return store

    async def ensure_group(self) -> None:
        import redis.exceptions

        try:
            await self._r.xgroup_create(self._stream, GROUP, id="0", mkstream=True)
        except redis.exceptions.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    async def close(self) -> None:
        await self._r.aclose()
        await self._raw.aclose()

    async def leave(self) -> None:
        """Forget this consumer when it holds nothing (a graceful worker exit)."""
        await self._r.hdel(self._workers, self.consumer)
        summary = await self._r.xpending_range(
            self._stream, GROUP, "-", "+", 1, consumername=self.consumer
        )
        if not summary:
            await self._r.xgroup_delconsumer(self._stream, GROUP, self.consumer)

    async def heartbeat(self, busy: int) -> None:
        await self._r.hset(self._workers, self.consumer, json.dumps([time.time(), busy]))

    # -- users and memory ------------------------------------------------------------------

    def user_key(self, phone: str) -> str:
        return hmac.new(self._secret, phone.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def _user(self, user: str) -> str:
        return f"{self._p}:user:{user}"

    async def touch_user(self, user: str) -> bool:
        return bool(await self._r.hsetnx(self._user(user), "created", str(time.time())))

    async def language(self, user: str) -> str | None:
        lang = await self._r.hget(self._user(user), "lang")
        return str(lang) if lang else None

    async def set_language(self, user: str, lang: str) -> None:
        key, now = self._user(user), str(time.time())
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "created", now).hset(key, mapping={"lang": lang, "updated": now})
            await pipe.execute()

    async def history(self, conversation: str) -> list[Exchange]:
        rows = await self._r.lrange(f"{self._p}:mem:{conversation}", -self._turns, -1)
        out = []
        for row in rows:
            d = json.loads(row)
            out.append(Exchange(question=d["q"], answer=d["a"], scheme=d.get("s")))
        return out

    async def remember(self, conversation: str, exchange: Exchange) -> None:
        key = f"{self._p}:mem:{conversation}"
        row = json.dumps(
            {"q": redact(exchange.question), "a": exchange.answer, "s": exchange.scheme}
        )
        ttl = int(self._settings.audit_retention_days * DAY)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.rpush(key, row).ltrim(key, -self._turns, -1).expire(key, ttl)
            pipe.hsetnx(self._user(conversation), "created", str(time.time()))
            if exchange.scheme:
                pipe.hset(self._user(conversation), "scheme", exchange.scheme)
            await pipe.execute()

    # -- dedupe ----------------------------------------------------------------------------

    async def claim(self, key: str, *, ttl: float, value: str | None = None) -> bool:
        return bool(
            await self._r.set(f"{self._p}:dd:{key}", value or "", nx=True, px=int(ttl * 1000))
        )

    async def remembered(self, key: str) -> str | None:
        value = await self._r.get(f"{self._p}:dd:{key}")
        return str(value) if value else None

    async def set_remembered(self, key: str, value: str) -> None:
        await self._r.set(f"{self._p}:dd:{key}", value, xx=True, keepttl=True)

    # -- inbox (the turn stream) -----------------------------------------------------------

    async def accept(
        self, item_id: str, channel: str, payload: dict[str, Any], *, ttl: float
    ) -> bool:
        entry = await self._accept(
            keys=[f"{self._p}:dd:{item_id}", self._stream],
            args=[int(ttl * 1000), item_id, channel, json.dumps(payload)],
        )
        return entry is not None

    async def pending_inbox(self, limit: int = 50) -> list[InboxItem]:
        """Turns for this worker: retaken from dead workers first, then new ones (blocking).

        Takes no more than the free slots (``channel_concurrency`` in flight), so a busy
        worker leaves new turns to the others.
        """
        free = min(limit, self._settings.channel_concurrency - len(self._inflight))
        if free <= 0:
            self._freed.clear()
            try:
                async with asyncio.timeout(_BLOCK_MS / 1000):
                    await self._freed.wait()
            except TimeoutError:
                pass
            return []
        entries: list[tuple[str, dict[str, str] | None]] = []
        now = time.monotonic()
        reclaim = self._settings.worker_reclaim_seconds
        if now - self._reclaimed >= min(5.0, reclaim / 4):
            self._reclaimed = now
            _next, claimed, *_ = await self._r.xautoclaim(
                self._stream, GROUP, self.consumer, int(reclaim * 1000), "0-0", count=free
            )
            entries.extend(claimed)
            if claimed:
                _LOGGER.warning("retook %d turn(s) from stalled workers", len(claimed))
        if not entries:
            streams = await self._r.xreadgroup(
                GROUP, self.consumer, {self._stream: ">"}, count=free, block=_BLOCK_MS
            )
            for _name, rows in streams or []:
                entries.extend(rows)
        return await self._items(entries)

    async def _items(self, entries: list[tuple[str, dict[str, str] | None]]) -> list[InboxItem]:
        items: list[InboxItem] = []
        shed_after = self._settings.worker_shed_seconds
        for entry_id, fields in entries:
            if not fields:  # trimmed while pending: nothing left to answer
                await self._r.xack(self._stream, GROUP, entry_id)
                continue
            item_id = fields["id"]
            payload = json.loads(fields["payload"])
            created = _entry_ms(entry_id) / 1000
            if time.time() - created > shed_after:
                payload["text_only"] = True  # the queue is too old: skip synthesis
                self.shed += 1
            self._inflight[item_id] = entry_id
            attempts = await self._r.hget(f"{self._p}:in:attempts", item_id)
            items.append(
                InboxItem(item_id, fields["channel"], payload, int(attempts or 0), created)
            )
        return items

    def _release(self, item_id: str) -> str:
        entry = self._inflight.pop(item_id, "")
        self._freed.set()
        return entry

    async def finish(
        self, item_id: str, replies: Sequence[OutboxItem], audit: AuditRecord | None = None
    ) -> None:
        """Queue the replies + audit and ack the turn, atomically; a second finish is a no-op."""
        args: list[Any] = [
            self._p,
            GROUP,
            self._inflight.get(item_id, ""),
            int(_DONE_TTL * 1000),
            time.time(),
            json.dumps(self._audit_row(audit)) if audit is not None else "",
        ]
        for item in sorted(replies, key=lambda i: i.seq):
            args += [item.id, item.parent, item.seq, item.channel, json.dumps(item.payload)]
        keys = [f"{self._p}:done:{item_id}", self._stream, self._due, self._all, self._audit]
        # Idempotent (the done marker), so retrying through a Redis restart is safe.
        first = await self._through_outage(lambda: self._finish(keys=keys, args=args))
        self._release(item_id)
        if not first:
            _LOGGER.info("turn %s was already answered; duplicate replies dropped", item_id[-8:])

    async def inbox_failed(self, item_id: str, *, give_up: bool) -> int:
        entry = self._release(item_id)  # first: the slot is free even if Redis is down
        attempts = int(await self._r.hincrby(f"{self._p}:in:attempts", item_id, 1))
        if give_up and entry:
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.rpush(f"{self._p}:in:failed", item_id).xack(self._stream, GROUP, entry)
                await pipe.execute()
        return attempts  # not given up: stays pending and is retaken after the reclaim idle

    async def queue_stats(self) -> QueueStats:
        """Depth (waiting + in flight), age of the oldest unanswered turn, live workers."""
        groups = await self._r.xinfo_groups(self._stream)
        group = next((g for g in groups if g.get("name") == GROUP), None)
        depth, oldest_ms = 0, 0
        now_ms = int(time.time() * 1000)
        if group is not None:
            lag = group.get("lag")
            if lag is None:  # unknown after some trims: count what follows the last delivery
                lag = len(await self._r.xrange(self._stream, f"({group['last-delivered-id']}", "+"))
            depth = int(group.get("pending") or 0) + int(lag)
            candidates: list[int] = []
            if group.get("pending"):
                summary = await self._r.xpending(self._stream, GROUP)
                if summary and summary.get("min"):
                    candidates.append(_entry_ms(str(summary["min"])))
            if lag:
                first = await self._r.xrange(
                    self._stream, f"({group['last-delivered-id']}", "+", count=1
                )
                if first:
                    candidates.append(_entry_ms(first[0][0]))
            if candidates:
                oldest_ms = max(0, now_ms - min(candidates))
        beats = await self._r.hgetall(self._workers)
        alive = sum(1 for v in beats.values() if time.time() - json.loads(v)[0] < _HEARTBEAT_STALE)
        return QueueStats(depth=depth, oldest_seconds=oldest_ms / 1000, workers=alive)

    # -- outbox ----------------------------------------------------------------------------

    async def enqueue(self, items: Sequence[OutboxItem]) -> None:
        args: list[Any] = [self._p, time.time()]
        for item in sorted(items, key=lambda i: i.seq):
            args += [item.id, item.parent, item.seq, item.channel, json.dumps(item.payload)]
        await self._enqueue(keys=[self._due, self._all], args=args)

    async def due_outbox(self, limit: int = 20) -> list[OutboxItem]:
        now = time.time()
        lease = now + self._lease
        flat = await self._due_script(keys=[self._due], args=[self._p, now, lease, limit])
        out: list[OutboxItem] = []
        for i in range(0, len(flat), 7):
            item_id, parent, seq, channel, payload, attempts, ref = flat[i : i + 7]
            out.append(
                OutboxItem(
                    item_id, parent, int(seq), channel, json.loads(payload), int(attempts), ref
                )
            )
        return out

    async def next_outbox_time(self) -> float | None:
        first = await self._r.zrange(self._due, 0, 0, withscores=True)
        return float(first[0][1]) if first else None

    async def _done(self, item_id: str, status: str, ref: str, error: str) -> None:
        keep = int(7 * DAY * 1000)
        # The provider has the message: wait out a Redis blip rather than let the lease
        # expire and send it twice.
        await self._through_outage(
            lambda: self._complete(
                keys=[f"{self._p}:ob:{item_id}", self._due, self._dead],
                args=[self._p, item_id, status, time.time(), ref, error, keep],
            )
        )

    async def _through_outage(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run an idempotent call, retrying while Redis is unreachable (up to ``_OUTAGE``)."""
        deadline = time.monotonic() + _OUTAGE
        delay = 0.1
        while True:
            try:
                return await call()
            except Exception as err:
                if not is_outage(err) or time.monotonic() + delay > deadline:
                    raise
                _LOGGER.warning("redis unreachable (%s); retrying", err.__class__.__name__)
                await asyncio.sleep(delay)
                delay = min(2.0, delay * 2)

    async def outbox_sent(self, item_id: str, provider_ref: str = "") -> None:
        await self._done(item_id, "sent", provider_ref, "")

    async def outbox_retry(
        self, item_id: str, *, delay: float, error: str, provider_ref: str = ""
    ) -> None:
        key = f"{self._p}:ob:{item_id}"
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "attempts", 1)
            pipe.hset(key, mapping={"last_error": error, "updated": str(time.time())})
            if provider_ref:
                pipe.hset(key, "provider_ref", provider_ref)
            pipe.zadd(self._due, {item_id: time.time() + delay}, xx=True)
            await pipe.execute()

    async def outbox_dead(self, item_id: str, *, error: str, audit: AuditRecord) -> None:
        await self._done(item_id, "dead", "", error)
        await self.audit(audit)

    async def outbox(self, status: str | None = None) -> list[tuple[str, str, int]]:
        ids = await self._r.zrange(self._all, 0, -1)
        async with self._r.pipeline(transaction=False) as pipe:
            for item_id in ids:
                pipe.hmget(f"{self._p}:ob:{item_id}", "status", "attempts")
            rows = await pipe.execute()
        out = []
        for item_id, (st, attempts) in zip(ids, rows, strict=True):
            if st is None:
                continue
            st = "pending" if st == "held" else st
            if status is None or st == status:
                out.append((str(item_id), str(st), int(attempts or 0)))
        return out

    async def count_pending(self) -> tuple[int, int]:
        """(queue depth, due replies), recomputed at most once a second."""
        if time.monotonic() - self._counted >= 1.0:
            self._counted = time.monotonic()
            self.stats = await self.queue_stats()
            self.pending = (self.stats.depth, int(await self._r.zcard(self._due)))
        return self.pending

    # -- audit -----------------------------------------------------------------------------

    @staticmethod
    def _audit_row(rec: AuditRecord) -> dict[str, Any]:
        return {
            "ts": time.time(),
            "turn": rec.turn,
            "channel": rec.channel,
            "user": rec.user,
            "lang": rec.lang,
            "question": redact(rec.question),
            "sources": list(rec.sources),
            "engines": dict(sorted(rec.engines.items())),
            "latency_ms": round(rec.latency_ms, 1),
            "outcome": rec.outcome,
        }

    async def audit(self, record: AuditRecord) -> None:
        row = json.dumps(self._audit_row(record))
        await self._r.xadd(self._audit, {"rec": row}, maxlen=1_000_000, approximate=True)

    async def audit_log(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = await self._r.xrevrange(self._audit, count=limit)
        return [json.loads(fields["rec"]) for _id, fields in rows]

    # -- media (index + bytes) -------------------------------------------------------------

    def _media_key(self, token: str) -> str:
        return f"{self._p}:media:{token}"

    async def add_media(self, rec: MediaRecord) -> None:
        key = self._media_key(rec.token)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"path": rec.path, "type": rec.content_type, "owner": rec.owner})
            pipe.hset(key, "expires", str(rec.expires))
            pipe.expireat(key, int(rec.expires) + 1)
            if rec.owner:
                owned = f"{self._p}:media-owner:{rec.owner}"
                pipe.sadd(owned, rec.token).expireat(owned, int(rec.expires) + 1)
            await pipe.execute()

    async def media(self, token: str) -> MediaRecord | None:
        row = await self._r.hgetall(self._media_key(token))
        if not row:
            return None
        return MediaRecord(token, row["path"], row["type"], float(row["expires"]), row["owner"])

    async def put_blob(self, token: str, data: bytes, ttl: float) -> None:
        await self._raw.set(f"{self._p}:blob:{token}", data, px=max(1, int(ttl * 1000)))

    async def blob(self, token: str) -> bytes | None:
        data = await self._raw.get(f"{self._p}:blob:{token}")
        return bytes(data) if data is not None else None

    async def drop_media(self, owner: str) -> list[str]:
        """Forget ``owner``'s media (index and bytes); returns the tokens (nothing on disk)."""
        owned = f"{self._p}:media-owner:{owner}"
        tokens = [str(t) for t in await self._r.smembers(owned)]
        keys = [owned] + [self._media_key(t) for t in tokens]
        keys += [f"{self._p}:blob:{t}" for t in tokens]
        await self._r.delete(*keys)
        return tokens

    async def drop_expired_media(self, now: float) -> list[str]:
        return []  # every media key carries its own TTL

    # -- calls and parked voice replies ----------------------------------------------------

    async def put_call(
        self, call: str, *, user: str, lang: str | None, caller: str, callee: str
    ) -> None:
        key = f"{self._p}:call:{call}"
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hsetnx(key, "user", user).hsetnx(key, "caller", caller)
            pipe.hsetnx(key, "callee", callee)
            if lang:
                pipe.hset(key, "lang", lang)
            pipe.expire(key, int(DAY))
            await pipe.execute()

    async def call(self, call: str) -> dict[str, Any] | None:
        row = await self._r.hgetall(f"{self._p}:call:{call}")
        if not row:
            return None
        last = row.get("last")
        return {
            "user": row.get("user", ""),
            "lang": row.get("lang") or None,
            "caller": row.get("caller", ""),
            "callee": row.get("callee", ""),
            "last": json.loads(last) if last else None,
        }

    async def set_call_language(self, call: str, lang: str) -> None:
        key = f"{self._p}:call:{call}"
        if await self._r.exists(key):
            await self._r.hset(key, "lang", lang)

    async def set_call_last(self, call: str, last: dict[str, Any]) -> None:
        key = f"{self._p}:call:{call}"
        if await self._r.exists(key):
            await self._r.hset(key, "last", json.dumps(last))

    async def park(self, call: str, turn: str, payload: dict[str, Any]) -> None:
        key = f"{self._p}:park:{call}"
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(key, turn, json.dumps(payload)).expire(key, int(DAY))
            await pipe.execute()

    async def parked(self, call: str, turn: str) -> dict[str, Any] | None:
        row = await self._r.hget(f"{self._p}:park:{call}", turn)
        return json.loads(row) if row else None

    async def end_call(self, call: str) -> None:
        await self._r.delete(f"{self._p}:call:{call}", f"{self._p}:park:{call}")

    # -- retention -------------------------------------------------------------------------

    async def purge(self, *, audit_days: float, keep_days: float = 7.0) -> dict[str, int]:
        """Trim the audit and inbox streams and the outbox index; keys expire on their own."""
        now = time.time()
        audit_min = f"{int((now - audit_days * DAY) * 1000)}-0"
        keep_min = f"{int((now - keep_days * DAY) * 1000)}-0"
        return {
            "audit": int(await self._r.xtrim(self._audit, minid=audit_min, approximate=False)),
            "inbox": int(await self._r.xtrim(self._stream, minid=keep_min, approximate=False)),
            "outbox": int(await self._r.zremrangebyscore(self._all, "-inf", now - keep_days * DAY)),
        }


class RedisLimiter:
    """``voicebot.state.Limiter``: the token bucket of ``RateLimiter``, shared by all nodes."""

    def __init__(self, store: RedisStore, per_minute: int) -> None:
        self._store = store
        self.capacity = float(per_minute)

    async def take(self, sender: str) -> str:
        from voicebot.channels.ratelimit import ALLOW, DROP, REFUSE

        if self.capacity <= 0:
            return ALLOW
        result = await self._store.bucket(
            keys=[f"{self._store._p}:rl:{sender}"],
            args=[self.capacity, self.capacity / 60.0, time.time()],
        )
        return {"allow": ALLOW, "refuse": REFUSE}.get(str(result), DROP)


class RedisMediaStore(MediaStore):
    """Synthesised audio in Redis (bytes and index, same TTL): any node serves any token.

    Pinned files (cached voice prompts) stay per process, as in the embedded mode.
    """

    def __init__(self, store: RedisStore, *, root: Any, public_url: str, ttl: float) -> None:
        super().__init__(store, root, public_url=public_url, ttl=ttl)
        self._redis = store

    async def put(
        self, data: bytes, content_type: str, *, ext: str, owner: str = "", ttl: float | None = None
    ) -> str:
        token = secrets.token_urlsafe(32)
        life = self._ttl if ttl is None else ttl
        await self._redis.put_blob(token, data, life)
        await self._redis.add_media(
            MediaRecord(token, "redis", content_type, time.time() + life, owner)
        )
        return f"{token}{ext}"

    async def read(self, name: str) -> bytes | None:
        found = await self.lookup(name)
        if found is None:
            return None
        if found[2]:
            return await super().read(name)
        return await self._redis.blob(name.partition(".")[0])

    async def serve(self, name: str) -> web.StreamResponse:
        found = await self.lookup(name)
        if found is not None and found[2]:
            return await super().serve(name)
        data = await self.read(name) if found is not None else None
        if data is None or found is None:
            raise web.HTTPNotFound()
        headers = {"Content-Type": found[1], "Cache-Control": "no-store"}
        return web.Response(body=data, headers=headers)

    async def delete_owner(self, owner: str) -> int:
        return len(await self._redis.drop_media(owner))

    async def purge_expired(self) -> int:
        return 0
