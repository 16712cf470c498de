"""The turn pipeline every channel uses: speech → text → grounded answer → speech.

Stages (stt, mt-in, answer, mt-out, tts) each run under a timeout, are timed into metrics and
raise their own coded error. ``apology`` is the one place where an error code becomes words:
the user always gets a phrase in their own language, never a stack trace or silence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from voicebot.answering.base import Answerer
from voicebot.engines.base import Glossary, Synthesizer, Transcriber, Translator
from voicebot.errors import (
    AnswerError,
    AudioError,
    SynthesizeError,
    TranscribeError,
    TranslateError,
    VoicebotError,
)
from voicebot.memory import InMemoryMemory, Memory
from voicebot.messages import Answer, Audio, Exchange, Transcript
from voicebot.metrics import Metrics
from voicebot.numbers import speakable
from voicebot.packs import LanguagePack, PackSet
from voicebot.spelling import say_latin

__all__ = ["PIVOT", "Pipeline", "VoiceTurn"]

_LOGGER = logging.getLogger(__name__)
PIVOT = "en"

# Which fixed phrase answers which failure; unknown codes fall back to "error".
_APOLOGY_BY_PREFIX = {
    "audio-empty": "please_repeat",
    "audio-too-long": "not_understood",
    "audio": "please_repeat",
    "stt-empty": "please_repeat",
    "stt-unsure": "please_repeat",
    "stt-unsupported": "text_only",
    "rate": "rate_limited",
    "busy": "busy",
}


@dataclass(frozen=True, slots=True)
class VoiceTurn:
    """One spoken turn: what was heard, what was answered, and the reply audio."""

    transcript: Transcript
    answer: Answer
    audio: Audio | None
    error: str | None = None  # the stable code when the answer is an apology


class Pipeline:
    """Stateless across requests except for conversation memory."""

    def __init__(
        self,
        *,
        packs: PackSet,
        answerer: Answerer,
        transcriber_for: Callable[[LanguagePack], Awaitable[Transcriber]],
        synthesizer: Synthesizer,
        translator_for: Callable[[LanguagePack], Translator | None] | None = None,
        memory: Memory | None = None,
        metrics: Metrics | None = None,
        stage_timeout: float = 30.0,
    ) -> None:
        self.packs = packs
        self.answerer = answerer
        self._transcriber_for = transcriber_for
        self.synthesizer = synthesizer
        self._translator_for = translator_for or (lambda _pack: None)
        self.memory: Memory = memory or InMemoryMemory()
        self.metrics = metrics or Metrics()
        self.stage_timeout = stage_timeout

    # -- stages -----------------------------------------------------------------------------

    @asynccontextmanager
    async def _stage(self, name: str, error: type[VoicebotError]) -> AsyncIterator[None]:
        """Time a stage, bound it, and turn unexpected failures into the stage's coded error."""
        start = time.perf_counter()
        outcome = "ok"
        try:
            async with asyncio.timeout(self.stage_timeout):
                yield
        except TimeoutError as err:
            outcome = f"{name}-timeout"
            raise error(f"{name} took longer than {self.stage_timeout:g}s", code=outcome) from err
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        except VoicebotError as err:
            outcome = err.code
            raise
        except Exception as err:
            outcome = f"{name}-failed"
            _LOGGER.exception("stage %s failed", name)
            raise error(f"{name} failed: {err.__class__.__name__}", code=outcome) from err
        finally:
            elapsed = time.perf_counter() - start
            self.metrics.observe("voicebot_stage_seconds", elapsed, stage=name)
            if outcome != "ok":
                self.metrics.inc("voicebot_errors_total", code=outcome)
            _LOGGER.info("stage=%s ms=%.0f code=%s", name, elapsed * 1000, outcome)

    async def transcriber(self, pack: LanguagePack) -> Transcriber:
        """The recogniser ``pack`` uses (loaded on first use)."""
        return await self._transcriber_for(pack)

    async def transcribe(self, audio: Audio, *, lang: str) -> Transcript:
        pack = self.packs.resolve(lang)
        if not pack.can_listen:
            raise TranscribeError(f"{pack.code} has no speech recogniser", code="stt-unsupported")
        if audio.seconds < 0.2:
            raise AudioError("recording is empty", code="audio-empty")
        async with self._stage("stt", TranscribeError):
            transcriber = await self.transcriber(pack)
            transcript = await transcriber.transcribe(
                audio,
                language=pack.stt.language,
                prompt=pack.stt.initial_prompt or None,
                beam_size=pack.stt.beam_size,
                context_seconds=pack.stt.context_seconds,
            )
        if not transcript.text.strip():
            raise TranscribeError("nothing intelligible was said", code="stt-empty")
        return transcript

    async def ask(self, text: str, *, lang: str, conversation: str | None = None) -> Answer:
        """Answer one question in ``lang`` through the translation-wrapped answerer."""
        pack = self.packs.resolve(lang)
        history = await self.memory.history(conversation) if conversation else []
        timings: dict[str, float] = {}
        translator = self._translator_for(pack) if pack.code != PIVOT else None
        question, pivot = text, False
        if translator is not None:
            t0 = time.perf_counter()
            async with self._stage("mt-in", TranslateError):
                question = await translator.translate(
                    text,
                    source=pack.mt_code,
                    target=self.packs.get(PIVOT).mt_code,
                    glossary=self._glossary(pack),
                )
            pivot = True
            timings["mt_in"] = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        async with self._stage("answer", AnswerError):
            answer = await self.answerer.answer(question, pack=pack, history=history, pivot=pivot)
        timings["answer"] = (time.perf_counter() - t0) * 1000
        if translator is not None and answer.language != pack.code:
            t0 = time.perf_counter()
            async with self._stage("mt-out", TranslateError):
                translated = await translator.translate(
                    answer.text,
                    source=self.packs.get(PIVOT).mt_code,
                    target=pack.mt_code,
                    glossary=self._glossary(pack),
                )
            answer = replace(answer, text=translated, language=pack.code)
            timings["mt_out"] = (time.perf_counter() - t0) * 1000
        answer = replace(answer, timings_ms={**answer.timings_ms, **timings})
        if conversation:
            await self.memory.remember(
                conversation, Exchange(question=text, answer=answer.text, scheme=answer.scheme)
            )
        return answer

    def speech_text(self, answer: Answer, pack: LanguagePack) -> str:
        """The spoken form: answer, then a brief source name (links are for text channels)."""
        text = answer.text
        if answer.sources:
            names = ", ".join(dict.fromkeys(s.title for s in answer.sources[:2]))
            text = f"{text} {pack.phrase('sources')}: {names}."
        return say_latin(speakable(text, pack.numbers), pack.latin)

    async def speak(self, text: str, *, lang: str, slow: bool = False) -> Audio:
        """Synthesise with the pack's voice plan, falling back voice by voice."""
        pack = self.packs.resolve(lang)
        speed = pack.tts.slow_speed if slow else pack.tts.speed
        last: Exception | None = None
        async with self._stage("tts", SynthesizeError):
            for voice in pack.tts.plan:
                if not self.synthesizer.supports(voice):
                    continue
                try:
                    return await self.synthesizer.synthesize(text, voice=voice, speed=speed)
                except SynthesizeError as err:
                    if err.code.endswith("-timeout"):
                        raise  # the time is spent: the next voice would only wait again
                    _LOGGER.warning("voice %s failed (%s); trying the next one", voice, err.code)
                    last = err
            raise SynthesizeError(
                f"no voice in {list(pack.tts.plan)} could speak {pack.code}",
                code="tts-unavailable",
            ) from last

    async def voice_turn(
        self, audio: Audio, *, lang: str, conversation: str | None = None, slow: bool = False
    ) -> VoiceTurn:
        """Recording in, reply audio out. Failures become a spoken apology, never silence."""
        pack = self.packs.resolve(lang)
        error: str | None = None
        try:
            transcript = await self.transcribe(audio, lang=pack.code)
            answer = await self.ask(transcript.text, lang=pack.code, conversation=conversation)
            spoken = self.speech_text(answer, pack)
        except (TimeoutError, VoicebotError) as err:
            code = error = getattr(err, "code", "error")
            transcript = Transcript(text="", language=pack.code)
            answer = Answer(text=self.apology(code, pack), language=pack.code, abstained=True)
            spoken = answer.text
        try:
            reply = await self.speak(spoken, lang=pack.code, slow=slow)
        except SynthesizeError:
            reply = None  # the channel falls back to text (WhatsApp) or a cached prompt (voice)
        return VoiceTurn(transcript=transcript, answer=answer, audio=reply, error=error)

    def apology(self, code: str, pack: LanguagePack) -> str:
        for prefix, key in _APOLOGY_BY_PREFIX.items():
            if code.startswith(prefix):
                return pack.phrase(key)
        return pack.phrase("error")

    def _glossary(self, pack: LanguagePack) -> Glossary:
        return Glossary(terms=tuple(pack.glossary) + tuple(pack.glossary.values()))
