"""Configuration: the example directory loads, every kind of mistake names file and field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from latscope.cli import main
from latscope.config import ConfigError, load
from latscope.config_cli import resolved
from latscope.paths import REPO_ROOT
from latscope.schemas.sampling import MSS_STRIDE

EXAMPLE = REPO_ROOT / "conf"
SEED = Path(__file__).resolve().parent / "data" / "seed-conf"  # the original format, verbatim


@pytest.fixture
def conf(tmp_path: Path) -> Path:
    d = tmp_path / "conf"
    shutil.copytree(EXAMPLE, d)
    return d


def test_example_loads_and_resolves() -> None:
    loaded = load(EXAMPLE)
    view = resolved(loaded.config)
    kinds = {s["hostname"]: (s["kind"], s["parent"]) for s in view["servers"]}
    assert kinds == {"node1": ("host", None), "node2": ("host", None), "node1-vm": ("vm", "node1")}
    assert [t["host"] for t in view["sync"]["targets"]] == ["node1", "node2"]
    assert view["sync"]["interval_s"] == 64
    assert loaded.config.sampling.stride == 72400
    assert loaded.sources["kafka"].name == "latscope.yaml"


def test_original_directory_reads_unchanged() -> None:
    loaded = load(SEED)
    assert len(loaded.config.servers) == 3
    assert any("redis_info.yaml" in n and "kafka" in n for n in loaded.notes)
    assert any("database_info.yaml" in n and "influxdb" in n for n in loaded.notes)


def test_single_file_form(tmp_path: Path) -> None:
    f = tmp_path / "latscope.yaml"
    f.write_text("sampling: {size: 0, ports: [5201]}\ntime_sync: {time_interval: 2}\n"
                 "servers:\n  - {address: 10.0.0.1, hostname: a, metadata_key: 1}\n"
                 "  - {address: 10.0.0.2, hostname: c, metadata_key: 2, iscontainer: 1,\n"
                 "     container_address: [172.17.0.2]}\n")
    config = load(f).config
    assert config.sampling.stride == MSS_STRIDE
    assert config.servers[1].kind == "container" and config.server(1).hostname == "a"


def _error(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load(path)
    return str(e.value)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize("file,old,new,expect", [
    ("sampling_info.yaml", "size: 72400", "size: -1", "size: got -1: expected greater than or equal to 0"),
    ("sampling_info.yaml", "size: 72400", "size: lots", "size: got 'lots': expected a valid integer"),
    ("sampling_info.yaml", "filter_retrans: 1", "filter_retrans: 2",
     "filter_retrans: got 2: expected 0 or 1"),
    ("sampling_info.yaml", "- 5001", "- 70000", "ports[0]: got 70000: expected less than or equal"),
    ("sampling_info.yaml", "interval: 1", "intervall: 1", "intervall: unknown key"),
    ("connect_info.yaml", "address: 10.20.0.6", "address: node1.example", "servers[0].address: got"),
    ("connect_info.yaml", "hostname: node2", "hostnam: node2",
     "servers[1].hostname: required key is missing"),
    ("connect_info.yaml", "isvm: 1", "isvm: 7", "servers[2].isvm: got 7: expected the metadata_key"),
    ("connect_info.yaml", "metadata_key: 2", "metadata_key: 1", "servers[1].metadata_key: got 1"),
    ("ping_info.yaml", "address: 10.20.0.8", "address: 10.20.0.99", "servers[1].address: got '10.20.0.99'"),
    ("time_sync.yaml", "time_interval: 64", "time_interval: 0", "time_interval: got 0"),
    ("latscope.yaml", "linger_ms: 50", "linger_ms: 50\n  turbo: true", "agent.turbo: unknown key"),
    ("latscope.yaml", "org: latscope", "org: [a, b]", "influxdb.org: got ['a', 'b']"),
])
def test_each_mistake_names_file_and_field(conf: Path, file: str, old: str, new: str,
                                           expect: str) -> None:
    _edit(conf / file, old, new)
    message = _error(conf)
    assert str(conf / file) in message
    assert expect in message


def test_bad_yaml_names_file(conf: Path) -> None:
    (conf / "time_sync.yaml").write_text("time_interval: [64\n")
    assert f"{conf / 'time_sync.yaml'}: not valid YAML" in _error(conf)


def test_section_given_twice(conf: Path) -> None:
    with open(conf / "latscope.yaml", "a") as f:
        f.write("sampling: {size: 100}\n")
    message = _error(conf)
    assert "sampling: also given by" in message and "sampling_info.yaml" in message


def test_missing_path(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "nope.yaml")
    assert "no configuration files found" in _error(tmp_path)


def test_cli_check(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "node1-vm" in out and "vm of node1" in out
    _edit(conf / "sampling_info.yaml", "size: 72400", "size: -1")
    assert main(["config", "check", str(conf)]) == 2
    err = capsys.readouterr().err
    assert "sampling_info.yaml: size: got -1" in err


def test_password_never_printed(conf: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _edit(conf / "management_server_info.yaml", "username: ops", "username: ops\npassword: hunter2")
    assert main(["config", "check", "--json", str(conf)]) == 0
    assert "hunter2" not in capsys.readouterr().out
    assert "hunter2" not in repr(load(conf).config)


@pytest.mark.parametrize("file,old,new,secret,named", [
    ("management_server_info.yaml", "username: ops", "username: ops\npassword: 123456",
     "123456", "password"),
    ("management_server_info.yaml", "username: ops", "username: ops\npassword: [hunter2x]",
     "hunter2x", "password"),
    ("latscope.yaml", "token_file:", "token: 12345678901234\n  token_file:", "12345678901234",
     "influxdb.token"),
    ("latscope.yaml", "settings: {}", "settings: {sasl.password: [s3cr3t-pw]}", "s3cr3t-pw",
     "kafka.settings"),
    ("latscope.yaml", "influxdb:\n  url: http://127.0.0.1:8086",
     "influxdb: {url: 1, token: tok-77777, turbo: 1}\nunused:\n  url: http://127.0.0.1:8086",
     "tok-77777", "influxdb"),
    ("connect_info.yaml", "hostname: node2", "hostname: node2\n      password: [pw-4242]",
     "pw-4242", "servers[1].password"),
])
def test_config_errors_never_show_a_secret(conf: Path, capsys: pytest.CaptureFixture[str],
                                           file: str, old: str, new: str, secret: str,
                                           named: str) -> None:
    """A bad secret is named by file and field, never shown (nor the section holding it)."""
    _edit(conf / file, old, new)
    message = _error(conf)
    assert named in message and str(conf / file) in message
    assert secret not in message
    assert main(["config", "check", str(conf)]) == 2
    assert secret not in capsys.readouterr().err


def test_ssh_password_warned_about_never_shown(conf: Path, capsys: pytest.CaptureFixture[str],
                                               ) -> None:
    """connect_info's legacy `password` still loads (the original format), and `config check`
    warns that it is there, naming the server and field, never the value."""
    assert load(conf).warnings == []
    _edit(conf / "connect_info.yaml", "hostname: node2", "hostname: node2\n      password: pw-9191x")
    assert load(conf).config.servers[1].password == "pw-9191x"
    for argv in (["config", "check", str(conf)], ["config", "check", "--json", str(conf)]):
        assert main(argv) == 0
        out, err = capsys.readouterr()
        assert "pw-9191x" not in out + err
        warned = err if "--json" not in argv else "\n".join(json.loads(out)["warnings"])
        assert "servers[1].password" in warned and "node2" in warned, warned
