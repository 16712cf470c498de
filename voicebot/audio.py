"""Audio in and out: any inbound recording → 16 kHz mono float32; replies → WAV, OGG/Opus, μ-law.

Inbound audio is untrusted. WhatsApp voice notes (OGG/Opus), Twilio recordings (WAV), uploads
(MP3, AMR, M4A) and raw μ-law all become ``Audio`` at ``PIPELINE_RATE``, the rate Whisper
expects. ``decode`` refuses oversized input before touching it, refuses long input from its
metadata, and counts samples while decoding so metadata that lies costs at most
``max_seconds`` of work. Every failure is an ``AudioError`` with one of these codes:

    audio-empty        no bytes, or a stream that yields no samples
    audio-too-large    more than ``max_bytes`` (checked before decoding)
    audio-too-long     longer than ``max_seconds`` (metadata first, then while decoding)
    audio-corrupt      looks like audio but cannot be read, or lost most of its data
    audio-unsupported  not audio we accept: text, images, unknown formats, no audio stream,
                       absurd sample rates

Outbound: 8 kHz WAV for Twilio ``<Play>``, OGG/Opus for WhatsApp voice notes, μ-law frames for
Media Streams (protocols.md §6).
"""

from __future__ import annotations

import io
import logging
import os
import wave
from collections.abc import Iterable
from typing import Any, Final

import av
import numpy as np
import numpy.typing as npt
import soxr

from voicebot.errors import AudioError
from voicebot.messages import Audio

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_SECONDS",
    "OPUS_RATES",
    "PIPELINE_RATE",
    "content_type",
    "decode",
    "decode_ulaw",
    "encode",
    "encode_ogg_opus",
    "encode_ulaw",
    "encode_wav",
    "format_for_path",
    "pcm16_to_ulaw",
    "resample",
    "to_pcm16",
    "to_rate",
    "ulaw_frames",
    "ulaw_to_pcm16",
]

_LOGGER = logging.getLogger(__name__)

Samples = npt.NDArray[np.float32]
Pcm16 = npt.NDArray[np.int16]

PIPELINE_RATE: Final = 16000
DEFAULT_MAX_SECONDS: Final = 300.0
DEFAULT_MAX_BYTES: Final = 16 * 1024 * 1024
OPUS_RATES: Final = (8000, 12000, 16000, 24000, 48000)

_ULAW_RATE = 8000
_ULAW_SILENCE = 0xFF
# Codecs round lengths up to whole frames (Opus: 20 ms, MP3: 72 ms at 8 kHz), so a note of
# exactly max_seconds may decode a little longer; don't refuse it for that.
_SLACK_SECONDS = 0.25
# Outside this range a "sample rate" is a broken or hostile header, not a recording; FFmpeg's
# resampler tries to allocate gigabytes for 2**31 Hz.
_MIN_RATE = 1000
_MAX_RATE = 768_000

# Demuxers allowed to see user bytes. Without a list FFmpeg probes every format it knows,
# including playlist and image demuxers; these are the containers people actually send.
_DEMUXERS = "wav,w64,ogg,mp3,amr,mov,aac,flac,matroska,caf,aiff,au"
# Containers whose declared duration is exact (not estimated from the bitrate), so a stream
# that decodes to far less than it declares has lost data (Ogg drops pages that fail the CRC
# without an error).
_EXACT_DURATION = {"ogg", "wav", "w64", "flac", "mov", "matroska", "caf", "aiff"}
_LOST_FRACTION = 0.5

