"""Speech engines on the workers: the ``Transcriber`` and ``Synthesizer`` of a web node with
``voice_engines = "workers"``.

They implement the Protocols of ``engines.base``, so the pipeline, realtime calls and
``<Record>`` turns run unchanged while the models run in ``voicebot worker`` processes
(voicebot/scale/rpc.py carries the calls). The web node loads no Whisper or Piper model;
the VAD of realtime calls stays local, since it runs on every 32 ms window.

What they claim to support is taken from the packs, not asked of the pool: a worker pool
can change under a running web node (workers start after web nodes, roll, differ in what
is installed), so a snapshot of it would be stale. A worker that cannot serve a request says
so with the engine's own coded error (``stt-unsupported-language``, ``tts-unavailable``), and
the pipeline falls back to the pack's next voice exactly as with local engines.

Priority: whatever the calling code set (``voicebot.priority``), else the node's kind of
voice work: ``REALTIME`` on a node in ``voice_mode = "realtime"``, ``CALL`` otherwise.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from voicebot.audio import to_rate
from voicebot.config import Settings
from voicebot.engines.base import Synthesizer, Transcriber
from voicebot.engines.synth import parse_voice
from voicebot.errors import SynthesizeError, TranscribeError
from voicebot.messages import Audio, Transcript
from voicebot.metrics import Metrics
from voicebot.packs import LanguagePack
from voicebot.priority import Priority, explicit
from voicebot.scale.rpc import Reply, RpcClient, pcm_audio, pcm_bytes

__all__ = ["RemoteSynthesizer", "RemoteTranscriber", "remote_speech"]

_LOGGER = logging.getLogger(__name__)
STT_RATE = 16_000  # what Whisper takes; the web node resamples before sending


class _Remote:
    """What both engines share: the client, the default priority and the overhead metric."""

    def __init__(self, rpc: RpcClient, *, default: Priority, metrics: Metrics) -> None:
        self._rpc = rpc
        self._default = default
        self._metrics = metrics

    @property
    def priority(self) -> Priority:
        level = explicit()
        return self._default if level is None else level

    def _observe(self, kind: str, reply: Reply, started: float) -> None:
        total = time.perf_counter() - started
        overhead = max(0.0, total - reply.run_ms / 1000)
        self._metrics.observe("voicebot_rpc_overhead_seconds", overhead, kind=kind)
        _LOGGER.debug(
            "%s on %s: %.0f ms (queued %.0f, model %.0f)",
            kind,
            reply.worker,
            total * 1000,
            reply.waited_ms,
            reply.run_ms,
        )


class RemoteTranscriber(_Remote):
    """Whisper on the workers, for one pack (its model and language)."""

    def __init__(
        self,
        rpc: RpcClient,
        pack: LanguagePack,
        model: str,
        *,
        default: Priority,
        metrics: Metrics,
    ) -> None:
        super().__init__(rpc, default=default, metrics=metrics)
        self.name = f"workers:{model}"
        self.pack = pack.code
        self.language = pack.stt.language

    def supports(self, language: str) -> bool:
        return language == self.language

    async def transcribe(
        self,
        audio: Audio,
        *,
        language: str,
        prompt: str | None = None,
        beam_size: int | None = None,
        context_seconds: float | None = None,
    ) -> Transcript:
        started = time.perf_counter()
        args = {
            "pack": self.pack,
            "language": language,
            "prompt": prompt,
            "beam_size": beam_size,
            "context_seconds": context_seconds,
        }
        body = pcm_bytes(to_rate(audio, STT_RATE))
        reply = await self._rpc.call(
            "transcribe",
            args,
            body,
            priority=self.priority,
            error=TranscribeError,
            stage="stt",
        )
        self._observe("transcribe", reply, started)
        r = reply.result
        return Transcript(
            text=str(r["text"]),
            language=str(r["language"]),
            avg_logprob=float(r["avg_logprob"]),
            no_speech_prob=float(r["no_speech_prob"]),
            duration=float(r["duration"]),
        )


class RemoteSynthesizer(_Remote):
    """Piper, Festival and espeak-ng on the workers, by voice spec."""

    name = "workers"

    def supports(self, voice: str) -> bool:
        try:
            parse_voice(voice)
        except SynthesizeError:
            return False
        return True

    async def synthesize(self, text: str, *, voice: str, speed: float = 1.0) -> Audio:
        started = time.perf_counter()
        reply = await self._rpc.call(
            "synthesize",
            {"text": text, "voice": voice, "speed": speed},
            priority=self.priority,
            error=SynthesizeError,
            stage="tts",
        )
        self._observe("synthesize", reply, started)
        return pcm_audio(reply.body, int(reply.result["rate"]))


def remote_speech(
    settings: Settings, metrics: Metrics
) -> tuple[RpcClient, Callable[[LanguagePack], Awaitable[Transcriber]], Synthesizer]:
    """The RPC client, a ``transcriber_for(pack)`` and a synthesizer, all on the workers."""
    rpc = RpcClient.open(settings)
    default = Priority.REALTIME if settings.voice_mode == "realtime" else Priority.CALL
    metrics.describe(
        "voicebot_rpc_overhead_seconds",
        "histogram",
        "Model calls on the workers: round trip less the model's own time (queue + Redis)",
    )
    transcribers: dict[str, RemoteTranscriber] = {}

    async def transcriber_for(pack: LanguagePack) -> Transcriber:
        if pack.code not in transcribers:
            model = pack.stt.model or settings.default_whisper
            transcribers[pack.code] = RemoteTranscriber(
                rpc, pack, model, default=default, metrics=metrics
            )
        return transcribers[pack.code]

    return rpc, transcriber_for, RemoteSynthesizer(rpc, default=default, metrics=metrics)
