"""Channels: Twilio voice, Twilio WhatsApp and Meta WhatsApp Cloud API on the aiohttp app.

``setup_channels`` mounts a provider's routes only when its secrets are configured (fail
closed: an unmounted route answers 404 and the log says which variables are missing) and
always mounts ``GET /media/{token}``. With a channel mounted, start-up opens the SQLite
store, then — once the
models are ready — makes the store the pipeline's conversation memory, starts the inbox and
outbox workers (which resume whatever a previous process left unfinished) and synthesises
the voice prompts. When the process stops (voicebot/drain.py) the messages being answered
finish and the replies due go out; what was accepted but not started stays in the inbox for
the next start (embedded) or for the workers (scale mode).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from voicebot.appkeys import METRICS, SETTINGS, STATE
from voicebot.channels import meta_whatsapp, twilio_voice, twilio_whatsapp
from voicebot.channels.delivery import Delivery
from voicebot.channels.draining import TrackedSender, drain_background
from voicebot.channels.media import respond_media
from voicebot.channels.prompts import Prompts
from voicebot.channels.runtime import RUNTIME, Runtime
from voicebot.config import Settings
from voicebot.drain import DRAIN
from voicebot.errors import PackError
from voicebot.memory import Memory
from voicebot.metrics import Metrics
from voicebot.priority import Priority, priority

__all__ = ["RUNTIME", "Runtime", "close_runtime", "open_runtime", "setup_channels"]

_LOGGER = logging.getLogger(__name__)


def _mount_stream(app: web.Application, settings: Settings) -> None:
    """Realtime calls share the caller's conversation (user key) with WhatsApp and turns."""
    from voicebot.channels.runtime import RUNTIME
    from voicebot.channels.twilio_stream import setup_stream
    from voicebot.realtime.config import CallInfo, Hooks

    async def conversation(call: CallInfo) -> str:
        state = await app[RUNTIME].store.call(call.call_sid)
        return str(state["user"]) if state and state.get("user") else f"call:{call.call_sid}"

    setup_stream(app, settings, hooks=Hooks(conversation=conversation))


def _a_pack_wants_realtime(app: web.Application, settings: Settings) -> bool:
    """A pack may choose realtime calls in a turn-based deployment (``[realtime] voice_mode``).
    The packs of services already built are used; otherwise (``serve``, whose models load
    after start-up) they are read here, once, before the routes are fixed."""
    services = app[STATE].services
    if services is not None:
        packs = services.packs
    else:
        from voicebot.packs import load_packs

        try:
            packs = load_packs(settings.languages_dir)
        except PackError:
            return False  # the app reports broken packs when it loads them
    return any(p.voice_mode == "realtime" for p in packs.enabled)


def setup_channels(app: web.Application, settings: Settings) -> None:
    """Mount the configured channels and their start-up/shutdown; called by ``create_app``."""
    if settings.twilio.enabled:
        twilio_voice.add_routes(app)
        twilio_whatsapp.add_routes(app)
        if settings.voice_mode == "realtime" or _a_pack_wants_realtime(app, settings):
            _mount_stream(app, settings)
    else:
        missing = _missing(
            TWILIO_ACCOUNT_SID=settings.twilio.account_sid,
            TWILIO_AUTH_TOKEN=settings.twilio.auth_token,
        )
        _LOGGER.warning("Twilio voice and WhatsApp are not mounted: %s not set", missing)
    if settings.meta.enabled:
        meta_whatsapp.add_routes(app)
    else:
        meta = settings.meta
        missing = _missing(
            META_APP_SECRET=meta.app_secret,
            META_VERIFY_TOKEN=meta.verify_token,
            META_ACCESS_TOKEN=meta.access_token,
        )
        _LOGGER.warning("Meta WhatsApp Cloud API is not mounted: %s not set", missing)
    app.router.add_get("/media/{token}", _media)
    if settings.twilio.enabled or settings.meta.enabled:
        app.cleanup_ctx.append(_lifecycle)  # no channel, no state: nothing is written to disk
    metrics = app[METRICS]
    metrics.describe(
        "voicebot_webhook_ack_seconds", "histogram", "Time to acknowledge a webhook, by route"
    )
    metrics.describe("voicebot_inbox_pending", "gauge", "Accepted messages not answered yet")
    metrics.describe("voicebot_outbox_pending", "gauge", "Replies not delivered yet")
    metrics.describe("voicebot_outbound_total", "counter", "Provider sends by outcome")
    metrics.describe("voicebot_turns_total", "counter", "Answered messages and turns by outcome")


