"""Per-pack quality gate: the whole phone chain on a pack's own questions (``packs eval``).

Each pack carries ``eval/cases.jsonl``: ``{"id", "question", "scheme", "expected"}`` per line,
``expected`` in the ``must_include`` format of the shared eval sets (a group is a string or a
list of alternatives; numbers as digits). For every question:

    question text ─TTS (pack voice plan)→ μ-law 8 kHz → ASR (pack model + prompt) → transcript
        transcript → CER vs the question            (ASR quality on phone audio)
        transcript → Pipeline.ask → must_include     (spoken answer accuracy)
        question   → Pipeline.ask → must_include     (text answer accuracy)
        text answer ─TTS→ μ-law 8 kHz → ASR → CER    (TTS intelligibility)

and every stage is timed. A pack without a recogniser (``stt.language = ""``) runs only the
text chain and reports text accuracy, with ``asr: n/a``. ``gate`` compares the measurements
with the pack's ``[quality]`` thresholds: ASR CER and text accuracy against the pack's value or
``DEFAULT_THRESHOLDS``; spoken answer accuracy and TTS CER only when the pack declares
``answer_accuracy_min`` / ``tts_cer_max`` (otherwise they are reported, not gated). Speech is
recognised with whatever transcriber the pipeline has; ``packs eval`` builds it with
deterministic decoding (temperature 0 only), so the numbers repeat run to run. The last report
lives in ``<data_dir>/packeval/last.json`` so ``packs list`` and the console can show which
packs passed.

Answer matching follows the shared scorer's rules through ``voicebot.scoring``; on top of it
``normalise_answer`` reads the pack's own number words (``[numbers]`` lakh/crore/thousand/
percent) and Arabic-script digits, so "5 ಲಕ್ಷ" meets an expected ``500000`` in any pack.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any

from voicebot import scoring
from voicebot.audio import decode_ulaw, encode_ulaw
from voicebot.chart import Canvas
from voicebot.errors import PackError, VoicebotError
from voicebot.messages import Audio
from voicebot.packs import LanguagePack, NumberWords
from voicebot.pipeline import Pipeline
from voicebot.textmetrics import corpus_cer

__all__ = [
    "CASES_FILE",
    "DEFAULT_THRESHOLDS",
    "CaseResult",
    "EvalCase",
    "PackReport",
    "evaluate_pack",
    "gate",
    "gate_status",
    "load_cases",
    "load_report",
    "matches",
    "missing_groups",
    "normalise_answer",
    "phone_path",
    "render_chart",
    "render_table",
    "report_path",
    "save_report",
]

CASES_FILE = Path("eval") / "cases.jsonl"
# Used when a pack's [quality] table leaves a key out. Spoken answer accuracy and TTS CER have
# no default: they are gated only when the pack declares ``answer_accuracy_min`` /
# ``tts_cer_max`` (a recogniser that cannot read a voice back makes TTS CER 1.00 whatever the
# voice), and reported otherwise.
DEFAULT_THRESHOLDS: Mapping[str, float] = {
    "asr_cer_max": 0.5,
    "text_accuracy_min": 0.75,
}
# The spoken reply is cut at a sentence end after this many characters: long answers would
# make the gate slow without saying more about the voice.
REPLY_CHARS = 160

Group = str | list[str]

# --------------------------------------------------------------------------- cases


@dataclass(frozen=True, slots=True)
class EvalCase:
    """One question of a pack's test set and the facts its answer must contain."""

    id: str
    question: str
    expected: tuple[Group, ...]
    scheme: str = ""