# Format name → Content-Type. "wav", "ogg" and "ulaw" can also be encoded.
_CONTENT_TYPES = {
    "wav": "audio/wav",
    "ogg": "audio/ogg",
    "ulaw": "audio/basic",
    "mp3": "audio/mpeg",
    "amr": "audio/amr",
    "m4a": "audio/mp4",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "webm": "audio/webm",
}
# .raw is μ-law: the only headerless audio this project handles is Twilio's (protocols.md §2).
_EXTENSIONS = {
    ".wav": "wav",
    ".wave": "wav",
    ".ogg": "ogg",
    ".oga": "ogg",
    ".opus": "ogg",
    ".ulaw": "ulaw",
    ".ul": "ulaw",
    ".mulaw": "ulaw",
    ".raw": "ulaw",
    ".pcm": "s16le",
    ".s16": "s16le",
    ".mp3": "mp3",
    ".amr": "amr",
    ".awb": "amr",
    ".m4a": "m4a",
    ".mp4": "m4a",
    ".3gp": "m4a",
    ".aac": "aac",
    ".flac": "flac",
    ".webm": "webm",
    ".mka": "webm",
}

# How PyAV reports input it cannot handle: FFmpegError (also a ValueError/OSError subclass),
# plain ValueError for unknown layouts and formats, MemoryError for absurd allocations.
_AV_ERRORS = (av.FFmpegError, ValueError, OverflowError, MemoryError)

# Leading bytes of the containers above; decides "corrupt" vs "unsupported" when FFmpeg
# cannot open the input.
_MAGIC = (b"OggS", b"RF64", b"ID3", b"#!AMR", b"fLaC", b"\x1aE\xdf\xa3", b"caff", b".snd")


# --- μ-law (G.711), bit-exact with audioop (removed in Python 3.13): protocols.md §6.1 ---


def _ulaw_table() -> Pcm16:
    u = ~np.arange(256, dtype=np.uint8)
    sign, exp, man = u & 0x80, (u >> 4) & 7, u & 0x0F
    mag = (((man.astype(np.int32) << 3) + 0x84) << exp) - 0x84
    return np.where(sign, -mag, mag).astype(np.int16)


_ULAW2LIN: Final = _ulaw_table()
_SEG_END: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])


def ulaw_to_pcm16(data: bytes) -> Pcm16:
    """μ-law bytes → int16 samples (same rate, 8 kHz for telephony)."""
    return _ULAW2LIN[np.frombuffer(data, dtype=np.uint8)]


