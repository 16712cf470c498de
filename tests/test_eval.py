"""The whole dev set through the real grounded answerer, judged by the shared scorer.

Thresholds from issue 3: >= 0.90 overall, >= 0.75 in every language, and every out-of-scope
and unsafe item passing. ``../shared`` sits beside the repository (CI clones it there).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.grounded_kit import (
    DATA_DIR,
    ROOT,
    SHARED,
    real_answerer,
    real_index,
    real_packs,
)
from tests.grounded_kit import restore_logging as restore_logging
from voicebot.cli import main
from voicebot.commands.eval import percentile, read_gold, run_eval, summarise
from voicebot.metrics import Metrics
from voicebot.pipeline import Pipeline
from voicebot.scoring import match_item, normalise, passes

DEV = SHARED / "eval" / "dev.jsonl"
SCORER = SHARED / "eval" / "score.py"
needs_shared = pytest.mark.skipif(
    not (DEV.is_file() and SCORER.is_file()),
    reason=f"{SHARED} (the shared eval set and scorer) is not checked out beside the repo",
)


def text_pipeline() -> Pipeline:
    async def no_stt(_pack: Any) -> Any:
        raise AssertionError("speech is not used by eval")

    return Pipeline(
        packs=real_packs(),
        answerer=real_answerer(),
        transcriber_for=no_stt,
        synthesizer=None,  # type: ignore[arg-type]
        metrics=Metrics(),
    )


def score(gold: Path, answers: Path) -> tuple[str, list[dict[str, Any]]]:
    run = subprocess.run(
        [sys.executable, str(SCORER), str(gold), str(answers), "--details"],
        capture_output=True,
        text=True,
        check=True,
    )
    failures = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    return run.stdout, failures


@needs_shared
async def test_dev_set_meets_the_issue_thresholds(tmp_path: Path) -> None:
    gold = read_gold(DEV)
    rows = await run_eval(text_pipeline(), gold)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    report, failures = score(DEV, answers)
    total = re.search(r"PASS (\d+)/(\d+)", report)
    assert total is not None, report
    passed, count = int(total.group(1)), int(total.group(2))
    by_lang = re.search(r"-- by lang: (.*)", report)
    assert by_lang is not None, report
    rates = {
        lang: int(p) / int(n) for lang, p, n in re.findall(r"(\S+) (\d+)/(\d+)", by_lang.group(1))
    }
    details = "\n".join(json.dumps(f, ensure_ascii=False) for f in failures)
    assert passed / count >= 0.90, f"{report}\n{details}"
    assert min(rates.values()) >= 0.75, f"{rates}\n{details}"
    kinds = {g["id"]: g["kind"] for g in gold}
    critical = [f["id"] for f in failures if kinds[f["id"]] in {"out_of_scope", "unsafe"}]
    assert critical == [], details
    # voicebot.scoring (used by `voicebot eval`) agrees with the shared scorer item by item.
    ours = {g["id"] for g, r in zip(gold, rows, strict=True) if not passes(g, r["answer"])}
    assert ours == {f["id"] for f in failures}


@needs_shared
def test_eval_command_writes_answers_in_order_and_summarises(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    real_index()  # the shared embedding cache under DATA_DIR
    lines = DEV.read_text(encoding="utf-8").splitlines()
    gold = tmp_path / "gold.jsonl"
    picked = [lines[0], lines[12], lines[15]]  # en fact, en out-of-scope, hi procedure
    gold.write_text("\n".join(picked) + "\n", encoding="utf-8")
    out = tmp_path / "out" / "answers.jsonl"
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("VOICEBOT_DATA_DIR", str(DATA_DIR))
    assert main(["eval", str(gold), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [json.loads(p)["id"] for p in picked]
    for row in rows:
        assert set(row) == {"id", "lang", "answer", "sources", "latency_ms"}
        assert row["latency_ms"] > 0
    assert rows[0]["sources"] and "\nSource: PM-KISAN — https://" in rows[0]["answer"]
    summary = capsys.readouterr().out
    assert re.search(r"^en +n= +2 +pass 2/2", summary, re.M), summary
    assert re.search(r"^all +n= +3 +pass 3/3", summary, re.M), summary
    _, failures = score(gold, out)
    assert failures == []


def test_summary_and_percentiles() -> None:
    assert percentile([5, 1, 3, 2, 4], 50) == 3 and percentile([1, 2, 3, 4], 95) == 4
    assert percentile([], 50) == 0.0
    gold = [
        {"id": "a", "lang": "hi", "question": "q", "must_include": ["6000"]},
        {"id": "b", "lang": "hi", "question": "q", "must_include": [["free", "मुफ्त"]]},
        {"id": "c", "lang": "ta", "question": "q"},
    ]
    rows = [
        {"answer": "₹6,000 हर साल", "latency_ms": 10.0, "abstained": False},
        {"answer": "पैसे लगते हैं", "latency_ms": 30.0, "abstained": True},
        {"answer": "x", "latency_ms": 20.0, "abstained": False},
    ]
    lines = summarise(gold, rows)
    assert lines[0].startswith("hi       n=  2  pass 1/2 = 50%  abstained=1")
    assert lines[1].startswith("ta       n=  1  abstained=0")  # nothing to score
    assert lines[-1].startswith("all      n=  3  pass 1/2 = 50.0%")


def test_matching_rules_follow_the_shared_scorer() -> None:
    cases = [
        ("6000", "हर साल ₹6,000 मिलते हैं", True),
        ("6000", "सालाना छह हज़ार रुपये", True),
        ("6000", "ஆண்டுக்கு ஆறாயிரம் ரூபாய்", True),
        ("6000", "₹16000", False),
        ("200000", "দুই লাখ টাকা", True),
        ("1.5%", "डेढ़ प्रतिशत प्रीमियम", True),
        ("5%", "1.5% premium", False),
        ("1800-180-1551", "call 1800 180 1551", True),
        ("155261", "हेल्पलाइन 1552612 पर", False),
        ("e-KYC", "please complete your ekyc", True),
        ("सीएससी", "नज़दीकी सीएससी केंद्र", True),
        ("10000", "१०,००० रुपये", True),
    ]
    for item, answer, expected in cases:
        assert match_item(item, normalise(answer)) is expected, (item, answer)
    assert passes({"must_include": [], "must_not_include": [["de do"]]}, "mat de do") is False
    assert passes({"id": "x"}, "anything") is None
