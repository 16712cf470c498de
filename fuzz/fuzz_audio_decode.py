"""Fuzz ``voicebot.audio.decode`` with untrusted bytes (atheris / libFuzzer).

    python fuzz/fuzz_audio_decode.py -runs=20000 [corpus_dir]

The only acceptable failure is ``AudioError``; anything else — an uncaught exception, a
crash inside FFmpeg, samples outside [-1, 1], a wrong rate — is a finding. Seeds: a few real
encodings (WAV, OGG/Opus, μ-law), so mutations start from valid containers.
"""

from __future__ import annotations

import io
import sys
import wave

import atheris

# Heavy dependencies are imported before instrumentation: only our code is instrumented.
import av  # noqa: F401
import numpy as np
import soxr  # noqa: F401

with atheris.instrument_imports(include=["voicebot"]):
    from voicebot import audio
    from voicebot.errors import AudioError
    from voicebot.messages import Audio

MAX_SECONDS = 5.0
MAX_BYTES = 256 * 1024
FORMATS = (None, "ulaw", "s16le")


def _seeds() -> list[bytes]:
    tone = Audio((0.2 * np.sin(np.arange(4000) / 5.0)).astype(np.float32), 8000)
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(1)
        w.setframerate(11025)
        w.writeframes(bytes(range(256)) * 8)
    return [audio.encode_wav(tone), audio.encode_ogg_opus(tone), out.getvalue()]


SEEDS = _seeds()


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    fmt = FORMATS[data[0] % len(FORMATS)]
    body = data[1:]
    if data[0] & 0x80 and body:  # splice the input into a valid container header
        seed = SEEDS[data[0] % len(SEEDS)]
        cut = body[0] % 64 + 8
        body = seed[:cut] + body[1:] + seed[cut + len(body) :]
    try:
        result = audio.decode(body, fmt=fmt, max_seconds=MAX_SECONDS, max_bytes=MAX_BYTES)
    except AudioError as err:
        assert err.code.startswith("audio-"), err.code
        return
    assert result.rate == audio.PIPELINE_RATE
    assert result.samples.dtype == np.float32
    assert result.seconds <= MAX_SECONDS + 1.0, result.seconds
    if result.samples.size:
        assert np.isfinite(result.samples).all()
        assert float(np.abs(result.samples).max()) <= 1.0


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
