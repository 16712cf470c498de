"""ASR: raw ``WhisperModel.transcribe`` vs ``Pipeline.transcribe`` on the same real speech.

Bytes → ``audio.decode`` → our engine on LibriVox English; a third "matched" raw call uses our
decoding options, so the ratio splits into configuration cost and plumbing cost. Whisper base
on Festival Hindi with the hi pack's prompt. Load time; RSS of a fresh process per model
(``load_probe_child``). The raw-library calls are the point, so ``faster_whisper`` is imported
here, inside the functions that use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from voicebot.bench.core import Log, Plan, median, proc_status
from voicebot.bench.figures import Report
from voicebot.bench.inputs import Clip
from voicebot.config import Settings
from voicebot.packs import LanguagePack
from voicebot.pipeline import Pipeline
from voicebot.services import Services

__all__ = ["bench_asr", "load_probe_child"]


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
            "beam_size": en.stt.beam_size,
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
        med = {k: median(v) for k, v in runs.items()}
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
    med = {k: median(v) for k, v in runs.items()}
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
            "from voicebot.bench.asr import load_probe_child; load_probe_child()",
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