def load_cases(pack: LanguagePack) -> list[EvalCase]:
    """The pack's ``eval/cases.jsonl``; PackError naming the file and line when malformed."""
    path = pack.path / CASES_FILE
    if not path.is_file():
        raise PackError(f"{path}: missing (each pack needs a few eval questions)", code="pack-eval")
    cases: list[EvalCase] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise PackError(f"{path}:{number}: not JSON: {err}", code="pack-eval") from err
        expected = row.get("expected") if isinstance(row, dict) else None
        if (
            not isinstance(row, dict)
            or not isinstance(row.get("id"), str)
            or not isinstance(row.get("question"), str)
            or not row["question"].strip()
            or not isinstance(expected, list)
            or not expected
            or not all(_is_group(g) for g in expected)
        ):
            raise PackError(
                f"{path}:{number}: needs id, question and expected (strings or lists of strings)",
                code="pack-eval",
            )
        cases.append(
            EvalCase(
                id=row["id"],
                question=row["question"].strip(),
                expected=tuple(expected),
                scheme=str(row.get("scheme", "")),
            )
        )
    if not cases:
        raise PackError(f"{path}: has no questions", code="pack-eval")
    return cases


def _is_group(group: object) -> bool:
    if isinstance(group, str):
        return bool(group.strip())
    return isinstance(group, list) and bool(group) and all(isinstance(g, str) for g in group)


# --------------------------------------------------------------------------- matching

# Indic digits (Devanagari … Malayalam), Arabic-Indic and Extended Arabic-Indic (Urdu).
_DIGIT_ZEROS = (0x0966, 0x09E6, 0x0A66, 0x0AE6, 0x0B66, 0x0BE6, 0x0C66, 0x0CE6, 0x0D66)
_DIGITS = {zero + i: str(i) for zero in (*_DIGIT_ZEROS, 0x0660, 0x06F0) for i in range(10)}
_NUMBER = r"(\d+(?:\.\d+)?)"


class _Scaled:
    """``re.sub`` replacement: "<n> <scale word>" → the number times ``scale``, in digits."""

    def __init__(self, scale: int) -> None:
        self.scale = scale

    def __call__(self, match: re.Match[str]) -> str:
        return str(round(float(match.group(1)) * self.scale))


def normalise_answer(text: str, numbers: NumberWords | None = None) -> str:
    """The shared scorer's normalisation, after reading the pack's own number words.

    ``numbers`` (a pack's ``[numbers]``) turns "5 ಲಕ್ಷ" into ``500000`` and "4 ಶೇಕಡಾ" into
    ``4%`` for scripts the shared rules do not list; digits must already be figures.
    """
    text = text.translate(_DIGITS)
    if numbers is not None:
        text = re.sub(r"(?<=\d),(?=\d)", "", text)
        scales = ((numbers.crore, 10**7), (numbers.lakh, 10**5), (numbers.thousand, 1000))
        for word, scale in scales:
            if word.strip():
                pattern = _NUMBER + r"\s*" + re.escape(word.strip()) + r"\w*"
                text = re.sub(pattern, _Scaled(scale), text)
        if numbers.percent.strip():
            text = re.sub(r"(\d)\s*" + re.escape(numbers.percent.strip()) + r"\w*", r"\1%", text)
    return scoring.normalise(text)


def missing_groups(
    expected: Iterable[Group], answer: str, numbers: NumberWords | None = None
) -> list[Group]:
    """The expected groups the answer does not contain (empty: the answer passes)."""
    norm = normalise_answer(answer, numbers)
    return [g for g in expected if not scoring.match_group(g, norm)]


def matches(expected: Iterable[Group], answer: str, numbers: NumberWords | None = None) -> bool:
    """True when every group of ``expected`` is in ``answer`` (must_include semantics)."""
    return not missing_groups(expected, answer, numbers)


# --------------------------------------------------------------------------- running


@dataclass(slots=True)
class CaseResult:
    """What happened to one question on its way through the chain."""

    id: str
    question: str
    transcript: str | None = None  # None: the pack has no recogniser
    asr_cer: float | None = None
    spoken_answer: str | None = None
    spoken_pass: bool | None = None
    written_answer: str = ""
    written_pass: bool = False
    missing: list[Group] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    reply_text: str = ""
    reply_transcript: str | None = None
    tts_cer: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass(slots=True)
