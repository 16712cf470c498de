"""Typed keys for the state shared through the aiohttp app (no imports of channels here).

Channels, the console and the app factory all import these, so this module must stay free
of imports from them (it breaks what would otherwise be an import cycle).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from aiohttp import web

from voicebot.config import Settings
from voicebot.metrics import Metrics
from voicebot.services import Services

__all__ = ["METRICS", "SETTINGS", "STATE", "AppState", "services_of"]


@dataclass
class AppState:
    """Mutable process state: readiness and the services once they are built."""

    services: Services | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    load_error: str | None = None
    started: float = field(default_factory=time.monotonic)


SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
STATE = web.AppKey("state", AppState)


def services_of(request: web.Request) -> Services:
    """The loaded services, or 503 while models are still loading."""
    state = request.app[STATE]
    if state.services is None or not state.ready.is_set():
        raise web.HTTPServiceUnavailable(
            text='{"status":"loading"}', content_type="application/json"
        )
    return state.services
