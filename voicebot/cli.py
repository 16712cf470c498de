"""``voicebot`` command line. Each subcommand lives in ``voicebot/commands/<name>.py``."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Sequence
from pathlib import Path

from voicebot import __version__, commands
from voicebot.config import Settings
from voicebot.errors import VoicebotError

__all__ = ["build_parser", "load_settings", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voicebot", description="Multilingual voice and WhatsApp assistant on local models."
    )
    parser.add_argument("--version", action="version", version=f"voicebot {__version__}")
    parser.add_argument("--config", type=Path, help="TOML settings file (env overrides it)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"voicebot.commands.{info.name}")
        module.register(sub)
    return parser


def load_settings(args: argparse.Namespace) -> Settings:
    return Settings.load(getattr(args, "config", None))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from voicebot.logs import setup_logging

    setup_logging(verbose=args.verbose)
    try:
        result = args.func(args)
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
    except VoicebotError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
