"""Model calls over Redis: a web node asks the ``voicebot worker`` pool and waits for the answer.

A realtime call stays on the web node that holds its WebSocket; with
``voice_engines = "workers"`` its transcriptions and syntheses run on the workers through
this module (docs/scaling.md, "Voice on workers"). Keys, under ``<prefix>:rpc:``:

- ``q:<priority>``: one list per ``voicebot.priority.Priority`` holding small JSON headers
  (``id``, ``kind``, ``t``). Callers ``RPUSH``; a worker ``BLPOP``s all four lists in
  priority order, which Redis serves from the first non-empty one: realtime before
  ``<Record>`` turns before WhatsApp before bulk work, first come first served within one.
- ``req:<id>``: the request itself (header JSON, a newline, then the body: 16-bit PCM for a
  transcription), with the caller's timeout as TTL. It is also the "still wanted" mark: a
  caller that gives up (timeout, hang-up, a cancelled speculative turn) deletes it, and a
  worker that pops the id after that finds nothing and skips it.
- ``run:<id>``: the worker's lease while it works (``CLAIM`` below turns ``req`` into
  ``run`` atomically), refreshed every second. A caller waiting on a request that has
  neither ``req``, ``run`` nor a reply knows its worker died (SIGKILL, OOM) and fails with
  ``<stage>-worker-lost`` at once instead of waiting out its timeout.
- ``re:<id>``: the reply (header JSON, a newline, the body), pushed together with the
  ``run`` delete in one transaction; the caller ``BLPOP``s it. Replies expire after a minute.

Requests are not redelivered: the caller holds the deadline, and a lost request is answered
with a coded error (the call's existing apology path) within ``rpc_timeout_seconds``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from voicebot.audio import to_pcm16
from voicebot.config import Settings
from voicebot.errors import VoicebotError
from voicebot.messages import Audio
from voicebot.priority import Priority

__all__ = [
    "QUEUES",
    "Reply",
    "RpcClient",
    "RpcKeys",
    "decode",
    "encode",
    "open_raw",
    "pcm_audio",
    "pcm_bytes",
]

_LOGGER = logging.getLogger(__name__)
POLL = 0.5  # the caller checks that its request is still held this often
LEASE = 3.0  # a worker's claim lives this long unless refreshed (every LEASE / 3)
REPLY_TTL_MS = 60_000
QUEUE_TTL = 600  # a queue nobody pushes to or pops from disappears (no workers, no callers)
QUEUES = tuple(Priority)  # the order workers pop in
# KEYS: req, run. ARGV: worker, lease ms. The request if it is still wanted (now claimed).
CLAIM = """
local body = redis.call('GET', KEYS[1])
if not body then return false end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return body
"""


@dataclass(frozen=True, slots=True)
class RpcKeys:
    prefix: str

    def queue(self, level: Priority) -> str:
        return f"{self.prefix}:rpc:q:{level.name.lower()}"

    def request(self, rid: str) -> str:
        return f"{self.prefix}:rpc:req:{rid}"

    def lease(self, rid: str) -> str:
        return f"{self.prefix}:rpc:run:{rid}"

    def reply(self, rid: str) -> str:
        return f"{self.prefix}:rpc:re:{rid}"


def encode(header: Mapping[str, Any], body: bytes = b"") -> bytes:
    """Header JSON (never a raw newline in it), a newline, then the body as is."""
    return json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n" + body


def decode(frame: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, body = frame.partition(b"\n")
    header = json.loads(head)
    if not isinstance(header, dict):
        raise ValueError("an RPC header must be a JSON object")
    return header, body


def pcm_bytes(audio: Audio) -> bytes:
    """Audio on the wire: 16-bit little-endian PCM (lossless for every engine's WAV output)."""
    return to_pcm16(audio.samples).astype("<i2").tobytes()


def pcm_audio(body: bytes, rate: int) -> Audio:
    return Audio(np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768.0, rate)


@dataclass(frozen=True, slots=True)
class Reply:
    """A successful answer: the result fields, the body, and who served it how fast."""

    result: dict[str, Any]
    body: bytes
    worker: str = ""
    waited_ms: float = 0.0  # in the queue, as the worker saw it
    run_ms: float = 0.0  # the model work itself


def open_raw(settings: Settings) -> Any:
    """A redis.asyncio client without response decoding (bodies are binary)."""
    import redis.asyncio as redis

    return redis.Redis.from_url(
        settings.redis_url,
        decode_responses=False,
        socket_timeout=POLL + 5.0,
        socket_connect_timeout=5.0,
        health_check_interval=15,
    )


@dataclass(eq=False)
class RpcClient:
    """The web node's side: ``call`` queues a request and waits for its reply.

    Failures raise ``error`` (the stage's error class) with a coded reason:
    ``<stage>-worker-timeout`` (no reply in time: workers busy, absent or stuck),
    ``<stage>-worker-lost`` (the worker holding it died), ``<stage>-rpc-failed`` (Redis
    unreachable); an error raised on the worker comes back with its own code.
    """

    redis: Any
    prefix: str
    timeout: float = 10.0
    keys: RpcKeys = field(init=False)
    _cleanup: set[asyncio.Task[Any]] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self.keys = RpcKeys(self.prefix)

    @classmethod
    def open(cls, settings: Settings) -> RpcClient:
        return cls(open_raw(settings), settings.redis_prefix, settings.rpc_timeout_seconds)

    async def close(self) -> None:
        if self._cleanup:
            await asyncio.gather(*self._cleanup, return_exceptions=True)
        await self.redis.aclose()

    async def call(
        self,
        kind: str,
        args: Mapping[str, Any],
        body: bytes = b"",
        *,
        priority: Priority,
        error: type[VoicebotError],
        stage: str,
        timeout: float | None = None,
    ) -> Reply:
        from redis.exceptions import RedisError

        timeout = self.timeout if timeout is None else timeout
        rid = uuid.uuid4().hex
        header = {"id": rid, "kind": kind, "t": time.time(), "priority": priority.name.lower()}
        answered = False
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                frame = encode({**header, "args": dict(args)}, body)
                pipe.set(self.keys.request(rid), frame, px=max(1, int(timeout * 1000)))
                queue = self.keys.queue(priority)
                pipe.rpush(queue, json.dumps(header)).expire(queue, QUEUE_TTL)
                await pipe.execute()
            frame = await self._wait(rid, kind, timeout, error, stage)
            answered = True
            return _reply(frame, error, stage)
        except (OSError, RedisError) as err:  # Redis away, or a broken connection
            raise error(
                f"model call over Redis failed: {err.__class__.__name__}",
                code=f"{stage}-rpc-failed",
            ) from err
        finally:
            if not answered:  # timed out, lost or cancelled: no worker may start it now
                task = asyncio.ensure_future(self._forget(self.keys.request(rid)))
                self._cleanup.add(task)
                task.add_done_callback(self._cleanup.discard)

    async def _wait(
        self, rid: str, kind: str, timeout: float, error: type[VoicebotError], stage: str
    ) -> bytes:
        """The reply frame, polling every ``POLL`` s whether a worker still holds the request."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        req, lease, reply = self.keys.request(rid), self.keys.lease(rid), self.keys.reply(rid)
        while (left := deadline - loop.time()) > 0:
            got = await self.redis.blpop([reply], timeout=max(0.01, min(left, POLL)))
            if got is not None:
                return bytes(got[1])
            if not await self.redis.exists(req, lease, reply) and loop.time() < deadline:
                raise error(f"the worker running a {kind} went away", code=f"{stage}-worker-lost")
        raise error(f"no worker answered a {kind} in {timeout:g}s", code=f"{stage}-worker-timeout")

    async def _forget(self, req: str) -> None:
        try:
            await self.redis.delete(req)
        except Exception as err:  # Redis away: the request's TTL ends it anyway
            _LOGGER.debug("could not withdraw %s: %s", req, err.__class__.__name__)


def _reply(frame: bytes, error: type[VoicebotError], stage: str) -> Reply:
    try:
        header, body = decode(frame)
    except ValueError as err:
        raise error("a worker sent an unreadable reply", code=f"{stage}-rpc-failed") from err
    if not header.get("ok"):  # the engine's own code, in the stage's class the pipeline expects
        code = str(header.get("code") or error.default_code)
        raise error(str(header.get("message", "")), code=code)
    return Reply(
        result=dict(header.get("result") or {}),
        body=body,
        worker=str(header.get("worker", "")),
        waited_ms=float(header.get("waited_ms", 0.0)),
        run_ms=float(header.get("run_ms", 0.0)),
    )
