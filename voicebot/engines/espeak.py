"""TTS with the espeak-ng binary: robotic, but it speaks hi, ta, te, bn, mr, gu, kn, ml, pa, …

Runs ``espeak-ng -v <voice> -s <words/min> --stdout --stdin`` with the text on stdin (so text
starting with "-" is never read as an option). Output is a 22.05 kHz WAV with placeholder sizes,
parsed by ``synth.wav_to_audio``. Available voices come from ``espeak-ng --voices`` once.
"""

from __future__ import annotations

import asyncio
import functools
import shutil
import subprocess
from collections.abc import AsyncIterator

from voicebot.engines.synth import concat, pipelined, run_tool, split_sentences, wav_to_audio
from voicebot.errors import SynthesizeError
from voicebot.messages import Audio

__all__ = ["EspeakSynthesizer", "parse_voice_list"]

_PREFIX = "espeak-ng:"
DEFAULT_WPM = 160  # espeak-ng's own default is 175; slower is easier to follow on a phone line


def _voice(voice: str) -> str:
    return voice[len(_PREFIX) :] if voice.startswith(_PREFIX) else voice


def parse_voice_list(output: str) -> frozenset[str]:
    """Names ``-v`` accepts, from ``espeak-ng --voices``: language codes, files, voice names."""
    names: set[str] = set()
    for line in output.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 5:
            continue
        names.add(cols[1].lower())  # language: hi, ta, en-us
        names.add(cols[4].lower())  # file: inc/hi
        names.add(cols[4].rsplit("/", 1)[-1].lower())  # file basename: hi
        names.add(cols[3].lower())  # voice name: hindi
    return frozenset(names)


class EspeakSynthesizer:
    """espeak-ng voices by language (``hi``), file (``inc/hi``), or with a variant (``hi+f3``)."""

    name = "espeak-ng"

    def __init__(
        self,
        *,
        binary: str = "espeak-ng",
        timeout: float = 30.0,
        words_per_minute: int = DEFAULT_WPM,
        max_processes: int = 2,
    ) -> None:
        self.binary = binary
        self.timeout = timeout
        self.words_per_minute = words_per_minute
        self._processes = asyncio.Semaphore(max_processes)

    @functools.cached_property
    def voices(self) -> frozenset[str]:
        """Installed voices (empty when espeak-ng is missing); read once, it takes ~10 ms."""
        if shutil.which(self.binary) is None:
            return frozenset()
        try:
            listing = subprocess.run(
                [self.binary, "--voices"], capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return frozenset()
        return parse_voice_list(listing.stdout)

    def supports(self, voice: str) -> bool:
        if ":" in voice and not voice.startswith(_PREFIX):
            return False
        base = _voice(voice).split("+", 1)[0].lower()
        return bool(base) and base in self.voices

    async def _one(self, text: str, voice: str, speed: float) -> Audio:
        if speed <= 0:
            raise SynthesizeError(f"speed must be positive, not {speed}", code="tts-bad-speed")
        argv = [
            self.binary, "-v", _voice(voice), "-s", str(round(self.words_per_minute * speed)),
            "-b", "1", "--stdout", "--stdin",
        ]  # fmt: skip
        async with self._processes:
            out, _ = await run_tool(argv, stdin=text.encode("utf-8"), timeout=self.timeout)
        audio = wav_to_audio(out)
        if not len(audio.samples):
            raise SynthesizeError(f"espeak-ng {voice} produced no audio", code="tts-empty")
        return audio

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> Audio:
        if not split_sentences(text):
            raise SynthesizeError("nothing to say", code="tts-empty")
        return concat([await self._one(" ".join(text.split()), voice, speed)])

    async def stream(self, text: str, *, voice: str, speed: float = 1.0) -> AsyncIterator[Audio]:
        sentences = split_sentences(text)
        if not sentences:
            raise SynthesizeError("nothing to say", code="tts-empty")

        async def one(sentence: str) -> Audio:
            return await self._one(sentence, voice, speed)

        async for chunk in pipelined(sentences, one):
            yield chunk
