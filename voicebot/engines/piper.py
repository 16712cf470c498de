"""Neural TTS with piper-tts, in process: one loaded ``PiperVoice`` per voice, one call at a time.

Licence: piper-tts is GPL-3.0-or-later and runs in this process (pyproject declares the
project GPL for that reason, aesthetics.md §1.5). Piper's espeak phonemizer is a process-wide
global behind a lock, so parallel calls gain nothing: ``Blocking(1)`` queues them instead.
Piper yields one chunk per sentence, which ``stream`` passes on as soon as each exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Generator
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from voicebot.engines.base import Blocking
from voicebot.errors import ModelError, SynthesizeError
from voicebot.messages import Audio
from voicebot.models import resolve_piper_voice

if TYPE_CHECKING:
    from piper import PiperVoice

__all__ = ["PiperSynthesizer"]

_LOGGER = logging.getLogger(__name__)
_PREFIX = "piper:"
T = TypeVar("T")


def _voice_name(voice: str) -> str:
    return voice[len(_PREFIX) :] if voice.startswith(_PREFIX) else voice


class PiperSynthesizer:
    """Piper voices by name (``en_US-joe-medium``, a pulled voice) or by ``.onnx`` path.

    ``noise_scale``/``noise_w_scale`` of 0 make output deterministic (golden tests); ``None``
    keeps each voice's own setting. ``load_seconds`` records how long each voice took to load.
    """

    name = "piper"

    def __init__(
        self,
        cache_dir: Path,
        *,
        use_cuda: bool = False,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.use_cuda = use_cuda
        self.noise_scale = noise_scale
        self.noise_w_scale = noise_w_scale
        self.load_seconds: dict[str, float] = {}
        self._voices: dict[str, PiperVoice] = {}
        self._load_lock = threading.Lock()
        self._blocking = Blocking(1)

    def supports(self, voice: str) -> bool:
        if ":" in voice and not voice.startswith(_PREFIX):
            return False  # another engine's spec
        if importlib.util.find_spec("piper") is None:
            return False
        try:
            resolve_piper_voice(_voice_name(voice), self.cache_dir)
        except ModelError:
            return False
        return True

    def _voice(self, voice: str) -> PiperVoice:
        """Load a voice once (runs in a worker thread; the lock stops a double load)."""
        name = _voice_name(voice)
        with self._load_lock:
            loaded = self._voices.get(name)
            if loaded is None:
                onnx, config = resolve_piper_voice(name, self.cache_dir)
                from piper import PiperVoice

                start = time.perf_counter()
                try:
                    loaded = PiperVoice.load(onnx, config_path=config, use_cuda=self.use_cuda)
                except Exception as err:  # onnxruntime raises its own exception types
                    raise ModelError(
                        f"cannot load Piper voice {onnx}: {err}", code="model-corrupt"
                    ) from err
                self.load_seconds[name] = time.perf_counter() - start
                _LOGGER.info("loaded Piper voice %s in %.2f s", name, self.load_seconds[name])
                self._voices[name] = loaded
            return loaded

    def _chunks(self, text: str, voice: str, speed: float) -> Generator[Audio, None, None]:
        from piper import SynthesisConfig

        if speed <= 0:
            raise SynthesizeError(f"speed must be positive, not {speed}", code="tts-bad-speed")
        loaded = self._voice(voice)
        config = SynthesisConfig(
            # Piper's length_scale is duration, so faster speech is a smaller scale.
            length_scale=loaded.config.length_scale / speed,
            noise_scale=self.noise_scale,
            noise_w_scale=self.noise_w_scale,
        )
        for chunk in loaded.synthesize(text, syn_config=config):
            samples = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
            yield Audio(samples, rate=int(chunk.sample_rate))

    def _synthesize_sync(self, text: str, voice: str, speed: float) -> Audio:
        chunks = list(self._chunks(text, voice, speed))  # the generator is drained in this thread
        if not chunks:
            raise SynthesizeError("Piper produced no audio for this text", code="tts-empty")
        return Audio(np.concatenate([c.samples for c in chunks]), rate=chunks[0].rate)

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> Audio:
        return await self._guard(self._blocking.run(self._synthesize_sync, text, voice, speed))

    async def stream(self, text: str, *, voice: str, speed: float = 1.0) -> AsyncIterator[Audio]:
        """One Audio per sentence; each ``next`` runs in the worker thread."""
        chunks = self._chunks(text, voice, speed)
        produced = False
        try:
            while True:
                chunk = await self._guard(self._blocking.run(next, chunks, None))
                if chunk is None:
                    break
                produced = True
                yield chunk
        finally:
            # After a cancel the worker thread may still be inside next(); closing a running
            # generator raises ValueError, and it is collected once the thread lets go.
            with contextlib.suppress(ValueError):
                chunks.close()
        if not produced:
            raise SynthesizeError("Piper produced no audio for this text", code="tts-empty")

    async def _guard(self, call: Awaitable[T]) -> T:
        try:
            return await call
        except (asyncio.CancelledError, TimeoutError, SynthesizeError):
            raise
        except ModelError as err:
            # A voice that cannot load is a TTS failure to the pipeline, which then falls back.
            raise SynthesizeError(str(err.message), code="tts-unavailable") from err
        except Exception as err:
            _LOGGER.exception("Piper synthesis failed")
            raise SynthesizeError(f"Piper failed: {err}", code="tts-failed") from err
