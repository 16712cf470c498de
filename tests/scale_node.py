"""A web node or worker process for tests/test_scale.py and tests/test_shutdown.py: the real
code with fake engines.

``python -m tests.scale_node web|worker`` reads the usual settings from the environment
(``VOICEBOT_*``, ``TWILIO_*``), swaps the model stages for the fakes of tests/fakes.py (the
only difference from ``voicebot serve`` / ``voicebot worker``: a web node runs the same
``voicebot.drain.serve``, so SIGTERM drains as in production) and runs. Test-only knobs:
``SCALE_TURN_DELAY`` (seconds each answer waits, like a GPU call), ``SCALE_TURN_CPU``
(seconds of CPU each answer burns while holding the event loop, like a model on one core),
``SCALE_ANSWER_SENTENCES`` (sentences per answer: a long spoken reply) and
``SCALE_TONE_PER_CHAR`` (seconds of synthesised tone per character of text).
"""

from __future__ import annotations

import asyncio
import faulthandler
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Sequence

from tests.fakes import ToneSynthesizer, fake_services
from voicebot.config import Settings
from voicebot.logs import setup_logging
from voicebot.messages import Answer, Exchange, Source
from voicebot.packs import LanguagePack

_LOGGER = logging.getLogger("tests.scale_node")


class EchoAnswerer:
    """Answers with the question, so the test can tell which message each reply answers."""

    name = "echo"

    def __init__(self, delay: float, cpu: float, sentences: int = 1) -> None:
        self.delay = delay
        self.cpu = cpu
        self.sentences = sentences

    async def answer(
        self,
        question: str,
        *,
        pack: LanguagePack,
        history: Sequence[Exchange] = (),
        pivot: bool = False,
    ) -> Answer:
        _LOGGER.info("answering %r", question)  # tests wait for this line: a turn in flight
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.cpu:
            end = time.process_time() + self.cpu
            while time.process_time() < end:
                pass
        source = Source("echo", "Echo", "https://example.gov.in", "2026-01-01")
        more = [f"This is sentence {i} of the answer." for i in range(2, self.sentences + 1)]
        text = " ".join([f"Echo: {question}." if more else f"Echo: {question}", *more])
        return Answer(text=text, language=pack.code, sources=(source,))


def _knob(name: str, default: str = "0") -> float:
    return float(os.environ.get(name, default))


async def _debuggable(main: Awaitable[int | None]) -> int:
    """Run ``main``; SIGUSR2 writes every asyncio task's stack to the log (SIGUSR1, through
    faulthandler, every thread's): what ``Node.stop`` asks for before it kills a hung node."""
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    loop = asyncio.get_running_loop()

    def dump() -> None:
        for task in asyncio.all_tasks(loop):
            task.print_stack(file=sys.stderr)

    loop.add_signal_handler(signal.SIGUSR2, dump)
    return await main or 0


def main(role: str) -> int:
    setup_logging(verbose=False)
    settings = Settings.load()
    answerer = EchoAnswerer(
        _knob("SCALE_TURN_DELAY"),
        _knob("SCALE_TURN_CPU"),
        int(_knob("SCALE_ANSWER_SENTENCES", "1")),
    )
    synthesizer = ToneSynthesizer(per_char=_knob("SCALE_TONE_PER_CHAR", "0.02"))
    services = fake_services(settings, answerer=answerer, synthesizer=synthesizer)  # type: ignore[arg-type]
    if role == "web":
        from voicebot.app import create_app
        from voicebot.drain import serve

        return asyncio.run(_debuggable(serve(create_app(settings, services), settings)))
    from voicebot.scale.worker import run_worker

    port = int(os.environ.get("SCALE_HEALTH_PORT", "0")) or None
    return asyncio.run(_debuggable(run_worker(settings, services=services, port=port)))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
