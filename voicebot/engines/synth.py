"""Text to speech by voice spec: ``piper:<name>``, ``festival:<voice_proc>``, ``espeak-ng:<voice>``.

``SynthRouter`` is the one ``Synthesizer`` the pipeline sees. It sends each spec to its engine
and says honestly whether a voice can speak (``supports`` checks the model file, the binary and
the installed voice). Audio comes back at the engine's native rate (Piper 22.05 kHz, Festival
NSK 16 kHz, espeak-ng 22.05 kHz); channels convert once, at the edge.

The helpers here (sentence splitting, WAV parsing, running a synthesiser process) are shared
by the subprocess engines; engine modules are imported lazily so this module stays light.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from voicebot.errors import SynthesizeError
from voicebot.messages import Audio

if TYPE_CHECKING:
    from voicebot.engines.espeak import EspeakSynthesizer
    from voicebot.engines.festival import FestivalSynthesizer
    from voicebot.engines.piper import PiperSynthesizer

__all__ = [
    "ENGINES",
    "StreamingSynthesizer",
    "SynthRouter",
    "concat",
    "parse_voice",
    "pipelined",
    "run_tool",
    "split_sentences",
    "wav_to_audio",
]

_LOGGER = logging.getLogger(__name__)

ENGINES = ("piper", "festival", "espeak-ng")

# A sentence ends at . ? ! (followed by space) or at a danda/double danda (space optional).
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+|(?<=[।॥])\s*|\n+")

T = TypeVar("T")
R = TypeVar("R")


class StreamingSynthesizer(Protocol):
    """What each engine offers the router: the Synthesizer Protocol plus per-sentence streaming."""

    name: str

    def supports(self, voice: str) -> bool: ...

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> Audio: ...

    def stream(self, text: str, *, voice: str, speed: float = 1.0) -> AsyncIterator[Audio]: ...


def split_sentences(text: str) -> list[str]:
    """Sentences in order, stripped; text without end punctuation is one sentence."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def parse_voice(voice: str) -> tuple[str, str]:
    """``"festival:voice_hindi_NSK_diphone"`` → ``("festival", "voice_hindi_NSK_diphone")``."""
    engine, sep, name = voice.partition(":")
    if not sep or engine not in ENGINES or not name:
        raise SynthesizeError(
            f"voice spec {voice!r} must be one of {', '.join(e + ':<voice>' for e in ENGINES)}",
            code="tts-bad-voice",
        )
    return engine, name


def wav_to_audio(data: bytes) -> Audio:
    """Parse a PCM WAV (8/16/32-bit int or 32-bit float, any channel count) into mono float32.

    Tolerates the placeholder sizes streamed WAVs carry (espeak-ng ``--stdout`` writes
    0x7FFFF000), which the stdlib ``wave`` module rejects.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise SynthesizeError("synthesiser output is not a WAV file", code="tts-bad-output")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        chunk_id, size = data[pos : pos + 4], struct.unpack("<I", data[pos + 4 : pos + 8])[0]
        body_start = pos + 8
        if chunk_id == b"fmt ":
            fmt = struct.unpack("<HHIIHH", data[body_start : body_start + 16])
        elif chunk_id == b"data":
            if fmt is None:
                raise SynthesizeError("WAV data before its format", code="tts-bad-output")
            body = data[body_start : min(body_start + size, len(data))]
            return Audio(_pcm_to_float(body, fmt), rate=int(fmt[2]))
        pos = body_start + size + (size & 1)
    raise SynthesizeError("WAV file has no data chunk", code="tts-bad-output")


def _pcm_to_float(
    body: bytes, fmt: tuple[int, ...]
) -> np.ndarray[tuple[int], np.dtype[np.float32]]:
    tag, channels, _rate, _byte_rate, _align, bits = fmt
    width = bits // 8
    body = body[: len(body) - len(body) % max(width * channels, 1)]
    if tag == 3 and bits == 32:
        samples = np.frombuffer(body, dtype="<f4").astype(np.float32)
    elif tag in (1, 0xFFFE) and bits == 16:
        samples = np.frombuffer(body, dtype="<i2").astype(np.float32) / 32768.0
    elif tag in (1, 0xFFFE) and bits == 32:
        samples = np.frombuffer(body, dtype="<i4").astype(np.float32) / 2147483648.0
    elif tag in (1, 0xFFFE) and bits == 8:
        samples = (np.frombuffer(body, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    else:
        raise SynthesizeError(f"unsupported WAV encoding {tag}/{bits}-bit", code="tts-bad-output")
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1)
    return np.ascontiguousarray(samples, dtype=np.float32)


def concat(chunks: Sequence[Audio]) -> Audio:
    """One Audio from per-sentence chunks at the same rate."""
    if not chunks:
        raise SynthesizeError("nothing was synthesised", code="tts-empty")
    rate = chunks[0].rate
    if any(c.rate != rate for c in chunks):
        raise SynthesizeError("sentence chunks differ in sample rate", code="tts-bad-output")
    return Audio(np.concatenate([c.samples for c in chunks]).astype(np.float32), rate=rate)


async def run_tool(argv: Sequence[str], *, stdin: bytes, timeout: float) -> tuple[bytes, bytes]:
    """Run a synthesiser process; (stdout, stderr). The process dies with a timeout or a cancel."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError as err:
        raise SynthesizeError(f"{argv[0]} is not installed", code="tts-unavailable") from err
    try:
        async with asyncio.timeout(timeout):
            out, errors = await proc.communicate(stdin)
    except TimeoutError as exc:
        raise SynthesizeError(
            f"{argv[0]} took longer than {timeout:.0f} s", code="tts-timeout"
        ) from exc
    finally:
        if proc.returncode is None:  # timed out or cancelled: never leave it running
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if proc.returncode != 0:
        tail = errors.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no message"]
        raise SynthesizeError(
            f"{argv[0]} exited with {proc.returncode}: {tail[0]}", code="tts-failed"
        )
    return out, errors