def pcm16_to_ulaw(pcm: npt.NDArray[np.int16]) -> bytes:
    """int16 samples → μ-law bytes, equal to ``audioop.lin2ulaw(pcm, 2)``."""
    if pcm.dtype != np.int16:
        raise TypeError(f"pcm16_to_ulaw needs int16 samples, not {pcm.dtype}")
    x = pcm.astype(np.int32).ravel() >> 2
    mask = np.where(x < 0, 0x7F, 0xFF)
    x = np.minimum(np.abs(x), 8159) + 33
    seg = np.searchsorted(_SEG_END, x)
    u = np.where(seg >= 8, 0x7F, (seg << 4) | ((x >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return bytes(((u ^ mask) & 0xFF).astype(np.uint8).tobytes())


def decode_ulaw(data: bytes) -> Audio:
    """Raw 8 kHz μ-law (Twilio Media Streams, recordings saved as .ulaw) → 16 kHz Audio."""
    samples = ulaw_to_pcm16(data).astype(np.float32) / 32768.0
    # Resampling near-full-scale input rings past ±1; Audio promises [-1, 1].
    upsampled = resample(samples, _ULAW_RATE, PIPELINE_RATE)
    return Audio(np.clip(upsampled, -1.0, 1.0, dtype=np.float32), PIPELINE_RATE)


def ulaw_frames(ulaw: bytes, frame_bytes: int = 160) -> list[bytes]:
    """Split μ-law into Media Streams frames (160 bytes = 20 ms); pad the last with silence."""
    if frame_bytes <= 0:
        raise ValueError(f"frame_bytes must be positive, not {frame_bytes}")
    frames = [ulaw[i : i + frame_bytes] for i in range(0, len(ulaw), frame_bytes)]
    if frames and len(frames[-1]) < frame_bytes:
        frames[-1] = frames[-1].ljust(frame_bytes, bytes([_ULAW_SILENCE]))
    return frames


# --- sample conversions ---


def resample(samples: npt.NDArray[Any], src_rate: int, dst_rate: int) -> Samples:
    """Resample mono samples with soxr (high quality); float32 out."""
    if src_rate <= 0 or dst_rate <= 0:
        raise ValueError(f"sample rates must be positive, not {src_rate} → {dst_rate}")
    x = np.ascontiguousarray(samples, dtype=np.float32)
    if src_rate == dst_rate:
        return x.copy()
    if not x.size:
        return np.zeros(0, dtype=np.float32)
    return np.asarray(soxr.resample(x, src_rate, dst_rate), dtype=np.float32)


def to_rate(audio: Audio, rate: int) -> Audio:
    """The same audio at ``rate`` Hz (the input itself when it is already there)."""
    if audio.rate == rate:
        return audio
    return Audio(resample(audio.samples, audio.rate, rate), rate)


def to_pcm16(samples: npt.NDArray[Any]) -> Pcm16:
    """float samples in [-1, 1] → int16, clipping overs and mapping NaN to silence."""
    x = np.nan_to_num(np.asarray(samples, dtype=np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(np.rint(x * 32768.0), -32768, 32767).astype(np.int16)


# --- decoding ---


def decode(
    data: bytes,
    *,
    fmt: str | None = None,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Audio:
    """Untrusted audio bytes → 16 kHz mono float32 ``Audio``, or ``AudioError``.

    Containers (WAV, OGG/Opus, MP3, AMR, M4A, FLAC, WebM…) are recognised from their content,
    so ``fmt`` matters only for headerless input: ``"ulaw"`` (8 kHz G.711 μ-law) and
    ``"s16le"`` (16 kHz 16-bit little-endian PCM). Other values are ignored.
    """
    if not data:
        raise AudioError("no audio bytes", code="audio-empty")
    if len(data) > max_bytes:
        raise AudioError(
            f"{len(data)} bytes is over the {max_bytes}-byte limit", code="audio-too-large"
        )
    if fmt in ("ulaw", "s16le"):
        return _decode_raw(data, fmt, max_seconds)
    try:
        return _decode_container(data, max_seconds)
    except AudioError:
        raise
    except _AV_ERRORS as err:
        raise AudioError(f"cannot decode audio: {err}", code="audio-corrupt") from err
    except Exception as err:
        # Untrusted bytes reach deep into FFmpeg and PyAV; whatever else breaks, this input is
        # not usable audio. Logged with the traceback so a bug here does not stay hidden.
        _LOGGER.exception("unexpected error decoding %d bytes of audio", len(data))
        raise AudioError(f"cannot decode audio: {err!r}", code="audio-corrupt") from err


def _decode_raw(data: bytes, fmt: str, max_seconds: float) -> Audio:
    rate, width = (_ULAW_RATE, 1) if fmt == "ulaw" else (PIPELINE_RATE, 2)
    if len(data) % width:
        raise AudioError(f"{fmt} audio has an odd number of bytes", code="audio-corrupt")
    seconds = len(data) / width / rate
    if seconds > max_seconds + _SLACK_SECONDS:
        raise _too_long(seconds, max_seconds)
    if fmt == "ulaw":
        return decode_ulaw(data)
    pcm = np.frombuffer(data, dtype="<i2")
    return Audio(pcm.astype(np.float32) / 32768.0, PIPELINE_RATE)


def _decode_container(data: bytes, max_seconds: float) -> Audio:
    with _open(data) as container:
        if not container.streams.audio:
            raise AudioError("the file has no audio stream", code="audio-unsupported")
        stream = container.streams.audio[0]
        declared = _declared_seconds(container, stream)
        if declared > max_seconds + _SLACK_SECONDS:
            raise _too_long(declared, max_seconds)
        if stream.codec_context is None:
            raise AudioError("no decoder for this audio codec", code="audio-unsupported")
        rate = stream.codec_context.sample_rate
        if rate and not _MIN_RATE <= rate <= _MAX_RATE:
            raise _bad_rate(rate)
        samples, seconds = _to_pipeline_rate(container.decode(stream), max_seconds)
        exact = container.format.name.split(",")[0] in _EXACT_DURATION
    if not samples.size:
        raise AudioError("the audio stream has no samples", code="audio-empty")
    if exact and declared > 1.0 and seconds < declared * _LOST_FRACTION:
        raise AudioError(
            f"decoded {seconds:.2f} s of a {declared:.2f} s stream", code="audio-corrupt"
        )
    return Audio(samples, PIPELINE_RATE)


def _open(data: bytes) -> Any:
    try:
        return av.open(
            io.BytesIO(data),
            mode="r",
            container_options={"format_whitelist": _DEMUXERS},
            metadata_errors="ignore",
        )
    except _AV_ERRORS as err:
        code = "audio-corrupt" if _looks_like_audio(data) else "audio-unsupported"
        what = "unreadable audio" if code == "audio-corrupt" else "not a supported audio format"
        raise AudioError(f"{what}: {err}", code=code) from err


def _looks_like_audio(data: bytes) -> bool:
    head = data[:12]
    if head.startswith(_MAGIC) or head[4:8] == b"ftyp":
        return True
    if head.startswith((b"RIFF", b"FORM")):
        return head[8:12] in (b"WAVE", b"AIFF", b"AIFC")
    # MPEG audio frame sync (MP3 without an ID3 tag, ADTS AAC)
    return len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0


def _declared_seconds(container: Any, stream: Any) -> float:
    """The longest duration the container or stream claims (0 when none)."""
    claims = [0.0]
    if container.duration is not None and container.duration > 0:
        claims.append(container.duration / av.time_base)
    if stream.duration is not None and stream.duration > 0 and stream.time_base:
        claims.append(float(stream.duration * stream.time_base))
    return max(claims)


def _to_pipeline_rate(frames: Iterable[Any], max_seconds: float) -> tuple[Samples, float]:
    """Downmix and resample decoded frames to PIPELINE_RATE, stopping past ``max_seconds``.

    Returns the samples and the decoded input duration. The resampler is rebuilt when the
    input rate changes mid-stream (chained Ogg, MP3 with mixed frames).
    """
    chunks: list[Samples] = []
    seconds = 0.0
    rate = 0
    stream: Any = None
    for frame in frames:
        if not frame.samples:
            continue
        if frame.sample_rate != rate:
            if not _MIN_RATE <= frame.sample_rate <= _MAX_RATE:
                raise _bad_rate(frame.sample_rate)
            if stream is not None:
                chunks.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
            rate = frame.sample_rate
            stream = None
            if rate != PIPELINE_RATE:
                stream = soxr.ResampleStream(rate, PIPELINE_RATE, 1, dtype="float32")
        # Counted before the work is done, so a lying header costs at most max_seconds.
        seconds += frame.samples / rate
        if seconds > max_seconds + _SLACK_SECONDS:
            raise _too_long(seconds, max_seconds, decoded=True)
        mono = _downmix(frame)
        chunks.append(mono if stream is None else stream.resample_chunk(mono))
    if stream is not None:
        chunks.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    if not chunks:
        return np.zeros(0, dtype=np.float32), 0.0
    # Resampling full-scale garbage rings past ±1; Audio promises [-1, 1].
    return np.clip(np.concatenate(chunks), -1.0, 1.0, dtype=np.float32), seconds


def _downmix(frame: Any) -> Samples:
    """One decoded frame of any sample format and channel count → mono float32 in [-1, 1].

    Done here rather than by FFmpeg's resampler, which refuses many channel counts
    without a standard layout (9, 32, 64…).
    """
    channels = frame.layout.nb_channels
    if channels < 1:
        raise AudioError("a frame has no channels", code="audio-corrupt")
    x = frame.to_ndarray()
    if not frame.format.is_planar:
        x = x.reshape(-1, channels).T
    if x.dtype == np.uint8:
        y = (x.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(x.dtype, np.integer):
        y = x / float(2 ** (8 * x.dtype.itemsize - 1))
    else:
        # Float PCM from garbage bytes can hold NaN, inf and huge values.
        y = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0), -1.0, 1.0)
    return np.asarray(y.mean(axis=0), dtype=np.float32)


def _too_long(seconds: float, max_seconds: float, *, decoded: bool = False) -> AudioError:
    if decoded:
        message = f"audio runs past the {max_seconds:g} s limit (stopped decoding there)"
    else:
        message = f"audio is {seconds:.1f} s long; the limit is {max_seconds:g} s"
    return AudioError(message, code="audio-too-long")


def _bad_rate(rate: int) -> AudioError:
    return AudioError(f"a sample rate of {rate} Hz is not audio", code="audio-unsupported")


# --- encoding ---


def encode_wav(audio: Audio, rate: int | None = None) -> bytes:
    """16-bit PCM mono WAV, resampled to ``rate`` first if given (8000 for Twilio ``<Play>``)."""
    if rate is not None:
        audio = to_rate(audio, rate)
    if audio.rate <= 0:
        raise ValueError(f"sample rate must be positive, not {audio.rate}")
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(audio.rate)
        w.writeframes(to_pcm16(audio.samples).astype("<i2").tobytes())
    return out.getvalue()


def encode_ogg_opus(audio: Audio, rate: int = 48000, bitrate: int = 24000) -> bytes:
    """OGG/Opus mono voice note (WhatsApp), encoded at ``rate`` (one of ``OPUS_RATES``)."""
    if rate not in OPUS_RATES:
        raise ValueError(f"Opus encodes at {OPUS_RATES} Hz, not {rate}")
    # Opus rejects other rates (piper speaks at 22050): protocols.md §6.3
    samples = np.ascontiguousarray(to_rate(audio, rate).samples, dtype=np.float32)
    if not samples.size:
        # An Ogg stream without packets is written as zero bytes; send 20 ms of silence.
        samples = np.zeros(rate // 50, dtype=np.float32)
    out = io.BytesIO()
    with av.open(out, mode="w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=rate, layout="mono")
        stream.bit_rate = bitrate
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return out.getvalue()


def encode_ulaw(audio: Audio) -> bytes:
    """8 kHz μ-law bytes (Twilio Media Streams)."""
    return pcm16_to_ulaw(to_pcm16(to_rate(audio, _ULAW_RATE).samples))


def encode(audio: Audio, fmt: str) -> bytes:
    """Encode as ``"wav"`` (at the audio's own rate), ``"ogg"`` (Opus 48 kHz) or ``"ulaw"``."""
    if fmt == "wav":
        return encode_wav(audio)
    if fmt == "ogg":
        return encode_ogg_opus(audio)
    if fmt == "ulaw":
        return encode_ulaw(audio)
    raise AudioError(f"cannot encode audio as {fmt!r} (wav, ogg, ulaw)", code="audio-unsupported")


def content_type(fmt: str) -> str:
    """The Content-Type to serve a format with: ``"wav"`` → ``"audio/wav"``…"""
    try:
        return _CONTENT_TYPES[fmt]
    except KeyError:
        raise AudioError(f"no content type for {fmt!r}", code="audio-unsupported") from None


def format_for_path(path: str) -> str:
    """Format name from a file name: ``"note.opus"`` → ``"ogg"``, ``"call.raw"`` → ``"ulaw"``.

    An unknown extension comes back as itself, lower-cased without the dot (``""`` when there
    is none): ``decode`` then recognises the content, and ``encode`` refuses it.
    """
    ext = os.path.splitext(path)[1].lower()
    return _EXTENSIONS.get(ext, ext.lstrip("."))