class PackReport:
    """One pack's measurements, its thresholds and the gate verdict."""

    code: str
    name: str
    asr: bool
    voice: str
    cases: int
    asr_cer: float | None
    answer_accuracy: float | None  # spoken questions; None when the pack cannot listen
    text_accuracy: float
    tts_cer: float | None
    latency_ms: dict[str, float]
    thresholds: dict[str, float]
    passed: bool = False
    failures: list[str] = field(default_factory=list)
    results: list[CaseResult] = field(default_factory=list)
    measured_at: float = field(default_factory=time.time)

    def summary(self) -> dict[str, Any]:
        """The report without per-question detail (for ``packs list`` and the console)."""
        out = asdict(self)
        out.pop("results")
        return out


def phone_path(audio: Audio) -> Audio:
    """What a caller's line does to audio: 8 kHz μ-law and back (to 16 kHz for Whisper)."""
    return decode_ulaw(encode_ulaw(audio))


def _cut(text: str, limit: int) -> str:
    """At most about ``limit`` characters, ending at a sentence end when there is one."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    ends = [m.end() for m in re.finditer(r"[.?!।॥](\s|$)", head)]
    return head[: ends[-1]].strip() if ends else head.rsplit(" ", 1)[0]


async def _timed(latency: dict[str, float], stage: str, awaitable: Any) -> Any:
    start = time.perf_counter()
    try:
        return await awaitable
    finally:
        latency[stage] = (time.perf_counter() - start) * 1000


async def _evaluate_case(
    pipeline: Pipeline, pack: LanguagePack, case: EvalCase, reply_chars: int
) -> CaseResult:
    result = CaseResult(id=case.id, question=case.question)
    lat = result.latency_ms
    numbers = pack.numbers
    if pack.can_listen:
        try:
            spoken = await _timed(
                lat, "tts_question", pipeline.speak(case.question, lang=pack.code)
            )
            heard = await _timed(
                lat, "asr", pipeline.transcribe(phone_path(spoken), lang=pack.code)
            )
            result.transcript = heard.text.strip()
        except VoicebotError as err:
            result.transcript = ""
            result.errors.append(f"question audio: {err.code}")
        result.asr_cer = corpus_cer([(case.question, result.transcript or "")])
        result.spoken_pass = False
        if result.transcript:
            spoken_answer = await _timed(
                lat, "answer_spoken", pipeline.ask(result.transcript, lang=pack.code)
            )
            result.spoken_answer = spoken_answer.text
            result.spoken_pass = matches(case.expected, spoken_answer.text, numbers)
    answer = await _timed(lat, "answer", pipeline.ask(case.question, lang=pack.code))
    result.written_answer = answer.text
    result.sources = [s.url for s in answer.sources]
    result.missing = missing_groups(case.expected, answer.text, numbers)
    result.written_pass = not result.missing
    result.reply_text = _cut(pipeline.speech_text(answer, pack), reply_chars)
    if pack.can_listen:
        try:
            reply = await _timed(lat, "tts", pipeline.speak(result.reply_text, lang=pack.code))
            heard = await _timed(
                lat, "asr_reply", pipeline.transcribe(phone_path(reply), lang=pack.code)
            )
            result.reply_transcript = heard.text.strip()
        except VoicebotError as err:
            result.reply_transcript = ""
            result.errors.append(f"reply audio: {err.code}")
        result.tts_cer = corpus_cer([(result.reply_text, result.reply_transcript or "")])
    return result


def _voice(pipeline: Pipeline, pack: LanguagePack) -> str:
    return next((v for v in pack.tts.plan if pipeline.synthesizer.supports(v)), "none")


async def evaluate_pack(
    pipeline: Pipeline,
    pack: LanguagePack,
    cases: Sequence[EvalCase] | None = None,
    *,
    max_cases: int | None = None,
    reply_chars: int = REPLY_CHARS,
) -> PackReport:
    """Run the chain on the pack's questions and gate the result against its thresholds."""
    chosen = list(cases if cases is not None else load_cases(pack))
    if max_cases is not None:
        chosen = chosen[: max(1, max_cases)]
    results = [await _evaluate_case(pipeline, pack, case, reply_chars) for case in chosen]
    listens = pack.can_listen
    text_acc = sum(r.written_pass for r in results) / len(results)
    stages = sorted({stage for r in results for stage in r.latency_ms})
    report = PackReport(
        code=pack.code,
        name=pack.name,
        asr=listens,
        voice=_voice(pipeline, pack),
        cases=len(results),
        asr_cer=corpus_cer((r.question, r.transcript or "") for r in results) if listens else None,
        answer_accuracy=(
            sum(bool(r.spoken_pass) for r in results) / len(results) if listens else None
        ),
        text_accuracy=text_acc,
        tts_cer=(
            corpus_cer((r.reply_text, r.reply_transcript or "") for r in results)
            if listens
            else None
        ),
        latency_ms={
            s: round(mean(r.latency_ms[s] for r in results if s in r.latency_ms), 1) for s in stages
        },
        thresholds={**DEFAULT_THRESHOLDS, **pack.quality},
        results=results,
    )
    report.failures = gate(report)
    report.passed = not report.failures
    return report


