"""``voicebot eval GOLD.jsonl --out ANSWERS.jsonl``: answer a gold file, summarise per language.

Each gold line (``{"id","lang","question",...}``) is answered independently through the same
pipeline as ``ask``; the output keeps the gold order, one ``{"id","lang","answer","sources",
"latency_ms"}`` per line, where ``answer`` is what a text channel would send (body, then
sources). When gold lines carry ``must_include`` the summary adds the pass rate per language
(``voicebot.scoring``, the shared scorer's rules).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["percentile", "register", "run_eval", "summarise"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser("eval", help="answer a gold JSONL file")
    p.add_argument("gold", type=Path, help="gold JSONL: one {id, lang, question, ...} per line")
    p.add_argument("--out", type=Path, required=True, help="answers JSONL to write")
    p.set_defaults(func=main)


def percentile(values: Iterable[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def read_gold(path: Path) -> list[dict[str, Any]]:
    rows = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            if not isinstance(row, dict) or not {"id", "lang", "question"} <= set(row):
                raise ValueError(f"{path}:{number}: needs id, lang and question")
            rows.append(row)
    return rows


async def run_eval(pipeline: Any, gold: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answer every gold line in order; returns the answer rows (plus ``abstained``)."""
    from voicebot.answering.format import format_text_reply, sources_json

    rows = []
    for item in gold:
        pack = pipeline.packs.resolve(item["lang"])
        start = time.perf_counter()
        answer = await pipeline.ask(item["question"], lang=item["lang"])
        latency = (time.perf_counter() - start) * 1000
        rows.append(
            {
                "id": item["id"],
                "lang": item["lang"],
                "answer": format_text_reply(answer, pack),
                "sources": sources_json(answer),
                "latency_ms": round(latency, 2),
                "abstained": answer.abstained,
            }
        )
    return rows


def summarise(gold: list[dict[str, Any]], rows: list[dict[str, Any]]) -> list[str]:
    """One line per language (count, pass rate when scorable, abstentions, p50/p95 ms)."""
    from voicebot.scoring import passes

    by_lang: dict[str, list[tuple[Mapping[str, Any], dict[str, Any]]]] = defaultdict(list)
    for item, row in zip(gold, rows, strict=True):
        by_lang[item["lang"]].append((item, row))
    lines = []
    total_pass = total_scored = 0
    for lang in sorted(by_lang):
        pairs = by_lang[lang]
        verdicts = [passes(g, r["answer"]) for g, r in pairs]
        scored = [v for v in verdicts if v is not None]
        latencies = [r["latency_ms"] for _, r in pairs]
        rate = (
            f"  pass {sum(scored)}/{len(scored)} = {sum(scored) / len(scored):.0%}"
            if scored
            else ""
        )
        total_pass += sum(scored)
        total_scored += len(scored)
        abstained = sum(1 for _, r in pairs if r["abstained"])
        lines.append(
            f"{lang:8s} n={len(pairs):3d}{rate}  abstained={abstained}"
            f"  p50={percentile(latencies, 50):.0f}ms p95={percentile(latencies, 95):.0f}ms"
        )
    all_ms = [r["latency_ms"] for r in rows]
    overall = (
        f"  pass {total_pass}/{total_scored} = {total_pass / total_scored:.1%}"
        if total_scored
        else ""
    )
    lines.append(
        f"{'all':8s} n={len(rows):3d}{overall}"
        f"  p50={percentile(all_ms, 50):.0f}ms p95={percentile(all_ms, 95):.0f}ms"
    )
    return lines


async def main(args: argparse.Namespace) -> int:
    from voicebot.cli import load_settings
    from voicebot.services import build_services

    try:
        gold = read_gold(args.gold)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    services = await build_services(load_settings(args), speech=False)
    rows = await run_eval(services.pipeline, gold)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for row in rows:
            public = {k: row[k] for k in ("id", "lang", "answer", "sources", "latency_ms")}
            f.write(json.dumps(public, ensure_ascii=False) + "\n")
    for line in summarise(gold, rows):
        print(line)
    return 0
