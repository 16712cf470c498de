"""``run_bench``: every section in order, each timed and guarded, into one JSON-able result."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from voicebot.bench.answers import bench_answers
from voicebot.bench.asr import bench_asr
from voicebot.bench.core import (
    Budget,
    Log,
    Plan,
    cpu_busy_seconds,
    git_commit,
    machine,
    own_cpu_seconds,
    proc_status,
    versions,
)
from voicebot.bench.figures import SCHEMA, TARGETS, Report
from voicebot.bench.inputs import DEV_QUESTIONS, librivox_clip, read_questions
from voicebot.bench.realtime import bench_realtime
from voicebot.bench.scale import bench_scale
from voicebot.bench.serve import bench_serve
from voicebot.bench.tts import bench_tts
from voicebot.bench.voice import bench_concurrency, bench_voice_turn
from voicebot.config import Settings

__all__ = ["run_bench"]

_LOGGER = logging.getLogger(__name__)


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _section(
    report: Report, name: str, make: Callable[[], Awaitable[dict[str, Any]]], log: Log
) -> None:
    start, busy, own = time.perf_counter(), cpu_busy_seconds(), own_cpu_seconds()
    try:
        detail = await make()
    except Exception as err:
        _LOGGER.exception("bench section %s failed", name)
        log(f"{name}: FAILED: {err.__class__.__name__}: {err}")
        detail = {"status": "error", "error": f"{err.__class__.__name__}: {err}"[:2000]}
    detail.setdefault("status", "measured")
    wall = time.perf_counter() - start
    detail["section_seconds"] = round(wall, 2)
    others = (cpu_busy_seconds() - busy) - (own_cpu_seconds() - own)
    detail["other_processes_cpu_cores"] = round(max(0.0, others) / wall, 2) if wall else 0.0
    report.sections[name] = detail


async def run_bench(
    settings: Settings,
    *,
    quick: bool = False,
    questions_path: Path | None = DEV_QUESTIONS,
    config: Path | None = None,
    command: str = "voicebot bench",
    log: Log = _stderr_log,
) -> dict[str, Any]:
    """Run every section in this process (plus the child processes some need); JSON-able."""
    from voicebot.services import build_services

    plan = Plan.for_run(quick)
    budget = Budget(plan.budget_s)
    wall0, busy0, own0 = time.perf_counter(), cpu_busy_seconds(), own_cpu_seconds()
    load0 = os.getloadavg()
    started = datetime.now(UTC)
    report = Report()
    log("setup: build_services (packs, knowledge index, speech engines)")
    t0 = time.perf_counter()
    services = await build_services(settings)
    setup_s = time.perf_counter() - t0
    questions, source = read_questions(questions_path, services.packs, plan.max_questions)
    clip = librivox_clip(plan.clip_ids)
    measure0 = time.perf_counter()

    await _section(
        report, "answers", lambda: bench_answers(report, services, plan, questions, log), log
    )
    report.sections["answers"]["source"] = source
    await _section(
        report, "asr", lambda: bench_asr(report, services, settings, plan, clip, log), log
    )
    await _section(report, "tts", lambda: bench_tts(report, services, settings, plan, log), log)
    await _section(
        report, "voice_turn", lambda: bench_voice_turn(report, services, settings, plan, log), log
    )
    await _section(
        report, "serve", lambda: bench_serve(report, settings, plan, questions, config, log), log
    )
    await _section(
        report,
        "scale",
        lambda: bench_scale(report, settings, plan, questions, config, budget, log),
        log,
    )
    await _section(
        report, "realtime", lambda: bench_realtime(report, services, plan, budget, log), log
    )
    await _section(
        report,
        "concurrency",
        lambda: bench_concurrency(report, services, settings, plan, questions, budget, log),
        log,
    )
    wall = time.perf_counter() - wall0
    others = max(0.0, (cpu_busy_seconds() - busy0) - (own_cpu_seconds() - own0))
    for key, spec in TARGETS.items():  # every targeted figure appears, measured or not
        if spec.target is not None and key not in report.figures:
            if key.startswith("asr.tiny.en") and "tiny.en" not in plan.asr_models:
                continue
            report.figure(key, None, note="not measured")
    return {
        "schema": SCHEMA,
        "meta": {
            "date": started.isoformat(timespec="seconds"),
            "command": command,
            "quick": quick,
            "machine": machine(),
            "git": git_commit(),
            "versions": versions(),
            "settings": {
                "device": settings.device,
                "cpu_threads": settings.cpu_threads,
                "asr_workers": settings.asr_workers,
                "default_whisper": settings.default_whisper,
                "answerer": settings.answerer,
            },
            "setup_seconds": round(setup_s, 2),
            "measure_seconds": round(time.perf_counter() - measure0, 2),
            "total_seconds": round(wall, 2),
            "loadavg_start": [round(x, 2) for x in load0],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "other_processes_cpu_cores": round(others / wall, 2) if wall else 0.0,
            "peak_rss_mb": proc_status().get("VmHWM"),
            "budget_seconds": plan.budget_s,
            "skipped_for_time": budget.skipped,
        },
        "sections": report.sections,
        "figures": [f.to_json() for f in report.figures.values()],
    }
