"""Answers: ``Pipeline.ask`` latency over the dev questions, and their pass rate with the
scorer ``voicebot eval`` uses (when the gold lines carry ``must_include``)."""

from __future__ import annotations

import importlib.util
from typing import Any

from voicebot.bench.core import Log, Plan, percentile, timed
from voicebot.bench.figures import Report
from voicebot.services import Services

__all__ = ["bench_answers"]


async def bench_answers(
    report: Report, services: Services, plan: Plan, questions: list[dict[str, Any]], log: Log
) -> dict[str, Any]:
    from voicebot.answering.format import format_text_reply

    pipeline = services.pipeline
    log(f"answers: {len(questions)} questions × {plan.answer_reps}")
    first = questions[0]
    cold, _ = await timed(lambda: pipeline.ask(first["question"], lang=first["lang"]))
    report.figure("answers.first_ms", cold * 1000)
    latencies: list[float] = []
    retrieve: list[float] = []
    compose: list[float] = []
    by_lang: dict[str, list[float]] = {}
    replies: dict[str, str] = {}
    abstained = 0
    for rep in range(plan.answer_reps):
        for item in questions:
            seconds, answer = await timed(
                lambda item=item: pipeline.ask(item["question"], lang=item["lang"])  # type: ignore[misc]
            )
            ms = seconds * 1000
            latencies.append(ms)
            by_lang.setdefault(item["lang"], []).append(ms)
            retrieve.append(answer.timings_ms.get("retrieve", 0.0))
            compose.append(answer.timings_ms.get("compose", 0.0))
            if rep == 0:
                pack = services.packs.resolve(item["lang"])
                replies[str(item.get("id", item["question"]))] = format_text_reply(answer, pack)
                abstained += bool(answer.abstained)
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    report.figure("answers.p50_ms", p50)
    report.figure("answers.p95_ms", p95)
    out: dict[str, Any] = {
        "questions": len(questions),
        "reps": plan.answer_reps,
        "first_ms": round(cold * 1000, 2),
        "p50_ms": round(p50, 2),
        "p95_ms": round(p95, 2),
        "max_ms": round(max(latencies), 2),
        "retrieve_p50_ms": round(percentile(retrieve, 50), 2),
        "compose_p50_ms": round(percentile(compose, 50), 3),
        "abstained": abstained,
        "by_language": {
            lang: {"n": len(v), "p50_ms": round(percentile(v, 50), 2)}
            for lang, v in sorted(by_lang.items())
        },
        "answerer": services.answerer.name,
    }
    out["accuracy"] = _accuracy(report, questions, replies)
    return out


def _accuracy(
    report: Report, questions: list[dict[str, Any]], replies: dict[str, str]
) -> dict[str, Any]:
    """Pass rate by the gold ``must_include`` rules, with the scorer ``voicebot eval`` uses."""
    if not any("must_include" in q for q in questions):
        return {"status": "not measured", "reason": "the questions carry no must_include rules"}
    if importlib.util.find_spec("voicebot.scoring") is None:
        return {"status": "not measured", "reason": "no scorer module (voicebot.scoring)"}
    from voicebot.scoring import passes

    per_lang: dict[str, list[bool]] = {}
    for q in questions:
        verdict = passes(q, replies[str(q.get("id", q["question"]))])
        if verdict is not None:
            per_lang.setdefault(q["lang"], []).append(bool(verdict))
    total = [v for vs in per_lang.values() for v in vs]
    if not total:
        return {"status": "not measured", "reason": "no scorable gold lines"}
    rate = 100 * sum(total) / len(total)
    report.figure("answers.pass_rate", rate, note="voicebot.scoring, as `voicebot eval`")
    return {
        "scorer": "voicebot.scoring.passes (as used by `voicebot eval`)",
        "pass_rate_pct": round(rate, 1),
        "by_language": {
            lang: {"passed": sum(v), "n": len(v), "pct": round(100 * sum(v) / len(v), 1)}
            for lang, v in sorted(per_lang.items())
        },
    }
