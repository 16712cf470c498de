"""``voicebot ask --lang CODE [--json] TEXT``: one question through the channels' pipeline."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("ask", help="answer one question (text path)")
    p.add_argument("--lang", required=True, help="language pack code, e.g. hi or hi-Latn")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.add_argument("text", nargs="+", help="the question")
    p.set_defaults(func=ask)


async def ask(args: argparse.Namespace) -> int:
    from voicebot.answering.format import format_text_reply, sources_json
    from voicebot.cli import load_settings
    from voicebot.services import build_services

    settings = load_settings(args)
    services = await build_services(settings, speech=False)
    question = " ".join(args.text)
    pack = services.packs.resolve(args.lang)
    answer = await services.pipeline.ask(question, lang=args.lang)
    if args.json:
        payload = {
            "lang": args.lang,
            "question": question,
            "answer": answer.text,
            "sources": sources_json(answer),
            "abstained": answer.abstained,
            "timings_ms": answer.timings_ms,
        }
        print(json.dumps(payload, ensure_ascii=False))
    else:
        print(format_text_reply(answer, pack))
    return 0
