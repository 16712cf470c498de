"""Realtime phone conversations over Twilio Media Streams (issue 5, protocols.md §2).

``vad``       streaming Silero VAD v6 (the model inside faster-whisper; no download)
``endpoint``  pure turn-taking state machine: utterance start/pause/end, barge-in, backchannels
``playback``  real-time pacing of 20 ms μ-law frames, marks, what the caller heard
``speaker``   one call's outbound speech: per-sentence synthesis, playback, phrase cache
``admission`` process-wide limits on calls and on turns in model work
``config``    ``RealtimeConfig``, ``CallInfo``, ``Hooks``
``session``   one call: VAD → endpoint → STT → answer → speaker; barge-in, keys, silence

The WebSocket route itself lives in ``voicebot.channels.twilio_stream``.
"""

from __future__ import annotations

from voicebot.realtime.admission import Admission
from voicebot.realtime.config import CallInfo, Hooks, RealtimeConfig
from voicebot.realtime.endpoint import EndpointConfig, Endpointer, is_backchannel
from voicebot.realtime.playback import Outbound, Pacer, Reply
from voicebot.realtime.session import CallSession, SessionFactory
from voicebot.realtime.speaker import PhraseCache, Speaker
from voicebot.realtime.vad import SileroModel, StreamingVad

__all__ = [
    "Admission",
    "CallInfo",
    "CallSession",
    "EndpointConfig",
    "Endpointer",
    "Hooks",
    "Outbound",
    "Pacer",
    "PhraseCache",
    "RealtimeConfig",
    "Reply",
    "SessionFactory",
    "SileroModel",
    "Speaker",
    "StreamingVad",
    "is_backchannel",
]
