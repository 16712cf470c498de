"""``voicebot bench [--out FILE] [--quick] [--markdown FILE]``: the benchmark suite in one run.

Writes the JSON result to ``--out``, the Markdown table (machine, date, commit, command, every
figure beside its target) to ``--markdown`` and the latency-vs-concurrency plot next to it as
a PNG. ``--quick`` runs every section on tiny inputs (for tests); its numbers are not the
ones to publish. The sections live in ``voicebot.bench``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: Any) -> None:
    p: argparse.ArgumentParser = sub.add_parser(
        "bench", help="measure speed and memory against the raw libraries"
    )
    p.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON result file")
    p.add_argument(
        "--markdown",
        type=Path,
        default=Path("BENCHMARKS.md"),
        help="Markdown report (default BENCHMARKS.md); the PNG plot goes beside it",
    )
    p.add_argument(
        "--quick", action="store_true", help="tiny inputs, one repetition (about a minute)"
    )
    p.add_argument(
        "--questions",
        type=Path,
        default=None,
        help="gold JSONL of questions (default ../shared/eval/dev.jsonl, else a built-in list)",
    )
    p.set_defaults(func=run)


def _command(args: argparse.Namespace) -> str:
    parts = ["voicebot"]
    if getattr(args, "config", None):
        parts += ["--config", str(args.config)]
    parts += ["bench", "--out", str(args.out), "--markdown", str(args.markdown)]
    if args.quick:
        parts.append("--quick")
    if args.questions:
        parts += ["--questions", str(args.questions)]
    return " ".join(parts)


def plot_path(markdown: Path) -> Path:
    return markdown.with_name(f"{markdown.stem}-concurrency.png")


async def run(args: argparse.Namespace) -> int:
    from voicebot.bench import DEV_QUESTIONS, render_markdown, run_bench, with_plot
    from voicebot.cli import load_settings

    if not args.verbose:  # progress lines instead of a log line per pipeline stage
        logging.getLogger().setLevel(logging.WARNING)
    settings = load_settings(args)
    result = await run_bench(
        settings,
        quick=args.quick,
        questions_path=args.questions or DEV_QUESTIONS,
        config=getattr(args, "config", None),
        command=_command(args),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    png = with_plot(result)
    plot_name = None
    if png is not None:
        plot = plot_path(args.markdown)
        plot.parent.mkdir(parents=True, exist_ok=True)
        plot.write_bytes(png)
        plot_name = plot.name
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(render_markdown(result, plot_name), encoding="utf-8")
    missed = [f["key"] for f in result["figures"] if f["met"] is False]
    failed = [k for k, v in result["sections"].items() if v.get("status") == "error"]
    print(
        f"bench: {result['meta']['total_seconds']:.0f} s; wrote {args.out} and {args.markdown}"
        + (f"; targets missed: {', '.join(missed)}" if missed else "; all measured targets met")
        + (f"; sections failed: {', '.join(failed)}" if failed else ""),
        file=sys.stderr,
    )
    return 1 if failed else 0
