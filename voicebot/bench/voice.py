"""Voice turns: recording bytes → ``Pipeline.voice_turn`` → reply encoded for the phone, alone
and at rising concurrency (with text questions at rising concurrency beside them)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from voicebot.bench.core import Budget, Log, Plan, median, percentile, timed
from voicebot.bench.figures import Report
from voicebot.bench.inputs import VOICE_QUESTION
from voicebot.bench.tts import first_chunk
from voicebot.config import Settings
from voicebot.services import Services

__all__ = ["Turn", "bench_concurrency", "bench_voice_turn", "one_turn", "question_recording"]


@dataclass(slots=True)
class Turn:
    wav: bytes
    seconds: float


async def question_recording(services: Services) -> Turn:
    """The spoken question, as Twilio's ``<Record>`` delivers it: an 8 kHz WAV."""
    from voicebot import audio

    spoken = await services.pipeline.speak(VOICE_QUESTION, lang="en")
    return Turn(wav=audio.encode_wav(spoken, 8000), seconds=spoken.seconds)


async def one_turn(services: Services, settings: Settings, turn: Turn) -> tuple[float, Any]:
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

    turn = await question_recording(services)
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
        seconds, result = await one_turn(services, settings, turn)
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
        first = await first_chunk(services.synthesizer, spoken, pack)
        t4 = time.perf_counter()
        await services.pipeline.speak(spoken, lang="en")
        t5 = time.perf_counter()
        values = (t1 - t0, t2 - t1, t3 - t2, first, t5 - t4)
        for name, value in zip(stages, values, strict=True):
            stages[name].append(value)
        first_audio.append(t3 - t0 + first)
    total = median(totals)
    report.figure("voice_turn.total_s", total)
    report.figure("voice_turn.first_audio_s", median(first_audio))
    return {
        "question": VOICE_QUESTION,
        "question_seconds": round(turn.seconds, 2),
        "input": "8 kHz WAV (as Twilio <Record> delivers), reply encoded to 8 kHz WAV for <Play>",
        "runs_s": [round(x, 4) for x in totals],
        "median_s": round(total, 4),
        "stages_median_s": {k: round(median(v), 4) for k, v in stages.items()},
        "first_audio_s": round(median(first_audio), 4),
        "transcript": result.transcript.text if result else "",
        "wer": round(wer(VOICE_QUESTION, result.transcript.text), 4) if result else None,
        "answer_head": result.answer.text[:160] if result else "",
        "reply_seconds": round(result.audio.seconds, 2) if result and result.audio else None,
    }


async def bench_concurrency(
    report: Report,
    services: Services,
    settings: Settings,
    plan: Plan,
    questions: list[dict[str, Any]],
    budget: Budget,
    log: Log,
) -> dict[str, Any]:
    turn = await question_recording(services)
    voice: list[dict[str, Any]] = []
    per_turn = 0.0
    for level in plan.voice_levels:
        if voice and not budget.allows(f"{level} voice turns at once", level * per_turn):
            break
        log(f"concurrency: {level} voice turns at once")
        start = time.perf_counter()
        done = await asyncio.gather(*(one_turn(services, settings, turn) for _ in range(level)))
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
                seconds, _ = await timed(
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