def gate(report: PackReport) -> list[str]:
    """One line per threshold the report misses (empty list: the pack passes)."""
    t = report.thresholds
    out: list[str] = []
    asr, spoken, tts = report.asr_cer, report.answer_accuracy, report.tts_cer
    if asr is not None and "asr_cer_max" in t and asr > t["asr_cer_max"]:
        out.append(f"asr cer {asr:.2f} > {t['asr_cer_max']:.2f}")
    if spoken is not None and "answer_accuracy_min" in t and spoken < t["answer_accuracy_min"]:
        out.append(f"answer accuracy {spoken:.2f} < {t['answer_accuracy_min']:.2f}")
    if "text_accuracy_min" in t and report.text_accuracy < t["text_accuracy_min"]:
        out.append(f"text accuracy {report.text_accuracy:.2f} < {t['text_accuracy_min']:.2f}")
    if tts is not None and "tts_cer_max" in t and tts > t["tts_cer_max"]:
        out.append(f"tts cer {tts:.2f} > {t['tts_cer_max']:.2f}")
    return out


# --------------------------------------------------------------------------- reports


def report_path(data_dir: Path) -> Path:
    """Where ``packs eval`` records the last verdict per pack."""
    return Path(data_dir) / "packeval" / "last.json"


def save_report(reports: Sequence[PackReport], path: Path, *, merge: bool = True) -> None:
    """Write ``{"packs": {code: report}}``; ``merge`` keeps other packs' earlier results."""
    packs: dict[str, Any] = {}
    if merge:
        packs = dict(load_report(path))
    for report in reports:
        packs[report.code] = asdict(report)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"packs": packs}, ensure_ascii=False, indent=1), encoding="utf-8")
    tmp.replace(path)


