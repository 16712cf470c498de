"""A web node or worker process for tests/test_scale.py: the real code with fake engines.

``python -m tests.scale_node web|worker`` reads the usual settings from the environment
(``VOICEBOT_*``, ``TWILIO_*``), swaps the model stages for the fakes of tests/fakes.py (the
only difference from ``voicebot serve`` / ``voicebot worker``) and runs. Test-only knobs:
``SCALE_TURN_DELAY`` (seconds each answer waits, like a GPU call) and ``SCALE_TURN_CPU``
(seconds of CPU each answer burns while holding the event loop, like a model on one core).
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Sequence

from aiohttp import web

from tests.fakes import fake_services
from voicebot.config import Settings
from voicebot.logs import setup_logging
from voicebot.messages import Answer, Exchange, Source
from voicebot.packs import LanguagePack


class EchoAnswerer:
    """Answers with the question, so the test can tell which message each reply answers."""

    name = "echo"

    def __init__(self, delay: float, cpu: float) -> None:
        self.delay = delay
        self.cpu = cpu

    async def answer(
        self,
        question: str,
        *,
        pack: LanguagePack,
        history: Sequence[Exchange] = (),
        pivot: bool = False,
    ) -> Answer:
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.cpu:
            end = time.process_time() + self.cpu
            while time.process_time() < end:
                pass
        source = Source("echo", "Echo", "https://example.gov.in", "2026-01-01")
        return Answer(text=f"Echo: {question}", language=pack.code, sources=(source,))


def main(role: str) -> int:
    setup_logging(verbose=False)
    settings = Settings.load()
    answerer = EchoAnswerer(
        float(os.environ.get("SCALE_TURN_DELAY", "0")), float(os.environ.get("SCALE_TURN_CPU", "0"))
    )
    services = fake_services(settings, answerer=answerer)  # type: ignore[arg-type]
    if role == "web":
        from voicebot.app import create_app

        app = create_app(settings, services)
        web.run_app(app, host=settings.host, port=settings.port, shutdown_timeout=5, print=None)
        return 0
    from voicebot.scale.worker import run_worker

    port = int(os.environ.get("SCALE_HEALTH_PORT", "0")) or None
    return asyncio.run(run_worker(settings, services=services, port=port))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
