"""voicebot.audio: μ-law bit-exactness, real-speech round trips, and hostile input.

Speech comes from pocketsphinx-testdata (LibriVox, 16 kHz mono). Other formats (MP3, AMR,
M4A, OGG/Opus, 44.1 kHz stereo WAV) are made from it with PyAV here, so no binary fixtures.
"""

from __future__ import annotations

import functools
import io
import itertools
import struct
import time
import warnings
import wave
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicebot import audio
from voicebot.errors import AudioError
from voicebot.messages import Audio

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0870.wav"  # 7.10 s, 113 600 samples
OTHER_CLIP = LIBRIVOX / "sense_and_sensibility_01_austen_64kb-0920.wav"  # 6.05 s

pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason="pocketsphinx-testdata is not installed")

Floats = npt.NDArray[np.float32]


# --- helpers ---


def read_wav(path: Path) -> Audio:
    """Reference reader (stdlib wave), independent of voicebot.audio."""
    with wave.open(str(path)) as w:
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
        return Audio(pcm.astype(np.float32) / 32768.0, w.getframerate())


@functools.cache
def speech() -> Audio:
    return read_wav(CLIP)


def envelope(x: Floats, rate: int, ms: int = 20) -> npt.NDArray[np.float64]:
    """RMS per ``ms`` window: what a listener hears as the rhythm of the speech."""
    n = rate * ms // 1000
    k = len(x) // n
    return np.sqrt(np.mean(np.square(x[: k * n].reshape(k, n), dtype=np.float64), axis=1))


def similarity(a: Audio, b: Audio) -> float:
    """Pearson correlation of the two 20 ms envelopes, both taken at 16 kHz."""
    ea = envelope(audio.to_rate(a, 16000).samples, 16000)
    eb = envelope(audio.to_rate(b, 16000).samples, 16000)
    k = min(len(ea), len(eb))
    return float(np.corrcoef(ea[:k], eb[:k])[0, 1])


def encode_with_av(
    clip: Audio,
    codec: str,
    container: str,
    rate: int,
    bit_rate: int | None = None,
) -> bytes:
    """Encode mono speech with PyAV, as a phone or messaging app would have."""
    x = audio.resample(clip.samples, clip.rate, rate)
    out = io.BytesIO()
    with av.open(out, "w", format=container) as c:
        stream = c.add_stream(codec, rate=rate, layout="mono")
        if bit_rate:
            stream.bit_rate = bit_rate
        frame = av.AudioFrame.from_ndarray(x.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            c.mux(packet)
    return out.getvalue()


def wav_bytes(rate: int, channels: int, bits: int, payload: bytes, tag: int = 1) -> bytes:
    """A WAV file with any header values (tag 1 = PCM, 3 = IEEE float)."""
    align = channels * bits // 8
    fmt = struct.pack("<IHHIIHH", 16, tag, channels, rate, (rate * align) & 0xFFFFFFFF, align, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(payload))
        + b"WAVE"
        + b"fmt "
        + fmt
        + b"data"
        + struct.pack("<I", len(payload))
        + payload
    )


def opus_silence(seconds: float) -> bytes:
    """A real OGG/Opus file of ``seconds`` of silence, built in ~0.2 s for two hours.

    One 60 ms packet is encoded, then muxed over and over with increasing timestamps.
    """
    out = io.BytesIO()
    with av.open(out, "w", format="ogg") as c:
        stream = c.add_stream("libopus", rate=8000, layout="mono")
        stream.codec_context.options = {"frame_duration": "60", "application": "voip"}
        stream.bit_rate = 6000
        frame = av.AudioFrame.from_ndarray(
            np.zeros((1, 2400), np.int16), format="s16", layout="mono"
        )
        frame.sample_rate = 8000
        frame.pts = 0
        template = list(stream.encode(frame))[-1]
        payload, step = bytes(template), template.duration
        for i in range(int(seconds * 8000) // step):
            packet = av.Packet(payload)
            packet.pts = packet.dts = i * step
            packet.duration = step
            packet.time_base = template.time_base
            packet.stream = stream
            c.mux(packet)
    return out.getvalue()


@functools.cache
def two_hour_ogg() -> bytes:
    return opus_silence(7200)


def code_of(data: bytes, **kwargs: object) -> str:
    with pytest.raises(AudioError) as info:
        audio.decode(data, **kwargs)  # type: ignore[arg-type]
    return info.value.code


# --- μ-law: reference G.711 as implemented by CPython's audioop (Sun Microsystems g711.c) ---


def ref_ulaw2lin(code: int) -> int:
    u = ~code & 0xFF
    t = ((u & 0x0F) << 3) + 0x84
    t <<= (u & 0x70) >> 4
    return 0x84 - t if u & 0x80 else t - 0x84


_SEG_UEND = (0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)


def ref_lin2ulaw(sample: int) -> int:
    """audioop's st_14linear2ulaw(sample >> 2), one sample at a time."""
    pcm = sample >> 2
    if pcm < 0:
        pcm, mask = -pcm, 0x7F
    else:
        mask = 0xFF
    pcm = min(pcm, 8159) + 0x21
    seg = 0
    while seg < 8 and pcm > _SEG_UEND[seg]:
        seg += 1
    if seg >= 8:
        return 0x7F ^ mask
    return ((seg << 4) | ((pcm >> (seg + 1)) & 0x0F)) ^ mask


ALL_CODES = bytes(range(256))
ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)


