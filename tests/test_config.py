from pathlib import Path

import pytest

from voicebot.config import Settings
from voicebot.errors import ConfigError


def test_env_overrides_file(tmp_path: Path) -> None:
    cfg = tmp_path / "voicebot.toml"
    cfg.write_text('port = 9000\nvoice_mode = "realtime"\ndata_dir = "state"\n')
    s = Settings.load(cfg, env={"VOICEBOT_PORT": "9100", "TWILIO_API_BASE": "http://127.0.0.1:1/"})
    assert s.port == 9100
    assert s.voice_mode == "realtime"
    assert s.data_dir == Path("state")
    assert s.models_path == Path("state/models")
    assert s.twilio.api_base == "http://127.0.0.1:1"


def test_secret_in_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "voicebot.toml"
    cfg.write_text('operator_token = "hunter2"\n')
    with pytest.raises(ConfigError) as err:
        Settings.load(cfg, env={})
    assert err.value.code == "config-secret-in-file"


def test_unknown_key_and_bad_values(tmp_path: Path) -> None:
    cfg = tmp_path / "voicebot.toml"
    cfg.write_text("porrt = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.load(cfg, env={})
    with pytest.raises(ConfigError):
        Settings.load(None, env={"VOICEBOT_PORT": "eighty"})
    with pytest.raises(ConfigError):
        Settings.load(None, env={"VOICEBOT_DEVICE": "tpu"})


def test_channels_enabled_only_with_secrets() -> None:
    s = Settings.load(None, env={"TWILIO_ACCOUNT_SID": "AC1"})
    assert not s.twilio.enabled
    s = Settings.load(None, env={"TWILIO_ACCOUNT_SID": "AC1", "TWILIO_AUTH_TOKEN": "t"})
    assert s.twilio.enabled
    assert not s.meta.enabled


def test_drain_seconds_from_env_and_never_negative() -> None:
    assert Settings.load(None, env={}).drain_seconds == 25.0
    assert Settings.load(None, env={"VOICEBOT_DRAIN_SECONDS": "2.5"}).drain_seconds == 2.5
    with pytest.raises(ConfigError) as err:
        Settings.load(None, env={"VOICEBOT_DRAIN_SECONDS": "-1"})
    assert err.value.code == "config-limits"
