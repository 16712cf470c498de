"""The workers' side of the model RPC: take requests, highest priority first, run them on this
worker's engines and reply (voicebot/scale/rpc.py has the keys and the wire format).

A worker takes a request only when one of its ``rpc_concurrency`` slots is free, so a busy
worker leaves requests to idle ones. Each request runs at its own priority, so in the
engines' gate (``engines.base.Blocking``) a live call's transcription goes before the
WhatsApp turns this worker is answering (they run at ``MESSAGE``) and bulk work waits for
both. A request whose caller gave up before it started is skipped (``CLAIM`` finds
nothing). While it works, the worker refreshes its lease, so the caller can tell a slow
worker from a dead one.

On /metrics: ``voicebot_rpc_queue_depth`` and ``voicebot_rpc_queue_oldest_seconds`` (all
priorities; every worker reads them from Redis), ``voicebot_rpc_busy``, and per request
``voicebot_rpc_total{kind,priority,outcome}``, ``voicebot_rpc_seconds{kind}`` (model time)
and ``voicebot_rpc_wait_seconds{priority}`` (time in the queue).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from voicebot.config import Settings
from voicebot.errors import VoicebotError
from voicebot.metrics import Metrics
from voicebot.priority import Priority, priority
from voicebot.scale.rpc import (
    CLAIM,
    LEASE,
    QUEUES,
    REPLY_TTL_MS,
    RpcKeys,
    decode,
    encode,
    open_raw,
    pcm_audio,
    pcm_bytes,
)
from voicebot.services import Services

__all__ = ["RpcServer"]

_LOGGER = logging.getLogger(__name__)
_BLOCK = 1.0  # BLPOP waits this long, so a drain is noticed within a second
_STATS_EVERY = 2.0
_STAGES = {"transcribe": "stt", "synthesize": "tts"}
_STT_RATE = 16_000
_METRICS = (
    ("voicebot_rpc_queue_depth", "gauge", "Model calls waiting for a worker"),
    ("voicebot_rpc_queue_oldest_seconds", "gauge", "Age of the oldest waiting model call"),
    ("voicebot_rpc_busy", "gauge", "Model calls this worker is running"),
    ("voicebot_rpc_total", "counter", "Model calls by kind, priority and outcome"),
    ("voicebot_rpc_seconds", "histogram", "Model time of a model call"),
    ("voicebot_rpc_wait_seconds", "histogram", "Queue time of a model call"),
)


@dataclass(frozen=True, slots=True)
class RpcStats:
    depth: int = 0
    oldest_seconds: float = 0.0


class RpcServer:
    """Serves model calls from the queues of ``settings.redis_prefix`` with ``services``."""

    def __init__(
        self,
        settings: Settings,
        services: Services,
        metrics: Metrics,
        *,
        worker: str,
        redis: Any | None = None,
    ) -> None:
        self._r: Any = redis if redis is not None else open_raw(settings)
        self._services = services
        self._metrics = metrics
        self.worker = worker
        self._keys = RpcKeys(settings.redis_prefix)
        self._queues = [self._keys.queue(level) for level in QUEUES]
        self._slots = asyncio.Semaphore(settings.rpc_concurrency)
        self._claim = self._r.register_script(CLAIM)
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        self.stats = RpcStats()
        for name, kind, text in _METRICS:
            metrics.describe(name, kind, text)
        metrics.gauge("voicebot_rpc_queue_depth", lambda: float(self.stats.depth))
        metrics.gauge("voicebot_rpc_queue_oldest_seconds", lambda: self.stats.oldest_seconds)
        metrics.gauge("voicebot_rpc_busy", lambda: float(len(self._tasks)))

    @property
    def busy(self) -> int:
        return len(self._tasks)

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._take_loop(), name="rpc-take"),
            asyncio.create_task(self._stats_loop(), name="rpc-stats"),
        ]

    async def drain(self, timeout: float) -> int:
        """Stop taking requests (the pending ``BLPOP`` ends within a second and what it got
        is served), then give the calls in flight up to ``timeout``. Returns those left."""
        self._stopping = True
        if self._loops:  # never cancelled mid-BLPOP: a request popped then would be lost
            await asyncio.wait([self._loops[0]], timeout=_BLOCK + 5.0)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)
        return len(self._tasks)

    async def close(self) -> None:
        for task in [*self._loops, *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._r.aclose()

    async def refresh_stats(self) -> RpcStats:
        """Depth of all queues and the age of the oldest request at their heads."""
        async with self._r.pipeline(transaction=False) as pipe:
            for queue in self._queues:
                pipe.llen(queue).lindex(queue, 0)
            rows = await pipe.execute()
        depth, oldest = 0, 0.0
        now = time.time()
        for length, head in zip(rows[::2], rows[1::2], strict=True):
            depth += int(length)
            if head:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    oldest = max(oldest, now - float(json.loads(head)["t"]))
        self.stats = RpcStats(depth, round(oldest, 3))
        return self.stats

    async def _stats_loop(self) -> None:
        while True:
            try:
                await self.refresh_stats()
            except Exception as err:  # Redis restarting: carry on once it is back
                _LOGGER.debug("rpc stats failed: %s", err.__class__.__name__)
            await asyncio.sleep(_STATS_EVERY)

    async def _take_loop(self) -> None:
        while not self._stopping:
            await self._slots.acquire()
            if self._stopping:
                self._slots.release()
                break
            try:
                taken = await self._take()
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception as err:  # Redis away: wait for it, like the turn loop does
                self._slots.release()
                _LOGGER.warning("taking model calls failed: %s", err.__class__.__name__)
                await asyncio.sleep(1.0)
                continue
            if taken is None:
                self._slots.release()
                continue
            task = asyncio.create_task(self._serve(*taken), name="rpc-serve")
            self._tasks.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._slots.release()

    async def _take(self) -> tuple[str, bytes] | None:
        """The next wanted request (id, frame), highest priority first; None after a wait."""
        got = await self._r.blpop(self._queues, timeout=_BLOCK)
        if got is None:
            return None
        queue, entry = got
        try:
            head = json.loads(entry)
            rid, kind = str(head["id"]), str(head.get("kind", "?"))
        except (ValueError, KeyError, TypeError):
            _LOGGER.warning("dropped an unreadable model call from %s", queue)
            return None
        keys = [self._keys.request(rid), self._keys.lease(rid)]
        frame = await self._claim(keys=keys, args=[self.worker, int(LEASE * 1000)])
        if frame is None:  # the caller gave up (or its timeout passed) before we got to it
            level = str(head.get("priority", "?"))
            self._metrics.inc("voicebot_rpc_total", kind=kind, priority=level, outcome="skipped")
            return None
        return rid, bytes(frame)

    async def _serve(self, rid: str, frame: bytes) -> None:
        """Run one claimed request at its priority, under its lease, and push the reply."""
        lease = asyncio.create_task(self._keep_lease(rid), name="rpc-lease")
        started = time.perf_counter()
        try:
            header, body = decode(frame)
        except ValueError:  # answered below as an unknown kind of call
            header, body = {}, b""
        kind, level = str(header.get("kind")), _priority(header.get("priority"))
        waited = max(0.0, time.time() - float(header.get("t", time.time())))
        try:
            with priority(level):
                reply, out = await self._answer(kind, header.get("args") or {}, body)
        finally:
            lease.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lease
        elapsed = time.perf_counter() - started
        reply |= {"worker": self.worker, "waited_ms": waited * 1000, "run_ms": elapsed * 1000}
        key = self._keys.reply(rid)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.rpush(key, encode(reply, out)).pexpire(key, REPLY_TTL_MS)
            pipe.delete(self._keys.lease(rid))
            await pipe.execute()
        outcome, name = "ok" if reply["ok"] else str(reply["code"]), level.name.lower()
        self._metrics.inc("voicebot_rpc_total", kind=kind, priority=name, outcome=outcome)
        self._metrics.observe("voicebot_rpc_seconds", elapsed, kind=kind)
        self._metrics.observe("voicebot_rpc_wait_seconds", waited, priority=name)
        _LOGGER.info(
            "rpc %s %s priority=%s waited_ms=%.0f ms=%.0f outcome=%s",
            *(kind, rid[:8], name, waited * 1000, elapsed * 1000, outcome),
        )

    async def _answer(
        self, kind: str, args: dict[str, Any], body: bytes
    ) -> tuple[dict[str, Any], bytes]:
        """The reply header and body; a failure is a coded error reply, never an exception."""
        try:
            result, out = await self._run(kind, args, body)
        except VoicebotError as err:
            return {"ok": False, "code": err.code, "message": err.message}, b""
        except Exception as err:
            _LOGGER.exception("model call %s failed", kind)
            code = f"{_STAGES.get(kind, 'rpc')}-failed"
            return {"ok": False, "code": code, "message": err.__class__.__name__}, b""
        return {"ok": True, "result": result}, out

    async def _keep_lease(self, rid: str) -> None:
        key = self._keys.lease(rid)
        while True:
            await asyncio.sleep(LEASE / 3)
            with contextlib.suppress(Exception):  # a missed refresh costs nothing yet
                await self._r.pexpire(key, int(LEASE * 1000))

    async def _run(self, kind: str, args: dict[str, Any], body: bytes) -> tuple[Any, bytes]:
        pipeline = self._services.pipeline
        if kind == "transcribe":
            transcriber = await pipeline.transcriber(pipeline.packs.resolve(args.get("pack")))
            t = await transcriber.transcribe(
                pcm_audio(body, _STT_RATE),
                language=str(args["language"]),
                prompt=args.get("prompt"),
                beam_size=args.get("beam_size"),
                context_seconds=args.get("context_seconds"),
            )
            fields = ("text", "language", "avg_logprob", "no_speech_prob", "duration")
            return {name: getattr(t, name) for name in fields}, b""
        if kind == "synthesize":
            audio = await pipeline.synthesizer.synthesize(
                str(args["text"]), voice=str(args["voice"]), speed=float(args.get("speed", 1.0))
            )
            return {"rate": audio.rate}, pcm_bytes(audio)
        raise VoicebotError(f"unknown model call {kind!r}", code="rpc-unknown-kind")


def _priority(name: object) -> Priority:
    try:
        return Priority[str(name).upper()]
    except KeyError:
        return Priority.MESSAGE
