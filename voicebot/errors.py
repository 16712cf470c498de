"""Error tree. Every error carries a stable ``code``; only the pipeline turns codes into phrases.

VoicebotError(code, message)
├── ConfigError        bad settings or missing files            config-*
├── PackError          a language pack is invalid               pack-*
├── ModelError         a model is missing, corrupt, or unpulled model-*
├── AudioError         input audio is empty, corrupt, too long   audio-*
├── TranscribeError    speech recognition failed                stt-*
├── TranslateError     machine translation failed               mt-*
├── AnswerError        retrieval or answering failed            answer-*
├── SynthesizeError    speech synthesis failed                  tts-*
├── KnowledgeError     a knowledge entry is invalid             kb-*
└── ChannelError       a provider request or reply failed       channel-*
    └── SignatureError a webhook signature is missing or wrong  signature-*
"""

from __future__ import annotations

__all__ = [
    "AnswerError",
    "AudioError",
    "ChannelError",
    "ConfigError",
    "KnowledgeError",
    "ModelError",
    "PackError",
    "SignatureError",
    "SynthesizeError",
    "TranscribeError",
    "TranslateError",
    "VoicebotError",
]


class VoicebotError(Exception):
    """Base error: ``code`` is stable and machine-readable, ``message`` is for operators."""

    default_code = "error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code or self.default_code
        self.message = message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConfigError(VoicebotError):
    default_code = "config-invalid"


class PackError(VoicebotError):
    default_code = "pack-invalid"


class ModelError(VoicebotError):
    default_code = "model-missing"


class AudioError(VoicebotError):
    default_code = "audio-corrupt"


class TranscribeError(VoicebotError):
    default_code = "stt-failed"


class TranslateError(VoicebotError):
    default_code = "mt-failed"


class AnswerError(VoicebotError):
    default_code = "answer-failed"


class SynthesizeError(VoicebotError):
    default_code = "tts-failed"


class KnowledgeError(VoicebotError):
    default_code = "kb-invalid"


class ChannelError(VoicebotError):
    default_code = "channel-failed"


class SignatureError(ChannelError):
    default_code = "signature-invalid"
