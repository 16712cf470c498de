"""``voicebot serve``: run the webhook server on the embedded defaults."""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

__all__ = ["register"]

_LOGGER = logging.getLogger(__name__)


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("serve", help="start the webhook server")
    p.add_argument("--host", help="bind address (default from settings: 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default from settings: 8080)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from voicebot.app import create_app
    from voicebot.cli import load_settings
    from voicebot.drain import serve

    settings = load_settings(args)
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if overrides:
        settings = settings.with_overrides(**overrides)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    app = create_app(settings)
    _LOGGER.info(
        "serving on http://%s:%d (public URL %s)", settings.host, settings.port, settings.public_url
    )
    # SIGTERM/SIGINT drain live calls and turns for up to settings.drain_seconds, then exit 0.
    asyncio.run(serve(app, settings))
    return 0
