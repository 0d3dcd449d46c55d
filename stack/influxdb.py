"""InfluxDB OSS 2.7 built from the Go module proxy, run and onboarded locally.

`go install` refuses the module (its go.mod has `replace` directives), so the module is
downloaded, copied somewhere writable and ``./cmd/influxd`` built there. libflux (Rust) is
built on the way by influxdata's pkg-config wrapper through cargo.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from latscope.procs import Service, port_open, run_step, wait_for
from latscope.stack.kafka import require

MODULE = "github.com/influxdata/influxdb/v2"

# libflux's flux-core denies warnings; today's rustc warns about code that was clean then.
# RUSTFLAGS does not reach host-built crates under `cargo build --target`, so a rustc wrapper
# caps lints for every crate instead.
RUSTC_WRAPPER = """#!/bin/sh
case " $* " in *" --crate-name "*) exec "$@" --cap-lints=warn ;; esac
exec "$@"
"""


class LocalInfluxDB:
    def __init__(self, cache: Path, run_dir: Path, version: str, port: int, org: str,
                 bucket: str, host: str = "127.0.0.1") -> None:
        self.home = cache / "influxdb"
        self.binary = self.home / f"influxd-{version}"
        self.version = version
        self.run_dir = run_dir
        self.data_dir = run_dir / "influxdb-data"
        self.token_file = run_dir / "influxdb.token"
        self.password_file = run_dir / "influxdb.password"
        self.host, self.port, self.org, self.bucket = host, port, org, bucket
        self.service = Service("influxd", run_dir, marker=str(self.data_dir))

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def provisioned(self) -> bool:
        return self.binary.exists()

    def provision(self) -> None:
        if self.provisioned():
            return
        go = require("go", "install Go 1.21+ (https://go.dev/doc/install or apt-get install "
                           "golang) to build influxd")
        require("cargo", "install Rust with rustup (cargo) to build influxd's libflux")
        build_log = self.home / "build.log"
        self.home.mkdir(parents=True, exist_ok=True)
        out = run_step([go, "mod", "download", "-json", f"{MODULE}@{self.version}"],
                       f"downloading InfluxDB {self.version} module", build_log, cwd=self.home)
        module_dir = Path(json.loads(out)["Dir"])
        src = self.home / "src"
        shutil.rmtree(src, ignore_errors=True)
        shutil.copytree(module_dir, src)
        for root, dirs, files in os.walk(src):
            for name in dirs + files:
                p = Path(root, name)
                if not p.is_symlink():
                    p.chmod(p.stat().st_mode | 0o200)
        bin_dir = self.home / "bin"
        run_step([go, "build", "-o", str(bin_dir / "pkg-config"), "github.com/influxdata/pkg-config"],
                 "building influxdata pkg-config", build_log, cwd=src)
        wrapper = bin_dir / "rustc-wrapper"
        wrapper.write_text(RUSTC_WRAPPER)
        wrapper.chmod(0o755)
        tmp = self.binary.with_suffix(".partial")
        run_step([go, "build", "-o", str(tmp), "./cmd/influxd"],
                 "building influxd + libflux (first time: several minutes)", build_log, cwd=src,
                 env={"PKG_CONFIG": str(bin_dir / "pkg-config"), "RUSTUP_TOOLCHAIN": "stable",
                      "RUSTC_WRAPPER": str(wrapper), "GOFLAGS": "-buildvcs=false"})
        tmp.rename(self.binary)
        shutil.rmtree(src, ignore_errors=True)

    def start(self, timeout: float = 60.0) -> None:
        if not self.healthy():
            if port_open(self.host, self.port):
                raise RuntimeError(f"port {self.port} is taken by a process LatScope did not start")
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self.service.start([
                str(self.binary), "--reporting-disabled",
                f"--http-bind-address={self.host}:{self.port}",
                f"--bolt-path={self.data_dir / 'influxd.bolt'}",
                f"--engine-path={self.data_dir / 'engine'}",
                f"--sqlite-path={self.data_dir / 'influxd.sqlite'}",
                "--log-level=warn"])
            try:
                wait_for(self.healthy, timeout, "influxd", alive=self.service.running)
            except (RuntimeError, TimeoutError) as e:
                raise RuntimeError(f"{e}; last log lines:\n{self.service.log_tail()}") from None
        self.onboard()

    def _request(self, method: str, path: str, body: dict | None = None,
                 token: str | None = None) -> tuple[int, dict]:
        req = urllib.request.Request(
            self.url + path, method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Content-Type": "application/json",
                     **({"Authorization": f"Token {token}"} if token else {})})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, {}
        except (OSError, ValueError):
            return 0, {}

    def healthy(self) -> bool:
        code, body = self._request("GET", "/health")
        return code == 200 and body.get("status") == "pass"

    def onboard(self) -> None:
        """First start only: create org, bucket and an all-access token (file mode 600)."""
        code, body = self._request("GET", "/api/v2/setup")
        if code != 200 or not body.get("allowed"):
            return
        token = secrets.token_urlsafe(32)
        password = secrets.token_urlsafe(18)
        code, _ = self._request("POST", "/api/v2/setup", {
            "username": "latscope", "password": password, "org": self.org,
            "bucket": self.bucket, "token": token, "retentionPeriodSeconds": 0})
        if code not in (200, 201):
            raise RuntimeError(f"InfluxDB onboarding failed (HTTP {code})")
        for path, secret in ((self.token_file, token), (self.password_file, password)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secret + "\n")

    def token(self) -> str | None:
        try:
            return self.token_file.read_text().strip()
        except OSError:
            return None

    def authorized(self) -> bool:
        token = self.token()
        code, _ = self._request("GET", f"/api/v2/buckets?name={self.bucket}", token=token)
        return token is not None and code == 200

    def stop(self) -> bool:
        return self.service.stop()