def load_report(path: Path) -> dict[str, dict[str, Any]]:
    """Pack code → recorded report; empty when nothing was recorded (or it is unreadable)."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    packs = raw.get("packs") if isinstance(raw, dict) else None
    return {str(k): v for k, v in packs.items() if isinstance(v, dict)} if packs else {}


def gate_status(data_dir: Path) -> dict[str, str]:
    """Pack code → ``"pass"`` / ``"fail"`` from the last recorded ``packs eval``."""
    return {
        code: "pass" if row.get("passed") else "fail"
        for code, row in load_report(report_path(data_dir)).items()
    }


def _bar(value: float | None, thresholds: Mapping[str, float], key: str, sign: str) -> str:
    """A measurement with its threshold, "(not gated)" when the pack declares none."""
    if value is None:
        return "n/a"
    limit = thresholds.get(key)
    return f"{value:.2f} ({sign}{limit:.2f})" if limit is not None else f"{value:.2f} (not gated)"


def render_table(reports: Sequence[PackReport]) -> str:
    """A plain-text table: one row per pack, measurements next to their thresholds."""
    headers = ["pack", "n", "asr cer", "answer acc", "text acc", "tts cer", "turn ms", "gate"]
    rows = []
    for r in reports:
        t = r.thresholds
        turn = sum(r.latency_ms.get(s, 0.0) for s in ("asr", "answer_spoken", "tts"))
        rows.append(
            [
                r.code,
                str(r.cases),
                _bar(r.asr_cer, t, "asr_cer_max", "≤"),
                _bar(r.answer_accuracy, t, "answer_accuracy_min", "≥"),
                _bar(r.text_accuracy, t, "text_accuracy_min", "≥"),
                _bar(r.tts_cer, t, "tts_cer_max", "≤"),
                f"{turn:.0f}" if r.asr else f"{r.latency_ms.get('answer', 0.0):.0f}",
                "pass" if r.passed else "FAIL: " + "; ".join(r.failures),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- chart (PNG)

_SERIES = (
    ("asr cer", (66, 133, 244)),
    ("answer acc", (52, 168, 83)),
    ("text acc", (142, 68, 173)),
    ("tts cer", (251, 140, 0)),
)


def render_chart(reports: Sequence[PackReport]) -> bytes:
    """Grouped bars per language (ASR CER, spoken and text accuracy, TTS CER on 0–1) as a PNG.

    A black tick over a bar is that pack's threshold; a red code under a group is a failed
    gate; a grey stub is a measurement the pack cannot make (no recogniser).
    """
    scale, bar, gap = 2, 14, 18
    group = len(_SERIES) * bar + gap
    left, top, plot_h = 48, 40, 240
    legend = sum(32 + len(label) * 4 * scale for label, _ in _SERIES)
    width = max(left + max(1, len(reports)) * group + 20, left + legend)
    height = top + plot_h + 50
    canvas = Canvas(width, height)
    img = canvas.px
    base = top + plot_h
    for step in range(5):  # grid at 0, .25, .5, .75, 1
        y = base - step * plot_h // 4
        img[y, left - 4 : width - 10] = (210, 210, 210) if step else (0, 0, 0)
        canvas.text(4, y - 5, f"{step * 0.25:.2f}", (90, 90, 90), scale)
    x_legend = left
    for label, color in _SERIES:
        img[8:20, x_legend : x_legend + 12] = color
        canvas.text(x_legend + 16, 9, label, (40, 40, 40), scale)
        x_legend += 16 + len(label) * 4 * scale + 16
    for index, report in enumerate(reports):
        x0 = left + 6 + index * group
        values = (report.asr_cer, report.answer_accuracy, report.text_accuracy, report.tts_cer)
        limits = tuple(
            report.thresholds.get(key)
            for key in ("asr_cer_max", "answer_accuracy_min", "text_accuracy_min", "tts_cer_max")
        )
        for k, ((_, color), value, limit) in enumerate(zip(_SERIES, values, limits, strict=True)):
            x = x0 + k * bar
            if value is None:
                img[base - 4 : base, x + 1 : x + bar - 1] = (190, 190, 190)
                continue
            h = round(min(max(value, 0.0), 1.0) * plot_h)
            img[base - h : base, x + 1 : x + bar - 1] = color
            if limit is not None:
                ty = base - round(min(limit, 1.0) * plot_h)
                img[max(ty - 1, 0) : ty + 2, x : x + bar] = (0, 0, 0)
        color = (30, 30, 30) if report.passed else (211, 47, 47)
        canvas.text(
            x0 + (len(_SERIES) * bar - len(report.code) * 4 * scale) // 2,
            base + 8,
            report.code,
            color,
            3,
        )
        if not report.passed:
            canvas.text(x0 + 6, base + 30, "fail", color, scale)
    return canvas.png()