def test_ulaw_decode_table_matches_g711_for_all_256_codes() -> None:
    table = audio.ulaw_to_pcm16(ALL_CODES)
    assert table.dtype == np.int16
    assert table.tolist() == [ref_ulaw2lin(c) for c in range(256)]
    # anchors from the G.711 table: extremes, and both zeros
    assert table[0x00] == -32124 and table[0x80] == 32124
    assert table[0xFF] == 0 and table[0x7F] == 0
    assert table[0xFE] == 8 and table[0x7E] == -8


def test_ulaw_encode_matches_reference_for_every_int16() -> None:
    expected = bytes(ref_lin2ulaw(int(v)) for v in ALL_INT16)
    assert audio.pcm16_to_ulaw(ALL_INT16) == expected


def test_ulaw_matches_audioop_where_python_still_has_it() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")  # removed in Python 3.13
    assert audio.pcm16_to_ulaw(ALL_INT16) == audioop.lin2ulaw(ALL_INT16.tobytes(), 2)
    expected = np.frombuffer(audioop.ulaw2lin(ALL_CODES, 2), dtype=np.int16)
    assert np.array_equal(audio.ulaw_to_pcm16(ALL_CODES), expected)


def test_ulaw_round_trip_is_stable_and_within_one_step() -> None:
    decoded = audio.ulaw_to_pcm16(ALL_CODES)
    recoded = audio.pcm16_to_ulaw(decoded)
    # every code survives decode → encode, except "negative zero" 0x7F, which becomes 0xFF
    assert [c for c in range(256) if recoded[c] != c] == [0x7F]
    assert recoded[0x7F] == 0xFF

    codes = np.frombuffer(audio.pcm16_to_ulaw(ALL_INT16), dtype=np.uint8)
    back = audio.ulaw_to_pcm16(codes.tobytes()).astype(np.int32)
    error = np.abs(back - ALL_INT16.astype(np.int32))
    # G.711 reconstructs mid-step; the step doubles per segment (8 … 1024), and the
    # 14-bit encoder drops 2 low bits first. Beyond ±32124 the codec clips.
    step = 8 << ((~codes >> 4) & 7).astype(np.int32)
    inside = np.abs(ALL_INT16.astype(np.int32)) <= 32124
    assert np.all(error[inside] <= step[inside] // 2 + 3)
    assert back.max() == 32124 and back.min() == -32124


def test_ulaw_silence_and_media_stream_frames() -> None:
    assert audio.ulaw_to_pcm16(b"\xff" * 4).tolist() == [0, 0, 0, 0]
    assert audio.pcm16_to_ulaw(np.zeros(3, np.int16)) == b"\xff\xff\xff"
    assert np.all(audio.decode_ulaw(b"\xff" * 160).samples == 0)

    ulaw = bytes(range(200)) * 2  # 400 bytes: 2 full frames + 80 bytes
    frames = audio.ulaw_frames(ulaw)
    assert [len(f) for f in frames] == [160, 160, 160]
    assert b"".join(frames)[:400] == ulaw
    assert frames[-1][80:] == b"\xff" * 80
    assert audio.ulaw_frames(b"") == []
    assert audio.ulaw_frames(b"\x00" * 320) == [b"\x00" * 160] * 2
    assert audio.ulaw_frames(b"\x01", frame_bytes=4) == [b"\x01\xff\xff\xff"]
    with pytest.raises(ValueError):
        audio.ulaw_frames(b"\x00", frame_bytes=0)


def test_pcm16_to_ulaw_refuses_floats() -> None:
    with pytest.raises(TypeError):
        audio.pcm16_to_ulaw(np.zeros(4, np.float32))


def test_ulaw_round_trip_of_real_speech() -> None:
    clip = speech()
    ulaw = audio.encode_ulaw(clip)
    assert len(ulaw) == 56800  # 7.10 s at 8 kHz, one byte a sample
    back = audio.decode_ulaw(ulaw)
    assert back.rate == 16000 and len(back.samples) == 113600
    # 8 kHz telephony drops everything above 4 kHz; compare with the band-limited original
    narrow = audio.resample(audio.resample(clip.samples, 16000, 8000), 8000, 16000)
    noise = back.samples - narrow
    snr = 10 * np.log10(
        np.sum(narrow.astype(np.float64) ** 2) / np.sum(noise.astype(np.float64) ** 2)
    )
    assert snr > 25  # G.711 gives ~35 dB on speech
    assert audio.decode(ulaw, fmt="ulaw").samples.tolist() == back.samples.tolist()


# --- decoding real audio ---


def test_decode_real_wav_is_bit_exact() -> None:
    data = CLIP.read_bytes()
    clip = audio.decode(data)
    assert clip.rate == audio.PIPELINE_RATE
    assert clip.samples.dtype == np.float32
    assert len(clip.samples) == 113600 and clip.seconds == pytest.approx(7.1)
    assert np.array_equal(clip.samples, speech().samples)


@pytest.mark.parametrize("path", sorted(LIBRIVOX.glob("*.wav")), ids=lambda p: p.stem[-4:])
def test_decode_every_librivox_clip_keeps_its_length(path: Path) -> None:
    with wave.open(str(path)) as w:
        expected = w.getnframes() / w.getframerate()
    assert audio.decode(path.read_bytes()).seconds == pytest.approx(expected, abs=1e-6)


def test_similarity_measure_can_fail() -> None:
    """Guard for the round-trip tests: different speech must not look similar."""
    assert similarity(speech(), read_wav(OTHER_CLIP)) < 0.5
    assert similarity(speech(), speech()) == pytest.approx(1.0)


def test_ogg_opus_round_trip_keeps_duration_and_speech() -> None:
    clip = speech()
    ogg = audio.encode_ogg_opus(clip)
    assert ogg[:4] == b"OggS"
    with av.open(io.BytesIO(ogg)) as c:
        stream = c.streams.audio[0]
        assert c.format.name == "ogg" and stream.codec_context.name == "opus"
        assert stream.rate == 48000 and stream.channels == 1
    back = audio.decode(ogg)
    assert back.rate == 16000
    assert abs(back.seconds - clip.seconds) <= 0.06
    assert similarity(clip, back) > 0.95
    assert len(ogg) < 40_000  # ~24 kbit/s plus Ogg overhead for 7.1 s


def test_ogg_opus_from_piper_rate_and_at_16k() -> None:
    piper = audio.to_rate(speech(), 22050)  # Opus refuses 22050 Hz: resampled inside
    for rate in (48000, 16000):
        back = audio.decode(audio.encode_ogg_opus(piper, rate=rate, bitrate=16000))
        assert abs(back.seconds - piper.seconds) <= 0.06
        assert similarity(piper, back) > 0.9
    with pytest.raises(ValueError):
        audio.encode_ogg_opus(piper, rate=22050)


@pytest.mark.parametrize(
    ("codec", "container", "rate", "bit_rate", "tolerance"),
    [
        ("libmp3lame", "mp3", 16000, 32000, 0.08),
        ("libopencore_amrnb", "amr", 8000, 12200, 0.05),  # what old Android phones send
        ("aac", "ipod", 16000, 32000, 0.1),  # .m4a voice memos
        ("flac", "flac", 16000, None, 0.001),
    ],
    ids=["mp3", "amr", "m4a", "flac"],
)
def test_decode_compressed_formats(
    codec: str, container: str, rate: int, bit_rate: int | None, tolerance: float
) -> None:
    clip = speech()
    back = audio.decode(encode_with_av(clip, codec, container, rate, bit_rate))
    assert back.rate == 16000
    assert abs(back.seconds - clip.seconds) <= tolerance
    assert similarity(clip, back) > 0.9


def test_wav_44k_stereo_becomes_16k_mono() -> None:
    clip = audio.to_rate(speech(), 44100)
    left = audio.to_pcm16(clip.samples)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # speech left, silence right
    data = wav_bytes(44100, 2, 16, stereo.astype("<i2").tobytes())
    back = audio.decode(data)
    assert back.rate == 16000
    assert back.seconds == pytest.approx(7.1, abs=1e-3)
    assert similarity(speech(), back) > 0.99
    # the channels are averaged: half the amplitude of the speech channel
    ratio = np.sqrt(np.mean(back.samples.astype(np.float64) ** 2)) / np.sqrt(
        np.mean(speech().samples.astype(np.float64) ** 2)
    )
    assert ratio == pytest.approx(0.5, abs=0.02)


def test_many_channels_without_a_standard_layout_are_averaged() -> None:
    pcm = audio.to_pcm16(speech().samples[:16000])
    nine = np.repeat(pcm[:, None], 9, axis=1)  # FFmpeg's own downmix refuses 9 channels
    back = audio.decode(wav_bytes(16000, 9, 16, nine.astype("<i2").tobytes()))
    assert np.allclose(back.samples, pcm / 32768.0, atol=1e-6)


def test_raw_pcm_and_ulaw_need_fmt() -> None:
    pcm = audio.to_pcm16(speech().samples).astype("<i2").tobytes()
    clip = audio.decode(pcm, fmt="s16le")
    assert np.array_equal(clip.samples, speech().samples)
    with pytest.raises(AudioError) as info:
        audio.decode(pcm[:-1], fmt="s16le")
    assert info.value.code == "audio-corrupt"
    assert code_of(b"\xff" * 8000 * 10, fmt="ulaw", max_seconds=5) == "audio-too-long"
    # fmt is only a hint for containers: a .mp3 name on an OGG still decodes
    assert audio.decode(audio.encode_ogg_opus(speech()), fmt="mp3").seconds > 7


def test_float_wav_with_nan_and_inf_is_sanitised() -> None:
    values = np.array([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.5] * 2000, dtype="<f4")
    back = audio.decode(wav_bytes(16000, 1, 32, values.tobytes(), tag=3))
    assert np.all(np.isfinite(back.samples))
    assert back.samples.min() == -1.0 and back.samples.max() == 1.0
    assert back.samples[5] == 0.5 and back.samples[0] == 0.0


def test_resampled_full_scale_input_stays_within_one() -> None:
    square = np.where((np.arange(8000) // 4) % 2 == 0, 32767, -32768).astype("<i2")
    assert np.abs(audio.resample(square / 32768, 8000, 16000)).max() > 1.1  # ringing
    back = audio.decode(wav_bytes(8000, 1, 16, square.tobytes()))
    assert back.samples.max() == 1.0 and back.samples.min() == -1.0


# --- hostile and broken input ---


def test_empty_input() -> None:
    assert code_of(b"") == "audio-empty"
    assert code_of(b"", fmt="ulaw") == "audio-empty"
    assert code_of(wav_bytes(16000, 1, 16, b"")) == "audio-empty"  # a header, no samples
    # nothing to say still makes a playable voice note (an Ogg without packets is 0 bytes)
    assert audio.decode(audio.encode_ogg_opus(Audio(np.zeros(0, np.float32), 16000))).seconds < 0.03


def test_oversized_input_is_refused_before_decoding() -> None:
    junk = b"\x00" * (audio.DEFAULT_MAX_BYTES + 1)
    start = time.perf_counter()
    assert code_of(junk) == "audio-too-large"
    assert time.perf_counter() - start < 0.05
    # a perfectly good file over a small cap: refused for its size, not decoded
    assert code_of(CLIP.read_bytes(), max_bytes=1000) == "audio-too-large"


def test_text_images_and_video_are_unsupported() -> None:
    text = "PM-KISAN: ₹6000 a year in three instalments.\n".encode() * 40
    assert code_of(text) == "audio-unsupported"
    assert code_of(b"\x89PNG\r\n\x1a\n" + bytes(500)) == "audio-unsupported"
    out = io.BytesIO()
    with av.open(out, "w", format="mp4") as c:
        stream = c.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(3):
            frame = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                c.mux(packet)
        for packet in stream.encode(None):
            c.mux(packet)
    assert code_of(out.getvalue()) == "audio-unsupported"  # video without sound


def test_containers_outside_the_allow_list_are_refused() -> None:
    """FFmpeg could read this AVI; the demuxer allow-list keeps it away from user bytes."""
    avi = encode_with_av(speech(), "pcm_s16le", "avi", 16000)
    with av.open(io.BytesIO(avi)) as c:
        assert c.streams.audio  # readable in principle
    assert code_of(avi) == "audio-unsupported"


def test_random_bytes_are_refused() -> None:
    noise = np.random.default_rng(7).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    assert code_of(noise) == "audio-unsupported"
    assert code_of(b"RIFF" + noise) == "audio-unsupported"  # RIFF but not WAVE (AVI, WebP…)
    assert code_of(b"OggS" + noise) == "audio-corrupt"  # claims to be Ogg, isn't


def test_corrupt_ogg_is_refused() -> None:
    ogg = audio.encode_ogg_opus(speech())
    pages = [i for i in range(len(ogg)) if ogg.startswith(b"OggS", i)]
    assert len(pages) >= 5  # OpusHead, OpusTags, then audio pages

    assert code_of(ogg[:100]) == "audio-corrupt"  # cut inside the OpusHead page
    head = bytearray(ogg)
    head[40:48] = b"\x00" * 8  # OpusHead page fails its CRC: no stream
    assert code_of(bytes(head)) == "audio-corrupt"
    # every audio page but the last damaged: Ogg drops them silently, 7 s shrink to < 1 s
    garbled = bytearray(ogg)
    for start, end in itertools.pairwise(pages[2:]):
        garbled[(start + end) // 2] ^= 0xFF
    assert code_of(bytes(garbled)) == "audio-corrupt"


def test_truncated_ogg_decodes_what_arrived() -> None:
    """A cut-off download is shorter audio, not an error (as every player treats it)."""
    ogg = audio.encode_ogg_opus(speech())
    assert 2.0 < audio.decode(ogg[: len(ogg) // 2]).seconds < 5.0


@pytest.mark.parametrize(
    ("rate", "channels", "expected"),
    [
        (0, 1, "audio-corrupt"),
        (7, 1, "audio-unsupported"),
        (2**31 - 1, 1, "audio-unsupported"),  # FFmpeg's resampler would try to allocate GBs
        (10**9, 1, "audio-unsupported"),
        (1, 1, "audio-too-long"),  # 1000 samples at 1 Hz
        (16000, 0, "audio-corrupt"),
        (16000, 1000, "audio-corrupt"),
        (16000, 64, "ok"),
        (768000, 1, "ok"),
    ],
)
def test_absurd_headers_never_crash(rate: int, channels: int, expected: str) -> None:
    data = wav_bytes(rate, channels, 16, bytes(max(channels, 1) * 2000))
    if expected == "ok":
        assert audio.decode(data).rate == 16000
    else:
        assert code_of(data) == expected


def test_a_wav_header_claiming_hours_is_not_trusted_over_its_bytes() -> None:
    data = bytearray(wav_bytes(8000, 1, 8, bytes([128]) * 8000))
    data[40:44] = struct.pack("<I", 8000 * 7200)  # data chunk "2 hours", 1 s present
    assert audio.decode(bytes(data)).seconds == pytest.approx(1.0)


def test_two_hour_voice_note_is_refused_fast() -> None:
    ogg = two_hour_ogg()
    assert len(ogg) < audio.DEFAULT_MAX_BYTES  # small enough to get past the size cap
    start = time.perf_counter()
    assert code_of(ogg) == "audio-too-long"
    assert time.perf_counter() - start < 0.25  # from the metadata: nothing is decoded


def test_lying_metadata_stops_decoding_at_the_cap() -> None:
    """Chained Ogg: two hours, then a 1 s stream whose end is all the metadata reports."""
    chained = two_hour_ogg() + audio.encode_ogg_opus(Audio(np.zeros(16000, np.float32), 16000))
    with av.open(io.BytesIO(chained)) as c:
        assert c.duration / av.time_base < 2  # the metadata lies
    start = time.perf_counter()
    with pytest.raises(AudioError) as info:
        audio.decode(chained)
    assert info.value.code == "audio-too-long"
    assert "stopped decoding" in info.value.message
    assert time.perf_counter() - start < 1.0


def test_max_seconds_is_the_callers_limit() -> None:
    data = CLIP.read_bytes()  # 7.1 s
    assert code_of(data, max_seconds=5) == "audio-too-long"
    assert audio.decode(data, max_seconds=7.1).seconds == pytest.approx(7.1)
    raw = audio.to_pcm16(speech().samples).astype("<i2").tobytes()
    assert code_of(raw, fmt="s16le", max_seconds=5) == "audio-too-long"


@functools.cache
def seed_files() -> list[bytes]:
    clip = Audio(speech().samples[:16000], 16000)
    return [
        audio.encode_ogg_opus(clip),
        audio.encode_wav(clip, 8000),
        encode_with_av(clip, "libmp3lame", "mp3", 16000, 32000),
        encode_with_av(clip, "libopencore_amrnb", "amr", 8000, 12200),
        encode_with_av(clip, "aac", "ipod", 16000, 32000),
    ]


def assert_decodes_or_refuses(data: bytes) -> None:
    try:
        clip = audio.decode(data)
    except AudioError as err:
        assert err.code.startswith("audio-")
        return
    assert clip.rate == 16000 and clip.samples.dtype == np.float32
    assert np.all(np.abs(clip.samples) <= 1.0)


@settings(max_examples=150, deadline=None, database=None)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_decode_or_raise_audio_error(data: bytes) -> None:
    assert_decodes_or_refuses(data)


@settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    st.integers(0, 4),
    st.lists(st.tuples(st.integers(0, 2**20), st.integers(0, 255)), max_size=12),
    st.integers(0, 2**20),
)
def test_damaged_real_files_decode_or_raise_audio_error(
    which: int, edits: list[tuple[int, int]], cut: int
) -> None:
    """Mutations of real files reach deeper into the demuxers than random bytes do."""
    data = bytearray(seed_files()[which])
    for offset, value in edits:
        data[offset % len(data)] = value
    assert_decodes_or_refuses(bytes(data[: max(cut % (len(data) + 1), 1)]))


# --- encoding and small helpers ---


def test_encode_wav_at_8k_for_twilio_play() -> None:
    data = audio.encode_wav(speech(), rate=8000)
    with wave.open(io.BytesIO(data)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() == 56800
    assert similarity(speech(), audio.decode(data)) > 0.99
    # at its own rate, WAV is lossless for 16-bit input
    assert np.array_equal(audio.decode(audio.encode_wav(speech())).samples, speech().samples)


def test_encode_dispatch_and_content_types() -> None:
    clip = speech()
    assert audio.encode(clip, "wav") == audio.encode_wav(clip)
    assert audio.encode(clip, "ulaw") == audio.encode_ulaw(clip)
    assert audio.encode(clip, "ogg")[:4] == b"OggS"
    with pytest.raises(AudioError) as info:
        audio.encode(clip, "mp3")
    assert info.value.code == "audio-unsupported"
    assert audio.content_type("wav") == "audio/wav"
    assert audio.content_type("ogg") == "audio/ogg"
    assert audio.content_type("ulaw") == "audio/basic"
    with pytest.raises(AudioError):
        audio.content_type("exe")


@pytest.mark.parametrize(
    ("path", "fmt"),
    [
        ("reply.wav", "wav"),
        ("note.OGG", "ogg"),
        ("/tmp/voice.opus", "ogg"),
        ("call.ulaw", "ulaw"),
        ("call.raw", "ulaw"),
        ("upload.mp3", "mp3"),
        ("old-phone.amr", "amr"),
        ("memo.m4a", "m4a"),
        ("dir.v2/clip.xyz", "xyz"),
        ("no-extension", ""),
    ],
)
def test_format_for_path(path: str, fmt: str) -> None:
    assert audio.format_for_path(path) == fmt


def test_to_pcm16_rounds_and_clips() -> None:
    x = np.array([-2.0, -1.0, -0.5, 0.0, 1 / 32768, 0.5, 1.0, 2.0, np.nan], dtype=np.float32)
    assert audio.to_pcm16(x).tolist() == [-32768, -32768, -16384, 0, 1, 16384, 32767, 32767, 0]


def test_resample_and_to_rate() -> None:
    x = speech().samples
    assert audio.resample(x, 16000, 8000).shape == (56800,)
    assert audio.resample(x, 16000, 22050).shape == (156555,)
    assert audio.resample(x, 16000, 16000).dtype == np.float32
    assert audio.resample(np.zeros(0, np.float32), 8000, 16000).shape == (0,)
    with pytest.raises(ValueError):
        audio.resample(x, 0, 16000)
    clip = speech()
    assert audio.to_rate(clip, 16000) is clip
    assert audio.to_rate(clip, 8000).rate == 8000
    # a 1 kHz tone survives 16 k → 8 k → 16 k
    tone = np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000).astype(np.float32)
    back = audio.resample(audio.resample(tone, 16000, 8000), 8000, 16000)
    assert np.max(np.abs(back[100:-100] - tone[100:-100])) < 0.01
