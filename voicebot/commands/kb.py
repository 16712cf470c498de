"""``voicebot kb check [DIR]``: validate the knowledge base, one line per problem."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("kb", help="knowledge base tools")
    ksub = p.add_subparsers(dest="kb_command", required=True, metavar="ACTION")
    ck = ksub.add_parser("check", help="validate knowledge files (every entry needs a source)")
    ck.add_argument("dir", type=Path, nargs="?", default=None, help="default: knowledge_dir")
    ck.set_defaults(func=check)


def check(args: argparse.Namespace) -> int:
    from voicebot.cli import load_settings
    from voicebot.knowledge import check_knowledge, load_knowledge

    directory: Path = args.dir or load_settings(args).knowledge_dir
    problems = check_knowledge(directory)
    for line in problems:
        print(line)
    if problems:
        return 1
    kb = load_knowledge(directory)
    print(f"{directory}: ok ({len(kb.schemes)} files, {len(kb)} entries)")
    return 0
