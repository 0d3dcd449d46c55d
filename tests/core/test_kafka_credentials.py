"""Where a Kafka client's password comes from: a private file (``kafka.password_file``), the
environment, or a private config file; never shown in an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from latscope import settings
from latscope.cli import main
from latscope.config import KAFKA_PASSWORD_ENV, ConfigError, load
from latscope.errors import UserError

SECRET = "s3cr3t-Pa55word-xyz"
SASL = ("    security.protocol: SASL_SSL\n    sasl.mechanism: SCRAM-SHA-512\n"
        "    sasl.username: agent\n")


def _config(tmp_path: Path, kafka_extra: str = "", settings_extra: str = "",
            mode: int = 0o644) -> Path:
    path = tmp_path / "latscope.yaml"
    path.write_text(f"kafka:\n  bootstrap: b:9093\n{kafka_extra}  settings:\n{SASL}{settings_extra}")
    path.chmod(mode)
    return path


def _secret_file(tmp_path: Path, mode: int) -> Path:
    f = tmp_path / "agent.password"
    f.write_text(SECRET + "\n")
    f.chmod(mode)
    return f


@pytest.fixture(autouse=True)
def _no_env_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KAFKA_PASSWORD_ENV, raising=False)


def test_password_file_fills_in_sasl_password(tmp_path: Path) -> None:
    f = _secret_file(tmp_path, 0o600)
    ks = settings.kafka(settings.config(_config(tmp_path, f"  password_file: {f}\n")))
    assert ks.settings["sasl.password"] == SECRET and ks.settings["sasl.username"] == "agent"
    assert SECRET not in repr(ks)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_a_password_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    f = _secret_file(tmp_path, mode)
    with pytest.raises(UserError) as e:
        settings.kafka(settings.config(_config(tmp_path, f"  password_file: {f}\n")))
    msg = str(e.value)
    assert "kafka.password_file" in msg and str(f) in msg and f"{mode:04o}" in msg
    assert SECRET not in msg


def test_missing_or_empty_password_file(tmp_path: Path) -> None:
    f = tmp_path / "nope.password"
    with pytest.raises(UserError, match=r"kafka\.password_file: cannot read .*nope\.password"):
        settings.kafka(settings.config(_config(tmp_path, f"  password_file: {f}\n")))
    f.write_text("\n")
    f.chmod(0o600)
    with pytest.raises(UserError, match="is empty"):
        settings.kafka(settings.config(_config(tmp_path, f"  password_file: {f}\n")))


def test_environment_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = settings.config(_config(tmp_path))
    with pytest.raises(UserError, match=f"no password: give kafka.password_file or \\${KAFKA_PASSWORD_ENV}"):
        settings.kafka(cfg)
    monkeypatch.setenv(KAFKA_PASSWORD_ENV, SECRET)
    assert settings.kafka(cfg).settings["sasl.password"] == SECRET


def test_file_and_inline_password_together_is_an_error(tmp_path: Path) -> None:
    f = _secret_file(tmp_path, 0o600)
    cfg = settings.config(_config(tmp_path, f"  password_file: {f}\n",
                                  f"    sasl.password: {SECRET}\n", mode=0o600))
    with pytest.raises(UserError, match=r"both password_file and settings\.sasl\.password") as e:
        settings.kafka(cfg)
    assert SECRET not in str(e.value)


def test_inline_secret_only_in_a_private_config(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _config(tmp_path, settings_extra=f"    sasl.password: {SECRET}\n", mode=0o644)
    with pytest.raises(ConfigError) as e:
        load(path)
    msg = str(e.value)
    assert str(path) in msg and "kafka.settings.sasl.password" in msg and "0644" in msg
    assert SECRET not in msg
    assert main(["config", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err
    path.chmod(0o600)
    assert settings.kafka(settings.config(path)).settings["sasl.password"] == SECRET


def test_influx_token_file_is_checked_too(tmp_path: Path) -> None:
    token = tmp_path / "influx.token"
    token.write_text("tok-123456\n")
    token.chmod(0o644)
    path = tmp_path / "latscope.yaml"
    path.write_text(f"influxdb:\n  token_file: {token}\n")
    cfg = load(path).config
    with pytest.raises(ConfigError) as e:
        cfg.influxdb.token_value()
    assert "influxdb.token_file" in str(e.value) and "tok-123456" not in str(e.value)
    token.chmod(0o600)
    assert cfg.influxdb.token_value() == "tok-123456"
