"""Realtime calls: simulated Media Streams callers (``caller``) against ``CallSession``s.

Level by level (1, 2, 4, 8 calls at once, started a little apart), every caller hears the
greeting, asks the ~5 s question and barges in on each answer but the last by asking again.
The single call asks most often: its reply latencies give the p50/p95 figures, its barge-ins
the ``clear`` figure. A level is *answered* when every question of every call was transcribed
and answered, every barge-in got a ``clear`` and no pause inside the bot's speech was dead air;
it is *within the targets* when, on top of that, its reply p50, worst greeting and worst
``clear`` meet the targets of the single-call figures.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from voicebot.bench.caller import GAP, Question, answered, call
from voicebot.bench.core import Budget, Log, Plan, percentile
from voicebot.bench.figures import TARGETS, Report
from voicebot.bench.inputs import VOICE_QUESTION
from voicebot.services import Services

__all__ = ["bench_realtime"]

# The figures a level must meet to count as sustained "within the targets".
_BOUNDS = ("realtime.reply_p50_s", "realtime.greeting_ms", "realtime.clear_ms")


def _worst(values: list[float], scale: float = 1.0) -> float | None:
    return round(max(values) * scale, 4) if values else None


def _level(level: int, calls: list[dict[str, Any]]) -> dict[str, Any]:
    """One level's verdicts and latencies (the session's own timings)."""
    replies = [s for c in calls for s in c["line_reply_s"]]
    greetings = [c["line_greeting_s"] for c in calls if c["line_greeting_s"] is not None]
    clears = [s for c in calls for s in c["line_clear_s"] if s is not None]
    own = {  # the session's own timings, as its metrics report them
        what: [s for c in calls for s in c[f"{what}_latency_s"]]
        for what in ("reply", "greeting", "clear")
    }
    gaps = sum(len(c["reply_gaps"]) + c["greeting_gaps"] for c in calls)
    done = answered(calls)
    out: dict[str, Any] = {
        "calls": level,
        "asks_per_call": calls[0]["asks"] if calls else 0,
        "answered": done,
        "dead_air_gaps": gaps,
        "replies": len(replies),
        "reply_p50_s": round(percentile(replies, 50), 4) if replies else None,
        "reply_p95_s": round(percentile(replies, 95), 4) if replies else None,
        "reply_max_s": _worst(replies),
        "greeting_max_ms": _worst(greetings, 1000),
        "barge_ins": sum(len(c["line_clear_s"]) for c in calls),
        "cleared": len(clears),
        "clear_p50_ms": round(percentile(clears, 50) * 1000, 1) if clears else None,
        "clear_max_ms": _worst(clears, 1000),
        "session_reply_p50_s": round(percentile(own["reply"], 50), 4) if own["reply"] else None,
        "session_greeting_max_ms": _worst(own["greeting"], 1000),
        "session_clear_max_ms": _worst(own["clear"], 1000),
        "answered_all": done == level and gaps == 0,
        "detail": calls,
    }
    values = {
        "realtime.reply_p50_s": out["reply_p50_s"],
        "realtime.greeting_ms": out["greeting_max_ms"],
        "realtime.clear_ms": out["clear_max_ms"],
    }
    out["within_targets"] = out["answered_all"] and all(_meets(key, values[key]) for key in _BOUNDS)
    return out


def _meets(key: str, value: float | None) -> bool:
    target = TARGETS[key].target
    return value is not None and (target is None or target.met(value))


async def bench_realtime(
    report: Report, services: Services, plan: Plan, budget: Budget, log: Log
) -> dict[str, Any]:
    """Simulated Media Streams callers against ``CallSession``s, level by level."""
    from voicebot import audio
    from voicebot.realtime import RealtimeConfig, SessionFactory

    config = None
    if plan.quick:  # a short greeting keeps the smoke test short; the full run uses the real one
        config = RealtimeConfig(greeting_phrase="please_wait")
    factory = SessionFactory(services, config)
    en = services.packs.resolve("en")
    log("realtime: pre-synthesising the phrase cache")
    await factory.warm([en])
    spoken = await services.pipeline.speak(VOICE_QUESTION, lang=en.code)
    question = Question.from_ulaw(audio.encode_ulaw(spoken))
    levels: list[dict[str, Any]] = []
    last = 0.0
    for level in plan.realtime_levels:
        if levels and not budget.allows(f"{level} realtime calls", 1.3 * last):
            break
        asks = plan.realtime_asks_first if not levels else plan.realtime_asks
        log(f"realtime: {level} simulated call(s), {asks} question(s) each")
        began = time.perf_counter()
        calls = await asyncio.gather(
            *(
                call(
                    factory,
                    1000 * level + i,
                    question,
                    asks=asks,
                    barge_after=plan.realtime_barge_after_s,
                    listen=plan.realtime_listen_s,
                    delay=i * plan.realtime_stagger_s,
                )
                for i in range(level)
            )
        )
        last = time.perf_counter() - began
        levels.append(_level(level, list(calls)))
    _figures(report, levels, budget)
    return {
        "question_seconds": round(question.seconds, 2),
        "criterion": "every question of every call transcribed and answered, every barge-in "
        f"cleared, no pause over {GAP} s inside the bot's speech (dead air)",
        "greeting_phrase": factory.config.greeting_phrase,
        "stagger_s": plan.realtime_stagger_s,
        "barge_after_s": plan.realtime_barge_after_s,
        "listen_s": plan.realtime_listen_s,
        "levels": levels,
        "skipped_for_time": [w for w in budget.skipped if "realtime" in w],
    }


def _figures(report: Report, levels: list[dict[str, Any]], budget: Budget) -> None:
    if levels:
        one = levels[0]
        replies = f"{one['replies']} replies" if one["replies"] else "not measured: no reply"
        report.figure("realtime.reply_p50_s", one["reply_p50_s"], note=replies)
        report.figure("realtime.reply_p95_s", one["reply_p95_s"], note=replies)
        report.figure("realtime.greeting_ms", one["greeting_max_ms"])
        missed = one["barge_ins"] - one["cleared"]
        clears = f"worst of {one['cleared']}" if one["cleared"] else "not measured: no clear"
        if missed:
            clears += f"; {missed} of {one['barge_ins']} barge-ins got no clear"
        report.figure("realtime.clear_ms", one["clear_max_ms"], note=clears)
    skipped = [w for w in budget.skipped if "realtime" in w]
    tried = max((lv["calls"] for lv in levels), default=0)
    note = f"highest level tried: {tried}" + (" (time budget)" if skipped else "")
    report.figure("realtime.calls", _sustained(levels, "within_targets"), note=note)
    report.figure("realtime.calls_answered", _sustained(levels, "answered_all"), note=note)


def _sustained(levels: list[dict[str, Any]], verdict: str) -> int:
    """The most calls at once for which that level and every lower one held."""
    best = 0
    for lv in levels:
        if not lv[verdict]:
            break
        best = lv["calls"]
    return best
