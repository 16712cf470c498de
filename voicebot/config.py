"""Settings: one frozen object built from an optional TOML file and the environment.

Environment variables override the file. Secrets (tokens, app secrets) are read only from the
environment; a secret found in the config file is refused so it never lands in version control.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from voicebot.errors import ConfigError

__all__ = ["MetaSettings", "Settings", "TwilioSettings", "child_env"]

TWILIO_API_BASE = "https://api.twilio.com"
META_GRAPH_BASE = "https://graph.facebook.com/v21.0"
_SECRET_KEYS = {
    "auth_token",
    "app_secret",
    "access_token",
    "verify_token",
    "operator_token",
    "redis_url",
}


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    account_sid: str = ""
    auth_token: str = ""
    api_base: str = TWILIO_API_BASE

    @property
    def enabled(self) -> bool:
        return bool(self.account_sid and self.auth_token)


@dataclass(frozen=True, slots=True)
class MetaSettings:
    app_secret: str = ""
    verify_token: str = ""
    access_token: str = ""
    phone_number_id: str = ""
    graph_base: str = META_GRAPH_BASE

    @property
    def enabled(self) -> bool:
        return bool(self.app_secret and self.verify_token and self.access_token)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server needs. Paths are resolved relative to the working directory."""

    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str = "http://127.0.0.1:8080"
    data_dir: Path = Path("var")
    languages_dir: Path = Path("languages")
    knowledge_dir: Path = Path("knowledge")
    model_dir: Path | None = None  # default: <data_dir>/models
    model_base_url: str = "https://huggingface.co"  # only used by `voicebot models pull`
    device: str = "auto"  # auto | cpu | cuda
    cpu_threads: int = 2
    asr_workers: int = 1
    default_whisper: str = "base"
    default_language: str = "en"
    voice_mode: str = "turn"  # turn (<Record>) | realtime (Media Streams)
    answerer: str = "grounded"  # grounded | ct2-llm | openai
    llm_model: str = ""  # CT2 generator directory, or model name for an OpenAI-compatible server
    llm_base_url: str = ""  # e.g. http://127.0.0.1:8000/v1 (vLLM, llama.cpp server)
    max_audio_seconds: float = 120.0
    max_audio_bytes: int = 16 * 1024 * 1024
    max_body_bytes: int = 1024 * 1024
    rate_limit_per_minute: int = 20
    audit_retention_days: int = 90
    redact_phone_numbers: bool = True
    media_ttl_seconds: int = 3600
    stage_timeout_seconds: float = 30.0
    warm_models: bool = True
    # Channels (docs/channels.md). Twilio's hard ceiling per webhook is 15 s (protocols.md §1.2).
    voice_answer_wait_seconds: float = 5.0  # /turn plays the answer if ready by then, else holds
    voice_poll_wait_seconds: float = 2.0  # each /poll waits this long before redirecting again
    voice_poll_max_seconds: float = 60.0  # then the caller hears an apology
    voice_record_max_seconds: int = 30
    twilio_whatsapp_from: str = ""  # e.g. whatsapp:+14155238886 for "9: answer on WhatsApp"
    outbox_max_attempts: int = 6  # then the reply is dead-lettered in the audit log
    outbox_backoff_seconds: float = 2.0  # first retry delay; doubles per attempt, with jitter
    channel_concurrency: int = 4  # inbound messages answered at once
    http_timeout_seconds: float = 15.0  # provider REST calls and media downloads
    twilio: TwilioSettings = field(default_factory=TwilioSettings)
    meta: MetaSettings = field(default_factory=MetaSettings)
    operator_token: str = ""
    # Scale mode (docs/scaling.md): state and turn queues in Redis instead of SQLite.
    backend: str = "sqlite"  # sqlite (embedded, one process) | redis (web nodes + workers)
    redis_url: str = "redis://127.0.0.1:6379/0"  # a secret when it holds a password: env only
    redis_prefix: str = "voicebot"  # key prefix, so several installs can share one Redis
    worker_reclaim_seconds: float = 30.0  # a turn pending this long on a dead worker is retaken
    worker_shed_seconds: float = 20.0  # queue older than this: answer in text only (no TTS)
    worker_drain_seconds: float = 25.0  # SIGTERM: finish in-flight turns for up to this long
    # Where a web node's speech engines run (docs/scaling.md "Voice on workers"): "local"
    # loads Whisper/Piper in the web process; "workers" (Redis backend only) sends each
    # transcription and synthesis to the `voicebot worker` pool over Redis.
    voice_engines: str = "local"  # local | workers
    rpc_timeout_seconds: float = 10.0  # a model call on the workers, queueing included
    rpc_concurrency: int = 2  # model calls one worker takes from the queue at once
    # SIGTERM on `serve`: live calls and background turns go on for up to this long (drain.py)
    drain_seconds: float = 25.0

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port {self.port} is out of range", code="config-port")
        if self.device not in {"auto", "cpu", "cuda"}:
            raise ConfigError(f"device must be auto, cpu or cuda, not {self.device!r}")
        if self.voice_mode not in {"turn", "realtime"}:
            raise ConfigError(f"voice_mode must be turn or realtime, not {self.voice_mode!r}")
        if self.answerer not in {"grounded", "ct2-llm", "openai"}:
            raise ConfigError(
                f"answerer must be grounded, ct2-llm or openai, not {self.answerer!r}"
            )
        if self.max_audio_seconds <= 0 or self.max_audio_bytes <= 0 or self.max_body_bytes <= 0:
            raise ConfigError("audio and body limits must be positive", code="config-limits")
        if self.outbox_max_attempts < 1 or self.channel_concurrency < 1:
            raise ConfigError(
                "outbox_max_attempts and channel_concurrency must be >= 1", code="config-limits"
            )
        if self.drain_seconds < 0 or self.worker_drain_seconds < 0:
            raise ConfigError("drain times cannot be negative", code="config-limits")
        if self.backend not in {"sqlite", "redis"}:
            raise ConfigError(f"backend must be sqlite or redis, not {self.backend!r}")
        if self.voice_engines not in {"local", "workers"}:
            raise ConfigError(
                f"voice_engines must be local or workers, not {self.voice_engines!r}",
                code="config-voice-engines",
            )
        if self.voice_engines == "workers" and self.backend != "redis":
            raise ConfigError(
                "voice_engines = workers needs the Redis backend (VOICEBOT_BACKEND=redis)",
                code="config-voice-engines",
            )
        if self.rpc_timeout_seconds <= 0 or self.rpc_concurrency < 1:
            raise ConfigError(
                "rpc_timeout_seconds must be positive and rpc_concurrency >= 1",
                code="config-limits",
            )
        if not self.public_url.startswith(("http://", "https://")):
            raise ConfigError("public_url must start with http:// or https://")

    @property
    def models_path(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.data_dir / "models"

    @classmethod
    def load(
        cls, config_file: Path | None = None, env: Mapping[str, str] | None = None
    ) -> Settings:
        """Build settings: defaults < config file < environment."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        if config_file is not None:
            try:
                raw = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
            except (OSError, tomllib.TOMLDecodeError) as err:
                raise ConfigError(f"cannot read config {config_file}: {err}") from err
            values = _from_file(raw)
        values.update(_from_env(env))
        twilio = TwilioSettings(
            account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
            auth_token=env.get("TWILIO_AUTH_TOKEN", ""),
            api_base=env.get("TWILIO_API_BASE", TWILIO_API_BASE).rstrip("/"),
        )
        meta = MetaSettings(
            app_secret=env.get("META_APP_SECRET", ""),
            verify_token=env.get("META_VERIFY_TOKEN", ""),
            access_token=env.get("META_ACCESS_TOKEN", ""),
            phone_number_id=env.get("META_PHONE_NUMBER_ID", ""),
            graph_base=env.get("META_GRAPH_BASE", META_GRAPH_BASE).rstrip("/"),
        )
        values["operator_token"] = env.get("VOICEBOT_OPERATOR_TOKEN", "")
        if "VOICEBOT_REDIS_URL" in env:
            values["redis_url"] = env["VOICEBOT_REDIS_URL"]
        return cls(twilio=twilio, meta=meta, **values)

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


_FIELD_TYPES = {f.name: f.type for f in fields(Settings)}


def _coerce(name: str, value: Any) -> Any:
    kind = str(_FIELD_TYPES[name])
    try:
        if "Path" in kind:
            return None if value in ("", None) else Path(value)
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            return str(value).strip().lower() in {"1", "true", "yes", "on"}
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}: cannot use {value!r}: {err}", code="config-type") from err
    return str(value)


def _from_file(raw: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key in _SECRET_KEYS or key in {"twilio", "meta"}:
            raise ConfigError(
                f"{key!r} must come from the environment, not the config file",
                code="config-secret-in-file",
            )
        if key not in _FIELD_TYPES:
            raise ConfigError(f"unknown setting {key!r}", code="config-unknown-key")
        out[key] = _coerce(key, value)
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELD_TYPES:
        if name in _SECRET_KEYS or name in {"twilio", "meta"}:
            continue
        key = "VOICEBOT_" + name.upper()
        if key in env:
            out[name] = _coerce(name, env[key])
    return out


def child_env(settings: Mapping[str, str]) -> dict[str, str]:
    """The environment for a child process that must take its settings from the caller only
    (``voicebot bench`` starting nodes): this process's environment without any
    ``VOICEBOT_*``, ``TWILIO_*`` or ``META_*`` variable, so no inherited secret or provider URL
    leaks in, plus ``settings``."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("VOICEBOT_", "TWILIO_", "META_"))
    }
    env.update(settings)
    return env
