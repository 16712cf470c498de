"""TTS: raw ``PiperVoice.synthesize`` vs ``SynthRouter.stream`` (first audio) and
``Pipeline.speak`` (whole reply); Festival Hindi and espeak-ng Tamil per sentence."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from voicebot.bench.core import Log, Plan, median
from voicebot.bench.figures import Report
from voicebot.bench.inputs import TTS_TEXT
from voicebot.config import Settings
from voicebot.packs import LanguagePack
from voicebot.services import Services

__all__ = ["bench_tts", "first_chunk"]


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
    med = {k: median(v) for k, v in runs.items()}
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
            t2 = await first_chunk(synth, text, pack)
            if rep:
                totals.append(t1 - t0)
                firsts.append(t2)
            spoken_s = spoken.seconds
        total = median(totals)
        out[code] = {
            "voice": pack.tts.voice,
            "text": text,
            "sentences": n,
            "audio_seconds": round(spoken_s, 2),
            "median_total_s": round(total, 4),
            "per_sentence_s": round(total / n, 4),
            "first_audio_s": round(median(firsts), 4),
            "rtf": round(total / spoken_s, 4) if spoken_s else None,
        }
        report.figure(f"tts.{code}.per_sentence_s", total / n)
        report.figure(f"tts.{code}.first_s", median(firsts))
    return out


async def first_chunk(synth: Any, text: str, pack: LanguagePack) -> float:
    """Seconds until the synthesiser's stream yields its first sentence (then it is closed)."""
    start = time.perf_counter()
    async with contextlib.aclosing(
        synth.stream(text, voice=pack.tts.voice, speed=pack.tts.speed)
    ) as chunks:
        async for _chunk in chunks:
            break
    return time.perf_counter() - start