def _missing(**values: str) -> str:
    return " and ".join(name for name, value in values.items() if not value)


async def _media(request: web.Request) -> web.StreamResponse:
    rt = request.app.get(RUNTIME)
    if rt is None:
        raise web.HTTPNotFound()
    return await respond_media(rt.media, request.match_info["token"])


async def open_runtime(settings: Settings, metrics: Metrics) -> Runtime:
    """The channel runtime on ``settings.backend`` (SQLite or Redis), with senders and
    fetchers for the configured providers; ``close_runtime`` releases it."""
    from voicebot.scale import open_backend

    store, media, limiter = await open_backend(settings)
    session = aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.http_timeout_seconds)
    )
    rt = Runtime(
        settings=settings,
        metrics=metrics,
        store=store,
        media=media,
        http=session,
        limiter=limiter,
        prompts=Prompts(media, settings.data_dir / "prompts"),
    )
    if settings.twilio.enabled:
        rt.senders[twilio_whatsapp.CHANNEL] = TrackedSender(
            twilio_whatsapp.TwilioSender(session, settings.twilio, media)
        )
        rt.fetchers[twilio_whatsapp.CHANNEL] = twilio_whatsapp.TwilioFetcher(session, settings)
    if settings.meta.enabled:
        rt.senders[meta_whatsapp.CHANNEL] = TrackedSender(
            meta_whatsapp.MetaSender(session, settings.meta, media)
        )
        rt.fetchers[meta_whatsapp.CHANNEL] = meta_whatsapp.MetaFetcher(session, settings)
    metrics.gauge("voicebot_inbox_pending", lambda: float(store.pending[0]))
    metrics.gauge("voicebot_outbox_pending", lambda: float(store.pending[1]))
    if settings.backend == "redis":
        from voicebot.scale.redis_store import RedisStore

        assert isinstance(store, RedisStore)
        metrics.describe("voicebot_queue_depth", "gauge", "Turns waiting or in flight (Redis)")
        metrics.describe(
            "voicebot_queue_oldest_seconds", "gauge", "Age of the oldest unanswered turn"
        )
        metrics.describe("voicebot_workers_alive", "gauge", "Workers with a fresh heartbeat")
        metrics.gauge("voicebot_queue_depth", lambda: float(store.stats.depth))
        metrics.gauge("voicebot_queue_oldest_seconds", lambda: store.stats.oldest_seconds)
        metrics.gauge("voicebot_workers_alive", lambda: float(store.stats.workers))
    await store.count_pending()
    return rt


async def close_runtime(rt: Runtime) -> None:
    await rt.jobs.close()
    await rt.http.close()
    await rt.store.close()


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    rt = await open_runtime(app[SETTINGS], app[METRICS])
    app[RUNTIME] = rt
    started: list[Delivery] = []
    restore: list[Memory] = []
    app[DRAIN].add("background turns", lambda deadline: drain_background(rt, started, deadline))
    starter = asyncio.create_task(_when_ready(app, rt, started, restore), name="channels-start")
    try:
        yield
    finally:
        starter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starter
        for delivery in started:
            await delivery.close()
        state = app[STATE]
        if restore and state.services is not None:
            state.services.pipeline.memory = restore[0]
        await close_runtime(rt)


async def _when_ready(
    app: web.Application, rt: Runtime, started: list[Delivery], restore: list[Memory]
) -> None:
    state = app[STATE]
    await state.ready.wait()
    services = state.services
    if services is None:
        return
    # One memory for every channel and process: conversations survive restarts and a
    # caller's last topic is there when they write on WhatsApp.
    restore.append(services.pipeline.memory)
    services.pipeline.memory = rt.store
    # Scale mode: workers answer (``voicebot worker``); this web node only sends.
    delivery = Delivery(rt, services, inbox=rt.settings.backend == "sqlite")
    started.append(delivery)
    delivery.start()
    rt.workers.set()
    if rt.settings.twilio.enabled:
        default = services.packs.resolve(rt.settings.default_language)
        packs = {p.code: p for p in (default, *twilio_voice.voice_packs(services.packs))}
        # Languages without a recogniser: a call only ever plays their `text_only` phrase.
        text_only = [p for p in services.packs.enabled if not p.can_listen]
        with priority(Priority.BULK):  # never ahead of a live call's model work
            await rt.prompts.warm(services.pipeline, packs.values(), text_only)
