"""TTS with the Festival binary and its diphone voices (Debian festvox-hi-nsk/-te-nsk/-mr-nsk).

Each call runs ``festival --pipe`` with a generated Scheme script: select the voice, apply the
Int_Method workaround, one utterance per sentence, each saved as a WAV in a private temp dir.
The NSK voices never set ``Int_Method`` and fail with "Feature Int_Method not defined"
(models.md §2); ``Parameter.def`` sets the simple intonation model only when the voice left it
unset, so voices that define their own keep it. Festival exits 0 even when the script failed,
so success is judged by the WAV files, and stderr is read for the reason.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from voicebot.engines.synth import concat, pipelined, run_tool, split_sentences, wav_to_audio
from voicebot.errors import SynthesizeError
from voicebot.messages import Audio

__all__ = ["FestivalSynthesizer", "festival_script"]

_PREFIX = "festival:"
_VOICE_PROC = re.compile(r"^voice_[A-Za-z0-9_]+$")
_ERROR_LINE = re.compile(r"(SIOD ERROR.*|\{FND\}.*|EST Error.*)")


def _voice_proc(voice: str) -> str:
    return voice[len(_PREFIX) :] if voice.startswith(_PREFIX) else voice


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def festival_script(voice_proc: str, sentences: list[str], out_dir: Path, speed: float) -> str:
    """The Scheme program for one call; WAVs go to ``out_dir/000.wav``, ``001.wav``, …"""
    if not _VOICE_PROC.match(voice_proc):
        raise SynthesizeError(
            f"not a Festival voice procedure: {voice_proc!r}", code="tts-bad-voice"
        )
    lines = [
        f"({voice_proc})",
        "(Parameter.def 'Int_Method 'Intonation_Simple)",  # NSK voices leave it unset
        f"(Parameter.set 'Duration_Stretch {1.0 / speed:.3f})",
    ]
    for i, sentence in enumerate(sentences):
        wav = _scheme_string(str(out_dir / f"{i:03d}.wav"))
        lines.append(
            f"(set! u{i} (Utterance Text {_scheme_string(sentence)})) (utt.synth u{i}) "
            f"(utt.save.wave u{i} {wav} 'riff)"
        )
    return "\n".join(lines) + "\n"


class FestivalSynthesizer:
    """Festival voices named by their Scheme procedure, e.g. ``voice_hindi_NSK_diphone``."""

    name = "festival"

    def __init__(
        self,
        *,
        binary: str = "festival",
        voices_dir: Path = Path("/usr/share/festival/voices"),
        timeout: float = 30.0,
        max_processes: int = 2,
    ) -> None:
        self.binary = binary
        self.voices_dir = Path(voices_dir)
        self.timeout = timeout
        self._processes = asyncio.Semaphore(max_processes)

    def available(self) -> bool:
        import shutil

        return shutil.which(self.binary) is not None

    def supports(self, voice: str) -> bool:
        if ":" in voice and not voice.startswith(_PREFIX):
            return False
        proc = _voice_proc(voice)
        if not _VOICE_PROC.match(proc) or not self.available():
            return False
        # voice_hindi_NSK_diphone is defined by <voices>/<language>/hindi_NSK_diphone/festvox/.
        name = proc[len("voice_") :]
        return any(self.voices_dir.glob(f"*/{name}/festvox/{name}.scm"))

    async def _run(self, sentences: list[str], voice: str, speed: float) -> list[Audio]:
        if speed <= 0:
            raise SynthesizeError(f"speed must be positive, not {speed}", code="tts-bad-speed")
        with tempfile.TemporaryDirectory(prefix="voicebot-festival-") as tmp:
            out_dir = Path(tmp)
            script = festival_script(_voice_proc(voice), sentences, out_dir, speed)
            async with self._processes:
                _, err = await run_tool(
                    [self.binary, "--pipe"], stdin=script.encode("utf-8"), timeout=self.timeout
                )
            chunks = []
            for i in range(len(sentences)):
                wav = out_dir / f"{i:03d}.wav"
                if not wav.is_file():
                    found = _ERROR_LINE.findall(err.decode("utf-8", "replace"))
                    reason = found[0].strip() if found else "no audio written"
                    raise SynthesizeError(f"festival {voice}: {reason}", code="tts-failed")
                chunks.append(wav_to_audio(wav.read_bytes()))
            return chunks

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> Audio:
        sentences = split_sentences(text)
        if not sentences:
            raise SynthesizeError("nothing to say", code="tts-empty")
        return concat(await self._run(sentences, voice, speed))  # one process for all sentences

    async def stream(self, text: str, *, voice: str, speed: float = 1.0) -> AsyncIterator[Audio]:
        """One process per sentence, the next one started while the current one is consumed."""
        sentences = split_sentences(text)
        if not sentences:
            raise SynthesizeError("nothing to say", code="tts-empty")

        async def one(sentence: str) -> Audio:
            return (await self._run([sentence], voice, speed))[0]

        async for chunk in pipelined(sentences, one):
            yield chunk
