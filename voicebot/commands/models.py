"""``voicebot models prepare|list|pull``: the model cache."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("models", help="prepare, list and pull models")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    prep = msub.add_parser("prepare", help="make the models shipped as packages usable (once)")
    prep.set_defaults(func=prepare)
    ls = msub.add_parser("list", help="installed models and the catalogue of pullable ones")
    ls.set_defaults(func=list_models)
    pull = msub.add_parser("pull", help="download a named model into the cache")
    pull.add_argument("name", help="a catalogue name (see `voicebot models list`)")
    pull.add_argument("--base-url", help="model server (default: settings model_base_url)")
    pull.set_defaults(func=pull_model)


def prepare(args: argparse.Namespace) -> int:
    from voicebot.cli import load_settings
    from voicebot.models import prepare_packaged

    settings = load_settings(args)
    for name, path in sorted(prepare_packaged(settings.models_path).items()):
        print(f"{name}: {path}")
    return 0


def list_models(args: argparse.Namespace) -> int:
    from voicebot.cli import load_settings
    from voicebot.models import MODEL_CATALOGUE, installed

    settings = load_settings(args)
    have = installed(settings.models_path)
    print("installed:")
    for name, path in sorted(have.items()):
        print(f"  {name}: {path}")
    print("pullable:")
    for name in sorted(MODEL_CATALOGUE):
        print(f"  {name}{'  (installed)' if name in have else ''}")
    return 0


async def pull_model(args: argparse.Namespace) -> int:
    from voicebot.cli import load_settings
    from voicebot.models import pull

    settings = load_settings(args)
    path = await pull(
        args.name, settings.models_path, base_url=args.base_url or settings.model_base_url
    )
    print(f"{args.name}: {path}")
    return 0