async def pipelined(
    items: Sequence[T], fn: Callable[[T], Awaitable[R]], *, ahead: int = 1
) -> AsyncIterator[R]:
    """Yield ``fn(item)`` in order while up to ``ahead`` later items are already being computed.

    The first sentence's audio goes out as soon as it exists, and the next one is being made
    while the caller plays or sends it. Unfinished work is cancelled if the consumer stops.
    """
    pending: list[asyncio.Task[R]] = []
    index = 0
    try:
        while index < len(items) or pending:
            while index < len(items) and len(pending) <= ahead:
                pending.append(asyncio.ensure_future(fn(items[index])))
                index += 1
            yield await pending.pop(0)
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class SynthRouter:
    """The ``Synthesizer`` over Piper, Festival and espeak-ng, chosen by the voice spec prefix."""

    name = "synth"

    def __init__(
        self,
        *,
        cache_dir: Path,
        timeout: float = 30.0,
        festival_binary: str = "festival",
        festival_voices_dir: Path = Path("/usr/share/festival/voices"),
        espeak_binary: str = "espeak-ng",
    ) -> None:
        # Engine modules are imported here, not at the top: piper pulls in onnxruntime, and the
        # subprocess engines import this module's helpers.
        from voicebot.engines.espeak import EspeakSynthesizer
        from voicebot.engines.festival import FestivalSynthesizer
        from voicebot.engines.piper import PiperSynthesizer

        self.piper: PiperSynthesizer = PiperSynthesizer(cache_dir)
        self.festival: FestivalSynthesizer = FestivalSynthesizer(
            binary=festival_binary, voices_dir=festival_voices_dir, timeout=timeout
        )
        self.espeak: EspeakSynthesizer = EspeakSynthesizer(binary=espeak_binary, timeout=timeout)

    def engine(self, voice: str) -> StreamingSynthesizer:
        kind, _ = parse_voice(voice)
        engines: dict[str, StreamingSynthesizer] = {
            "piper": self.piper,
            "festival": self.festival,
            "espeak-ng": self.espeak,
        }
        return engines[kind]

    def supports(self, voice: str) -> bool:
        try:
            return self.engine(voice).supports(voice)
        except SynthesizeError:
            return False

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> Audio:
        engine = self.engine(voice)
        if not engine.supports(voice):
            raise SynthesizeError(f"voice {voice!r} is not available", code="tts-unavailable")
        return await engine.synthesize(text, voice=voice, speed=speed)

    async def stream(self, text: str, *, voice: str, speed: float = 1.0) -> AsyncIterator[Audio]:
        """Audio per sentence, first sentence first: the shortest time to first audio."""
        engine = self.engine(voice)
        if not engine.supports(voice):
            raise SynthesizeError(f"voice {voice!r} is not available", code="tts-unavailable")
        async for chunk in engine.stream(text, voice=voice, speed=speed):
            yield chunk
