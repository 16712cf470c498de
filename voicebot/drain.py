"""Graceful stop of ``voicebot serve`` (issues #7 and #8).

On SIGTERM or SIGINT the server does not close its listener at once (aiohttp's default);
it drains first, still listening:

1. ``/readyz`` answers 503 ``{"status": "draining"}`` from the first moment, so a load
   balancer or Kubernetes stops sending new calls and webhooks here. ``/healthz`` stays 200.
2. Every step registered with ``Drain.add`` runs at once against one deadline,
   ``Settings.drain_seconds`` away: live realtime calls go on (a new stream hears "busy"),
   background turns finish and their replies go out (``channels``). At the deadline the
   callers still on hear the pack's goodbye, at most ``FAREWELL_SECONDS``, and are hung up.
   Webhooks keep being accepted: what is acknowledged is persisted, and answered after the
   restart (embedded mode) or by the workers (scale mode).
3. Then the listener closes, HTTP requests still running get ``HTTP_CLOSE_SECONDS``, the
   app's cleanup runs and the process exits 0.

So a stop takes at most ``stop_budget(settings)``; deploy/ grace periods are set from it. A
second signal during the drain skips what is left of it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from voicebot.config import Settings

__all__ = [
    "DRAIN",
    "FAREWELL_SECONDS",
    "HTTP_CLOSE_SECONDS",
    "Drain",
    "serve",
    "stop_budget",
    "until",
]

_LOGGER = logging.getLogger(__name__)

FAREWELL_SECONDS = 5.0  # the goodbye phrase after the deadline (≈3 s in every pack)
HTTP_CLOSE_SECONDS = 4.0  # requests still running when the listener closes
_SLACK = 1.0  # steps overrunning the farewell by this much are given up on; exit itself

# A drain step gets the deadline on the event loop's clock and returns by then (+ farewell).
Step = Callable[[float], Awaitable[None]]


def stop_budget(settings: Settings) -> float:
    """The longest a stop takes after the signal: what grace periods must allow for."""
    return settings.drain_seconds + FAREWELL_SECONDS + HTTP_CLOSE_SECONDS + _SLACK


async def until(done: Callable[[], bool], deadline: float, *, step: float = 0.05) -> bool:
    """Poll ``done()`` until it is true (→ True) or the loop clock passes ``deadline``."""
    loop = asyncio.get_running_loop()
    while not done():
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(min(step, max(deadline - loop.time(), 0.0)))
    return True


class Drain:
    """The app's stop sequence: ``active`` from the signal on; the steps run concurrently."""

    def __init__(self) -> None:
        self.started: float | None = None  # loop time the drain began
        self._steps: list[tuple[str, Step]] = []

    @property
    def active(self) -> bool:
        return self.started is not None

    def add(self, name: str, step: Step) -> None:
        self._steps.append((name, step))

    async def run(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self.started = began = loop.time()
        deadline = began + seconds

        async def one(name: str, step: Step) -> None:
            try:
                await step(deadline)
            except Exception:  # one failing step must not keep the others from draining
                _LOGGER.exception("drain step %s failed", name)
            _LOGGER.info("drain: %s done after %.1fs", name, loop.time() - began)

        # A step that overruns its budget is a bug; the stop still ends in time.
        budget = seconds + FAREWELL_SECONDS + _SLACK
        try:
            async with asyncio.timeout(budget):
                await asyncio.gather(*(one(name, step) for name, step in self._steps))
        except TimeoutError:
            _LOGGER.error("drain overran %.1fs; stopping anyway", budget)


DRAIN = web.AppKey("drain", Drain)


async def serve(
    app: web.Application, settings: Settings, *, stop: asyncio.Event | None = None
) -> None:
    """Serve ``app`` on ``settings.host:port`` until SIGTERM/SIGINT (or ``stop``), then drain
    while still listening, then close (module docstring)."""
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    draining: list[asyncio.Task[None]] = []

    def on_signal(sig: signal.Signals) -> None:
        if draining and not draining[0].done():
            _LOGGER.warning("%s again: stopping without waiting for the drain", sig.name)
            draining[0].cancel()
        stop.set()

    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=HTTP_CLOSE_SECONDS)
    await runner.setup()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
        await stop.wait()
        _LOGGER.info("stopping: draining for up to %.0fs", settings.drain_seconds)
        draining.append(asyncio.create_task(app[DRAIN].run(settings.drain_seconds), name="drain"))
        await asyncio.wait(draining)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    _LOGGER.info("stopped")
