"""The figures a bench run reports: each with its label, unit and target (``TARGETS``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["SCHEMA", "TARGETS", "Figure", "Report", "Spec", "Target", "fmt", "unit_suffix"]

SCHEMA = "voicebot-bench/1"  # of the JSON result


def fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def unit_suffix(unit: str) -> str:
    if unit in ("", "ratio", "×"):
        return "" if unit != "×" else "×"
    return f" {unit}" if unit != "%" else "%"


@dataclass(frozen=True, slots=True)
class Target:
    """A pass/fail bound: ``value op target`` (op is ``<=``, ``>=`` or ``==``)."""

    op: str
    value: float

    def met(self, measured: float) -> bool:
        if self.op == "<=":
            return measured <= self.value
        if self.op == ">=":
            return measured >= self.value
        return measured == self.value

    def text(self, unit: str) -> str:
        sign = {"<=": "≤", ">=": "≥", "==": "="}[self.op]
        return f"{sign} {fmt(self.value)}{unit_suffix(unit)}"


@dataclass(frozen=True, slots=True)
class Spec:
    label: str
    unit: str
    target: Target | None = None
    ref: str = ""  # what models.md measured, for a plausibility check


# Every figure the issues name. Those with a target always appear in BENCHMARKS.md, measured
# or not; the rest appear when measured.
TARGETS: dict[str, Spec] = {
    "asr.base.raw_rtf": Spec("ASR base, raw faster-whisper, real-time factor", "×", None, "≈ 0.10"),
    "asr.base.ours_rtf": Spec(
        "ASR base, our path (bytes → decode → Pipeline.transcribe), RTF", "×"
    ),
    "asr.base.overhead": Spec(
        "ASR base, overhead: our path ÷ raw faster-whisper", "ratio", Target("<=", 1.10)
    ),
    "asr.base.plumbing": Spec(
        "ASR base, plumbing only: our path ÷ raw call with our decoding options", "ratio"
    ),
    "asr.base.raw_load_s": Spec("ASR base, model load, raw WhisperModel", "s", None, "0.3–0.7 s"),
    "asr.base.ours_load_s": Spec("ASR base, model load, our TranscriberPool", "s"),
    "asr.base.rss_mb": Spec("ASR base, RSS added by load + first call (fresh process)", "MB"),
    "asr.tiny.en.raw_rtf": Spec("ASR tiny.en, raw faster-whisper, RTF", "×", None, "≈ 0.056"),
    "asr.tiny.en.ours_rtf": Spec("ASR tiny.en, our path, RTF", "×"),
    "asr.tiny.en.overhead": Spec(
        "ASR tiny.en, overhead: our path ÷ raw", "ratio", Target("<=", 1.10)
    ),
    "asr.tiny.en.plumbing": Spec(
        "ASR tiny.en, plumbing only: our path ÷ raw call with our decoding options", "ratio"
    ),
    "asr.tiny.en.raw_load_s": Spec("ASR tiny.en, model load, raw WhisperModel", "s"),
    "asr.tiny.en.ours_load_s": Spec("ASR tiny.en, model load, our TranscriberPool", "s"),
    "asr.tiny.en.rss_mb": Spec("ASR tiny.en, RSS added by load + first call (fresh process)", "MB"),
    "asr.hi.ours_rtf": Spec(
        "ASR base, Festival Hindi with the hi pack's prompt, our path, RTF", "×", None, "≈ 0.21"
    ),
    "asr.hi.raw_rtf": Spec("ASR base, Festival Hindi, raw call with the same prompt, RTF", "×"),
    "asr.hi.cer": Spec(
        "ASR base, Festival Hindi, character error rate (our path)", "", None, "0.34"
    ),
    "tts.piper.raw_first_s": Spec("TTS Piper, raw, time to first audio", "s", None, "0.14 s"),
    "tts.piper.ours_first_s": Spec(
        "TTS Piper, our path (SynthRouter.stream), time to first audio", "s"
    ),
    "tts.piper.first_overhead": Spec(
        "TTS Piper, first audio: our path ÷ raw", "ratio", Target("<=", 1.10)
    ),
    "tts.piper.raw_rtf": Spec("TTS Piper, raw, real-time factor", "×", None, "≈ 0.027"),
    "tts.piper.ours_rtf": Spec("TTS Piper, our path (Pipeline.speak), RTF", "×"),
    "tts.piper.overhead": Spec(
        "TTS Piper, whole reply: Pipeline.speak ÷ raw", "ratio", Target("<=", 1.10)
    ),
    "tts.piper.raw_load_s": Spec(
        "TTS Piper, voice load, raw PiperVoice.load", "s", None, "0.25–0.47 s"
    ),
    "tts.hi.per_sentence_s": Spec("TTS Festival Hindi, time per sentence", "s", None, "≈ 0.2 s"),
    "tts.hi.first_s": Spec("TTS Festival Hindi, time to first audio (stream)", "s"),
    "tts.ta.per_sentence_s": Spec("TTS espeak-ng Tamil, time per sentence", "s", None, "≈ 0.03 s"),
    "tts.ta.first_s": Spec("TTS espeak-ng Tamil, time to first audio (stream)", "s"),
    "answers.first_ms": Spec("Answer, first question after start-up (cold)", "ms"),
    "answers.p50_ms": Spec(
        "Answer (retrieval + composition), p50, text path", "ms", Target("<=", 50)
    ),
    "answers.p95_ms": Spec("Answer (retrieval + composition), p95, text path", "ms"),
    "answers.pass_rate": Spec("Answer accuracy, gold must_include pass rate (all languages)", "%"),
    "voice_turn.total_s": Spec(
        "Voice turn, end of recording → reply audio ready (Whisper base + Piper)",
        "s",
        Target("<=", 1.5),
    ),
    "voice_turn.first_audio_s": Spec(
        "Voice turn, end of recording → first sentence audio (if the reply were streamed)", "s"
    ),
    "whatsapp.ack_p50_ms": Spec("WhatsApp text webhook ack, p50 (light load)", "ms"),
    "whatsapp.ack_p99_ms": Spec(
        "WhatsApp text webhook ack, p99 (light load)", "ms", Target("<=", 50)
    ),
    "whatsapp.reply_p50_ms": Spec("WhatsApp text webhook → reply at Twilio REST, p50", "ms"),
    "whatsapp.throughput_rps": Spec(
        "WhatsApp signed webhooks acknowledged per second (loopback)", "req/s", Target(">=", 300)
    ),
    "whatsapp.load_ack_p99_ms": Spec("WhatsApp webhook ack p99 under the throughput load", "ms"),
    "whatsapp.errors": Spec("WhatsApp webhook errors under load", "", Target("==", 0)),
    "whatsapp.answered_rps": Spec(
        "WhatsApp replies delivered per second (load window + drain)", "msg/s"
    ),
    "serve.vm_hwm_mb": Spec(
        "serve: peak RSS, default models loaded and warm", "MB", None, "≈ 1200 MB for all"
    ),
    "serve.vm_hwm_after_load_mb": Spec("serve: peak RSS after the webhook load", "MB"),
    "realtime.reply_p50_s": Spec(
        "Realtime: end of caller speech → first reply frame, p50 (≈5 s question, one call)",
        "s",
        Target("<=", 1.0),
    ),
    "realtime.reply_p95_s": Spec(
        "Realtime: end of caller speech → first reply frame, p95 (one call)", "s"
    ),
    "realtime.greeting_ms": Spec(
        "Realtime: `start` → first greeting frame", "ms", Target("<=", 300)
    ),
    "realtime.clear_ms": Spec(
        "Realtime barge-in: caller speech onset → `clear` sent, worst", "ms", Target("<=", 200)
    ),
    "realtime.calls": Spec("Realtime calls sustained at once within the targets above", "calls"),
    "realtime.calls_answered": Spec(
        "Realtime calls sustained at once, latency aside (all answered, no dead air)", "calls"
    ),
    "scale.one_worker_msgs_s": Spec(
        "Scale mode: WhatsApp messages answered per second, 1 worker process", "msg/s"
    ),
    "scale.two_workers_msgs_s": Spec(
        "Scale mode: WhatsApp messages answered per second, 2 worker processes", "msg/s"
    ),
    "scale.ratio": Spec("Scale mode: throughput, 2 workers ÷ 1 worker (one run)", "ratio"),
    "scale.kill_lost": Spec(
        "Scale mode: messages lost when a worker is killed (SIGKILL) mid-burst",
        "",
        Target("==", 0),
    ),
    "scale.kill_duplicated": Spec(
        "Scale mode: messages answered twice after the kill", "", Target("==", 0)
    ),
}


@dataclass(slots=True)
class Figure:
    key: str
    value: float | None
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        spec = TARGETS.get(self.key, Spec(self.key, ""))
        met = None
        if spec.target is not None and self.value is not None:
            met = spec.target.met(self.value)
        return {
            "key": self.key,
            "label": spec.label,
            "value": self.value,
            "unit": spec.unit,
            "target": None
            if spec.target is None
            else {"op": spec.target.op, "value": spec.target.value},
            "met": met,
            "ref": spec.ref,
            "note": self.note,
        }


class Report:
    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Any]] = {}
        self.figures: dict[str, Figure] = {}

    def figure(self, key: str, value: float | None, note: str = "") -> None:
        self.figures[key] = Figure(key, None if value is None else round(float(value), 4), note)
