"""The inference worker (``voicebot worker``): answers turns from the Redis stream and serves
the web nodes' model calls.

It loads the model stages once (``build_services``: ASR, MT, answer, TTS on
``settings.device``; always local here, whatever ``voice_engines`` says), then runs the same
``Delivery`` loops as the embedded server over the ``RedisStore``: take turns with
``XREADGROUP`` (never more than ``channel_concurrency`` at a time, so a busy worker leaves
turns to the others), retake turns stalled on dead workers with ``XAUTOCLAIM``, answer, then
queue the replies and ``XACK`` in one script — and send them.

Alongside, ``RpcServer`` (rpc_worker.py) runs the transcriptions and syntheses of realtime
calls and ``<Record>`` turns held by web nodes with ``voice_engines = "workers"``, up to
``rpc_concurrency`` at once and at the caller's priority: a live call's model work goes
before the WhatsApp turns this worker is answering.

Admission control: a turn that waited longer than ``worker_shed_seconds`` is answered in text
only (no speech synthesis), so an overloaded pool catches up instead of falling further
behind. The queue's depth and age are in Redis, so every web node exports them on /metrics.

SIGTERM drains: no new turns or model calls are taken, those in flight finish (up to
``worker_drain_seconds``), a turn left over stays pending and another worker retakes it (a
model call left over fails on its caller's side as ``<stage>-worker-lost``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time

from aiohttp import web

from voicebot.config import Settings
from voicebot.errors import ConfigError
from voicebot.metrics import Metrics
from voicebot.services import Services, build_services

__all__ = ["run_worker"]

_LOGGER = logging.getLogger(__name__)
_HEARTBEAT = 2.0


async def run_worker(
    settings: Settings,
    *,
    services: Services | None = None,
    port: int | None = None,
    stop: asyncio.Event | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``), then drain. ``services`` skips model loading."""
    if settings.backend != "redis":
        raise ConfigError(
            "voicebot worker needs the Redis backend (VOICEBOT_BACKEND=redis)",
            code="config-backend",
        )
    from voicebot.channels import close_runtime, open_runtime
    from voicebot.channels.delivery import Delivery
    from voicebot.scale.redis_store import RedisStore
    from voicebot.scale.rpc_worker import RpcServer

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics = services.metrics if services is not None else Metrics()
    ready = asyncio.Event()
    runner = await _serve_health(settings, metrics, ready, port) if port else None
    start = time.perf_counter()
    if services is None:
        local = settings.with_overrides(voice_engines="local")  # the env may be the web's
        services = await build_services(local, metrics=metrics)
        if settings.warm_models:
            await services.warm()
    rt = await open_runtime(settings, metrics)
    store = rt.store
    assert isinstance(store, RedisStore)
    services.pipeline.memory = store  # conversations are shared by every worker
    metrics.describe("voicebot_shed_total", "counter", "Turns answered text-only under load")
    metrics.gauge("voicebot_worker_busy", lambda: float(delivery.busy))
    delivery = Delivery(rt, services)
    delivery.start()
    rpc = RpcServer(settings, services, metrics, worker=store.consumer)
    rpc.start()
    ready.set()
    _LOGGER.info(
        "worker %s ready in %.1fs (device %s, %d turns and %d model calls at a time)",
        store.consumer,
        time.perf_counter() - start,
        settings.device,
        settings.channel_concurrency,
        settings.rpc_concurrency,
    )
    beat = asyncio.create_task(_heartbeat(store, delivery, metrics), name="heartbeat")
    try:
        await stop.wait()
        _LOGGER.info("draining: %d turn(s), %d model call(s) in flight", delivery.busy, rpc.busy)
        left, calls = await asyncio.gather(
            delivery.drain(settings.worker_drain_seconds), rpc.drain(settings.worker_drain_seconds)
        )
        if left:
            _LOGGER.warning("%d turn(s) left pending; another worker retakes them", left)
        if calls:
            _LOGGER.warning("%d model call(s) cut off; their callers get an error", calls)
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
        await rpc.close()
        await delivery.close()
        with contextlib.suppress(Exception):
            await store.leave()
        await close_runtime(rt)
        if runner is not None:
            await runner.cleanup()
    return 0


async def _heartbeat(store: object, delivery: object, metrics: Metrics) -> None:
    from voicebot.channels.delivery import Delivery
    from voicebot.scale.redis_store import RedisStore

    assert isinstance(store, RedisStore) and isinstance(delivery, Delivery)
    shed = 0
    while True:
        try:
            await store.heartbeat(delivery.busy)
            await store.count_pending()
        except Exception as err:  # Redis restarting: keep beating once it is back
            _LOGGER.warning("heartbeat failed: %s", err.__class__.__name__)
        if store.shed > shed:
            metrics.inc("voicebot_shed_total", store.shed - shed)
            shed = store.shed
        await asyncio.sleep(_HEARTBEAT)


async def _serve_health(
    settings: Settings, metrics: Metrics, ready: asyncio.Event, port: int
) -> web.AppRunner:
    """/healthz, /readyz and /metrics of the worker, for probes and Prometheus."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        status = 200 if ready.is_set() else 503
        return web.json_response({"status": "ready" if status == 200 else "loading"}, status=status)

    async def render(_: web.Request) -> web.Response:
        return web.Response(text=metrics.render(), content_type="text/plain", charset="utf-8")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", render)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, settings.host, port).start()
    return runner
