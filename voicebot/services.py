"""Builds the long-lived objects (packs, engines, answerer, pipeline) once per process.

The app factory, the CLI and the tests all build services here, so there is one wiring.
Models load lazily per name behind a lock (never twice), and ``warm`` runs them once
before the server reports ready.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from voicebot.answering.base import Answerer
from voicebot.config import Settings
from voicebot.engines.base import Synthesizer, Transcriber, Translator
from voicebot.errors import ModelError, SynthesizeError
from voicebot.memory import Memory
from voicebot.metrics import Metrics
from voicebot.packs import LanguagePack, PackSet, load_packs
from voicebot.pipeline import Pipeline
from voicebot.priority import Priority, priority

if TYPE_CHECKING:
    from voicebot.scale.rpc import RpcClient

__all__ = ["Services", "TranscriberPool", "build_services"]

_LOGGER = logging.getLogger(__name__)


class TranscriberPool:
    """One loaded Whisper model per model name, shared by every pack that names it.

    ``temperatures`` overrides the engine's decoding schedule: ``(0.0,)`` turns off
    temperature-fallback sampling, so the same audio always gives the same transcript
    (``packs eval`` measures with it; serving keeps the engine's default fallback).
    """

    def __init__(
        self, settings: Settings, *, temperatures: tuple[float, ...] | None = None
    ) -> None:
        self._settings = settings
        self.temperatures = temperatures
        self._models: dict[str, Transcriber] = {}
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def get(self, model: str) -> Transcriber:
        if model in self._models:
            return self._models[model]
        async with self._locks[model]:
            if model not in self._models:
                self._models[model] = await asyncio.to_thread(self._load, model)
        return self._models[model]

    async def for_pack(self, pack: LanguagePack) -> Transcriber:
        return await self.get(pack.stt.model or self._settings.default_whisper)

    def _load(self, model: str) -> Transcriber:
        from voicebot.engines.whisper import TEMPERATURES, FasterWhisperTranscriber
        from voicebot.models import resolve_whisper

        path = resolve_whisper(model, self._settings.models_path)
        _LOGGER.info("loading whisper model %s from %s", model, path)
        return FasterWhisperTranscriber(
            path,
            device=self._settings.device,
            cpu_threads=self._settings.cpu_threads,
            num_workers=self._settings.asr_workers,
            temperatures=self.temperatures or TEMPERATURES,
        )

    @property
    def loaded(self) -> dict[str, Transcriber]:
        return dict(self._models)


class _NoSpeech:
    """Stands in for speech engines in text-only tools (``ask``, ``eval``)."""

    name = "none"

    def supports(self, voice: str) -> bool:
        return False

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> object:
        raise ModelError("speech synthesis is not loaded in this command", code="tts-not-loaded")


@dataclass
class Services:
    settings: Settings
    packs: PackSet
    metrics: Metrics
    answerer: Answerer
    pipeline: Pipeline
    transcribers: TranscriberPool | None = None
    synthesizer: Synthesizer | None = None
    translators: dict[str, Translator] = field(default_factory=dict)
    rpc: RpcClient | None = None  # speech runs on the workers (voice_engines = "workers")

    async def warm(self) -> None:
        """Load and exercise every engine an enabled pack needs, so the first caller waits less.

        Speech on the workers is warmed by the workers themselves: a web node must become
        ready even while no worker runs yet."""
        with priority(Priority.BULK):
            await self._warm()

    async def close(self) -> None:
        """Release what outlives a request (the RPC client's connections)."""
        if self.rpc is not None:
            await self.rpc.close()

    async def _warm(self) -> None:
        if self.rpc is not None:
            return
        if self.transcribers is not None:
            models = {p.stt.model for p in self.packs.enabled if p.can_listen}
            for model in sorted(models):
                transcriber = await self.transcribers.get(model)
                warm = getattr(transcriber, "warm", None)
                if warm is not None:
                    await warm()
        if self.synthesizer is not None:
            # Each pack speaks its own phrase through its voice plan (falling back voice by
            # voice): an Indic diphone voice can crash on Latin text, and one broken voice must
            # not keep the whole server from becoming ready.
            for pack in self.packs.enabled:
                try:
                    await self.pipeline.speak(pack.phrase("please_wait"), lang=pack.code)
                except SynthesizeError as err:
                    _LOGGER.warning("%s: no voice could speak at warm-up (%s)", pack.code, err)


async def build_services(
    settings: Settings,
    *,
    speech: bool = True,
    memory: Memory | None = None,
    metrics: Metrics | None = None,
    asr_temperatures: tuple[float, ...] | None = None,
) -> Services:
    """Load packs, the answerer and (with ``speech``) the speech engines: local ones, or with
    ``voice_engines = "workers"`` the remote engines of voicebot/scale/remote.py (no speech
    model is loaded here then; ``Services.close`` releases their Redis client).

    ``asr_temperatures`` is passed to the ``TranscriberPool`` (``(0.0,)``: deterministic
    decoding, used by ``packs eval``); None keeps the engine's default.
    """
    metrics = metrics or Metrics()
    packs = load_packs(Path(settings.languages_dir), default=settings.default_language)
    from voicebot.answering.factory import build_answerer

    answerer = await build_answerer(settings, packs)
    transcribers: TranscriberPool | None = None
    synthesizer: Synthesizer
    rpc: RpcClient | None = None
    transcriber_for: Callable[[LanguagePack], Awaitable[Transcriber]] = _no_transcriber
    if speech and settings.voice_engines == "workers":
        from voicebot.scale.remote import remote_speech

        rpc, transcriber_for, synthesizer = remote_speech(settings, metrics)
    elif speech:
        from voicebot.engines.synth import SynthRouter
        from voicebot.models import prepare_packaged

        await asyncio.to_thread(prepare_packaged, settings.models_path)
        transcribers = TranscriberPool(settings, temperatures=asr_temperatures)
        transcriber_for = transcribers.for_pack
        synthesizer = SynthRouter(cache_dir=settings.models_path)
    else:
        synthesizer = _NoSpeech()  # type: ignore[assignment]
    translators = _build_translators(settings, packs)
    pipeline = Pipeline(
        packs=packs,
        answerer=answerer,
        transcriber_for=transcriber_for,
        synthesizer=synthesizer,
        translator_for=lambda pack: translators.get(pack.code),
        memory=memory,
        metrics=metrics,
        stage_timeout=settings.stage_timeout_seconds,
    )
    return Services(
        settings=settings,
        packs=packs,
        metrics=metrics,
        answerer=answerer,
        pipeline=pipeline,
        transcribers=transcribers,
        synthesizer=synthesizer if speech else None,
        translators=translators,
        rpc=rpc,
    )


async def _no_transcriber(pack: LanguagePack) -> Transcriber:
    raise ModelError("speech recognition is not loaded in this command", code="stt-not-loaded")


def _build_translators(settings: Settings, packs: PackSet) -> dict[str, Translator]:
    """A CT2 translator for each pack that configures an MT model (none by default)."""
    out: dict[str, Translator] = {}
    for pack in packs.enabled:
        if not pack.mt_model:
            continue
        from voicebot.engines.ct2_translate import Ct2Translator
        from voicebot.models import resolve_ct2

        out[pack.code] = Ct2Translator(resolve_ct2(pack.mt_model, settings.models_path))
    return out
