"""The aiohttp app factory, used by ``voicebot serve`` and by every HTTP test.

``create_app(settings)`` starts serving at once: ``/healthz`` answers immediately while the
models load and warm in the background; ``/readyz`` turns 200 only when they are ready, and
503 again once a stop has begun (``voicebot.drain``: channels register their drain steps on
``app[DRAIN]``). Tests may pass prebuilt ``services`` to skip loading.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from voicebot.appkeys import METRICS, SETTINGS, STATE, AppState, services_of
from voicebot.channels import setup_channels
from voicebot.config import Settings
from voicebot.console import setup_console
from voicebot.drain import DRAIN, Drain
from voicebot.errors import VoicebotError
from voicebot.metrics import Metrics
from voicebot.services import Services, build_services

__all__ = ["DRAIN", "METRICS", "SETTINGS", "STATE", "AppState", "create_app", "services_of"]

_LOGGER = logging.getLogger(__name__)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Coded errors become JSON with their code; anything unexpected is logged, never echoed."""
    metrics = request.app[METRICS]
    start = time.perf_counter()
    route = (
        request.match_info.route.resource.canonical if request.match_info.route.resource else "?"
    )
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except VoicebotError as err:
        status = 400
        metrics.inc("voicebot_errors_total", code=err.code)
        return web.json_response({"error": err.code}, status=400)
    except Exception:
        _LOGGER.exception("unhandled error on %s", route)
        metrics.inc("voicebot_errors_total", code="http-internal")
        return web.json_response({"error": "internal"}, status=500)
    finally:
        metrics.inc("voicebot_http_requests_total", route=route, status=str(status))
        metrics.observe("voicebot_http_seconds", time.perf_counter() - start, route=route)


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    if request.app[DRAIN].active:  # stopping: route new calls and webhooks elsewhere
        return web.json_response({"status": "draining"}, status=503)
    if state.ready.is_set():
        return web.json_response({"status": "ready"})
    body = {"status": "error" if state.load_error else "loading"}
    if state.load_error:
        body["error"] = state.load_error
    return web.json_response(body, status=503)


async def _metrics(request: web.Request) -> web.Response:
    return web.Response(
        text=request.app[METRICS].render(), content_type="text/plain", charset="utf-8"
    )


def create_app(settings: Settings, services: Services | None = None) -> web.Application:
    metrics = services.metrics if services is not None else Metrics()
    app = web.Application(middlewares=[_errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[STATE] = AppState(services=services)
    app[DRAIN] = Drain()
    metrics.describe("voicebot_stage_seconds", "histogram", "Pipeline stage latency in seconds")
    metrics.describe("voicebot_errors_total", "counter", "Errors by stable code")
    metrics.describe("voicebot_http_requests_total", "counter", "HTTP requests by route and status")
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    app.cleanup_ctx.append(_lifecycle)
    # Each mounts only when its secret is configured (fail closed) and logs why not.
    setup_channels(app, settings)
    setup_console(app, settings)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    state = app[STATE]
    loader: asyncio.Task[None] | None = None
    if state.services is not None:
        state.ready.set()
    else:
        loader = asyncio.create_task(_load(app), name="voicebot-load")
    yield
    if loader is not None and not loader.done():
        loader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loader
    if state.services is not None:
        await state.services.close()  # e.g. the RPC client's Redis connections


async def _load(app: web.Application) -> None:
    settings, state = app[SETTINGS], app[STATE]
    start = time.perf_counter()
    try:
        services = await build_services(settings, metrics=app[METRICS])
        if settings.warm_models:
            await services.warm()
    except asyncio.CancelledError:
        raise
    except Exception as err:
        code = err.code if isinstance(err, VoicebotError) else err.__class__.__name__
        state.load_error = code
        _LOGGER.exception("loading models failed (%s); /readyz stays 503", code)
        return
    state.services = services
    state.ready.set()
    _LOGGER.info("ready in %.1fs", time.perf_counter() - start)
