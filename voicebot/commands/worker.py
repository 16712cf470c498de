"""``voicebot worker``: an inference worker for scale mode (``VOICEBOT_BACKEND=redis``)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "worker", help="answer turns from Redis (scale mode; see docs/scaling.md)"
    )
    p.add_argument(
        "--port", type=int, default=8081, help="health and metrics port (0: none; default 8081)"
    )
    p.add_argument("--host", help="bind address of the health port (default from settings)")
    p.set_defaults(func=run)


async def run(args: argparse.Namespace) -> int:
    from voicebot.cli import load_settings
    from voicebot.scale.worker import run_worker

    settings = load_settings(args)
    if args.host:
        settings = settings.with_overrides(host=args.host)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return await run_worker(settings, port=args.port or None)
