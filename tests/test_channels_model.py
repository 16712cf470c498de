"""End to end with real engines: a recorded English question over a Twilio call → Whisper
tiny.en → answer → Piper → ``<Play>`` of real reply audio at 8 kHz."""

from __future__ import annotations

import io
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.channel_kit import Factory, call_form, path_of, start_kit, twiml_tree
from tests.conftest import Clip, read_wav
from tests.fakes import fake_services
from voicebot import audio

pytestmark = pytest.mark.model


async def test_recorded_question_to_played_answer(
    aiohttp_client: Factory,
    aiohttp_server: Factory,
    tmp_path: Path,
    librivox_clips: list[Clip],
    tiny_en: Any,
    synth: Any,
) -> None:
    clip = next(c for c in librivox_clips if c.text == "he was not an ill disposed young man")
    from tests.channel_kit import kit_settings, languages, start_fakes

    fakes = await start_fakes(aiohttp_server)
    languages(tmp_path, ["en"])
    settings = kit_settings(
        tmp_path, *fakes, voice_answer_wait_seconds=0.05, voice_poll_wait_seconds=1.0
    )
    services = fake_services(settings, transcriber=tiny_en, synthesizer=synth, stage_timeout=60)
    if not synth.supports("piper:en_US-joe-medium"):
        pytest.skip("the Piper English voice is not installed")
    kit = await start_kit(aiohttp_client, aiohttp_server, tmp_path, fakes=fakes, services=services)
    # Twilio records telephone audio: 8 kHz mono WAV.
    kit.twilio.recording = audio.encode_wav(read_wav(clip.path), 8000)
    call = "CA" + "7" * 32
    await kit.twilio_post("/twilio/voice/language?n=1", call_form(call, Digits="1"))
    _, body, seconds = await kit.twilio_post(
        "/twilio/voice/turn?n=1", call_form(call, RecordingUrl=kit.twilio.recording_url())
    )
    assert seconds < 1.0
    root = twiml_tree(body)
    for _ in range(60):
        if root.find("Gather") is not None:
            break
        redirect = root.find("Redirect")
        assert redirect is not None, body
        _, body, _ = await kit.twilio_post(path_of(redirect.text or ""), call_form(call))
        root = twiml_tree(body)
    gather = root.find("Gather")
    assert gather is not None, body
    resp = await kit.client.get(path_of(gather.find("Play").text or ""))  # type: ignore[union-attr]
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
    with wave.open(io.BytesIO(await resp.read())) as w:
        assert w.getframerate() == 8000
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768
    assert len(pcm) / 8000 > 2.0 and float(np.sqrt(np.mean(pcm**2))) > 0.01  # real speech
    turn = (await kit.rt.store.audit_log())[0]
    heard = turn["question"].lower()
    print(f"\nreal engines: heard {heard!r}, turn ready in {turn['latency_ms']:.0f} ms")
    assert "ill" in heard and "young man" in heard, heard
