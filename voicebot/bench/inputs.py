"""The bench's inputs: real recordings, texts to speak and questions to ask.

They are benchmark data, not app behaviour: the app never branches on a language.
"""

from __future__ import annotations

import io
import json
import wave
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "BUILTIN_QUESTIONS",
    "CLIP_FULL",
    "CLIP_QUICK",
    "DEV_QUESTIONS",
    "HINDI_TEXT",
    "LIBRIVOX",
    "TAMIL_TEXT",
    "TTS_TEXT",
    "VOICE_QUESTION",
    "Clip",
    "librivox_clip",
    "read_questions",
    "wav_bytes",
]

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIP_FULL = (
    "sense_and_sensibility_01_austen_64kb-0870",
    "sense_and_sensibility_01_austen_64kb-0880",
)
CLIP_QUICK = ("sense_and_sensibility_01_austen_64kb-0880",)
DEV_QUESTIONS = Path("../shared/eval/dev.jsonl")

TTS_TEXT = (
    "Under PM-KISAN, every eligible farmer family gets six thousand rupees a year, in three "
    "instalments of two thousand rupees each. You can check your payment status on the "
    "PM-KISAN website with your Aadhaar number."
)
VOICE_QUESTION = (
    "How much money does PM-KISAN give a farmer every year, and how many instalments are there?"
)
HINDI_TEXT = "किसान सम्मान निधि की अगली किस्त अप्रैल के पहले सप्ताह में आएगी। कृपया अपना ई-केवाईसी पूरा करें।"
TAMIL_TEXT = "பிஎம் கிசான் திட்டத்தில் ஆண்டுக்கு ஆறாயிரம் ரூபாய் கிடைக்கும். பணம் உங்கள் வங்கிக் கணக்கில் நேரடியாக வரும்."
BUILTIN_QUESTIONS: tuple[tuple[str, str], ...] = (
    ("en", "how much money does pm kisan give in one year"),
    ("en", "how do I complete e-KYC for PM-KISAN"),
    ("en", "what premium does a farmer pay for rabi crop insurance"),
    ("en", "who can get a free LPG connection under Ujjwala"),
    ("en", "how much health cover does Ayushman Bharat give"),
    ("en", "what is the helpline number for PM-KISAN"),
    ("hi", "पीएम किसान की अगली किस्त कब आएगी"),
    ("hi", "आयुष्मान कार्ड कैसे बनवाएं"),
)


@dataclass(frozen=True, slots=True)
class Clip:
    """A real recording: its WAV bytes, 16 kHz float samples and what is said."""

    wav: bytes
    samples: npt.NDArray[np.float32]
    text: str

    @property
    def seconds(self) -> float:
        return len(self.samples) / 16000


def librivox_clip(ids: Sequence[str], root: Path = LIBRIVOX) -> Clip:
    """The LibriVox clips concatenated (16 kHz mono 16-bit), with their joined transcript."""
    refs: dict[str, str] = {}
    for line in (root / "transcription").read_text(encoding="utf-8").splitlines():
        body, _, rest = line.rpartition("(")
        words = body.replace("<s>", " ").replace("</s>", " ")
        refs[rest.rstrip(") \t")] = " ".join(words.split())
    frames = b""
    for clip_id in ids:
        with wave.open(str(root / f"{clip_id}.wav")) as w:
            if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (16000, 1, 2):
                raise ValueError(f"{clip_id}.wav is not 16 kHz mono 16-bit")
            frames += w.readframes(w.getnframes())
    buf = wav_bytes(frames, 16000)
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0
    return Clip(wav=buf, samples=samples, text=" ".join(refs[i] for i in ids))


def wav_bytes(pcm16: bytes, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm16)
    return out.getvalue()


def read_questions(
    path: Path | None, packs: Any, limit: int = 0
) -> tuple[list[dict[str, Any]], str]:
    """Gold questions (dev JSONL) whose language has a pack, else the built-in list."""
    rows: list[dict[str, Any]] = []
    source = "built-in list"
    if path is not None and path.is_file():
        source = str(path)
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                if isinstance(row, dict) and "question" in row and "lang" in row:
                    rows.append(row)
    if not rows:
        rows = [
            {"id": f"builtin-{i}", "lang": lang, "question": q}
            for i, (lang, q) in enumerate(BUILTIN_QUESTIONS)
        ]
        source = "built-in list"
    usable = []
    for row in rows:
        try:
            packs.resolve(row["lang"])
        except Exception:
            continue
        usable.append(row)
    if limit and len(usable) > limit:  # spread a small sample across languages
        by_lang: dict[str, list[dict[str, Any]]] = {}
        for row in usable:
            by_lang.setdefault(row["lang"], []).append(row)
        picked: list[dict[str, Any]] = []
        while len(picked) < limit:
            for group in by_lang.values():
                if group and len(picked) < limit:
                    picked.append(group.pop(0))
        usable = picked
    return usable, source
