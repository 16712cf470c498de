"""Deterministic stand-ins for engines, for tests of the pipeline and channels only.

Real-model tests live beside these (marked ``model``); these fakes let HTTP and failure tests
run in milliseconds and fail on purpose when asked to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from voicebot.config import Settings
from voicebot.errors import AnswerError, SynthesizeError
from voicebot.messages import Answer, Audio, Exchange, Source, Transcript
from voicebot.metrics import Metrics
from voicebot.packs import LanguagePack, load_packs
from voicebot.pipeline import Pipeline
from voicebot.services import Services

ROOT = Path(__file__).resolve().parents[1]


class FakeTranscriber:
    name = "fake-stt"

    def __init__(self, text: str = "how much does pm kisan pay", *, delay: float = 0.0) -> None:
        self.text = text
        self.delay = delay
        self.calls = 0
        self.options: list[tuple[int | None, float | None]] = []  # (beam_size, context_seconds)

    def supports(self, language: str) -> bool:
        return True

    async def transcribe(
        self,
        audio: Audio,
        *,
        language: str,
        prompt: str | None = None,
        beam_size: int | None = None,
        context_seconds: float | None = None,
    ) -> Transcript:
        self.calls += 1
        self.options.append((beam_size, context_seconds))
        if self.delay:
            await asyncio.sleep(self.delay)
        return Transcript(text=self.text, language=language, duration=audio.seconds)


class ToneSynthesizer:
    """A 440 Hz tone whose length grows with the text, at 22.05 kHz like Piper."""

    name = "tone"

    def __init__(self, *, fail_voices: Sequence[str] = (), per_char: float = 0.02) -> None:
        self.fail_voices = set(fail_voices)
        self.per_char = per_char  # seconds of tone per character of text
        self.calls: list[tuple[str, str, float]] = []

    def supports(self, voice: str) -> bool:
        return True

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> Audio:
        self.calls.append((text, voice, speed))
        if voice in self.fail_voices:
            raise SynthesizeError(f"{voice} broke", code="tts-failed")
        rate = 22050
        seconds = min(0.2 + self.per_char * len(text) / speed, 8.0)
        t = np.arange(int(rate * seconds), dtype=np.float32) / rate
        return Audio(samples=(0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate=rate)


class CannedAnswerer:
    """Answers every question with one sourced fact, in the pack's language code."""

    name = "canned"

    def __init__(self, *, fail: bool = False, delay: float = 0.0) -> None:
        self.fail = fail
        self.delay = delay
        self.questions: list[tuple[str, str, int]] = []

    async def answer(
        self,
        question: str,
        *,
        pack: LanguagePack,
        history: Sequence[Exchange] = (),
        pivot: bool = False,
    ) -> Answer:
        self.questions.append((question, pack.code, len(history)))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise AnswerError("index exploded", code="answer-failed")
        source = Source("pm-kisan.benefit", "PM-KISAN", "https://pmkisan.gov.in", "2026-03-13")
        return Answer(
            text="PM-KISAN pays ₹6,000 a year in three instalments of ₹2,000.",
            language=pack.code,
            sources=(source,),
            scheme="pm-kisan",
        )


def fake_services(
    settings: Settings | None = None,
    *,
    transcriber: FakeTranscriber | None = None,
    synthesizer: ToneSynthesizer | None = None,
    answerer: CannedAnswerer | None = None,
    stage_timeout: float = 5.0,
) -> Services:
    settings = settings or Settings(languages_dir=ROOT / "languages")
    packs = load_packs(settings.languages_dir)
    stt = transcriber or FakeTranscriber()
    tts = synthesizer or ToneSynthesizer()
    ans = answerer or CannedAnswerer()
    metrics = Metrics()

    async def transcriber_for(_pack: LanguagePack) -> FakeTranscriber:
        return stt

    pipeline = Pipeline(
        packs=packs,
        answerer=ans,
        transcriber_for=transcriber_for,
        synthesizer=tts,
        metrics=metrics,
        stage_timeout=stage_timeout,
    )
    return Services(
        settings=settings,
        packs=packs,
        metrics=metrics,
        answerer=ans,
        pipeline=pipeline,
        synthesizer=tts,
    )


def tone(seconds: float = 1.0, rate: int = 16000) -> Audio:
    t = np.arange(int(rate * seconds), dtype=np.float32) / rate
    return Audio(samples=(0.2 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate=rate)
