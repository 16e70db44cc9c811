"""Run a private ``prometheus`` (Debian package ``prometheus``) on a free loopback port.

It scrapes the given targets every second, so tests see a change within a few seconds; its
storage is a directory of ours, kept across ``restart()`` as a real server's would be.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from playground.redis_server import free_port

BINARY_FALLBACK = Path("/usr/bin/prometheus")  # where the Debian package puts it


def find_binary() -> str:
    found = shutil.which("prometheus")
    if found is not None:
        return found
    if BINARY_FALLBACK.exists():
        return str(BINARY_FALLBACK)
    raise RuntimeError(
        "the prometheus binary is not installed (Debian package `prometheus`, /usr/bin/prometheus):"
        " `make test` installs it"
    )


def _config(targets: Sequence[str], scrape_interval: float) -> str:
    # JSON is YAML: no YAML writer needed, and quoting is always right.
    interval = f"{max(1, round(scrape_interval * 1000))}ms"
    return json.dumps(
        {
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "scrape_configs": [
                {"job_name": "mesh", "static_configs": [{"targets": list(targets)}]}
            ],
        },
        indent=2,
    )


class PrometheusServer:
    """A ``prometheus`` process of our own; a context manager."""

    def __init__(
        self,
        directory: Path,
        targets: Sequence[str],
        *,
        scrape_interval: float = 1.0,
        enable_lifecycle: bool = False,
    ) -> None:
        self.binary = find_binary()
        self.directory = directory
        self.targets = list(targets)
        self.scrape_interval = scrape_interval
        self.enable_lifecycle = enable_lifecycle
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "prometheus.log"

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-15:])
        except OSError:
            return "(no log)"

    def start(self, timeout: float = 15.0) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory / "prometheus.yml"
        config.write_text(_config(self.targets, self.scrape_interval))
        command = [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--storage.tsdb.retention.time=2h",
            "--log.level=warn",
        ]
        if self.enable_lifecycle:
            command.append("--web.enable-lifecycle")
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._answers("/-/ready"):
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"prometheus exited at start:\n{self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus not ready after {timeout}s:\n{self._log_tail()}")
            time.sleep(0.05)  # polling a process we just started; bounded by the deadline

    def _answers(self, path: str) -> bool:
        try:
            with urllib.request.urlopen(self.url + path, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=5)
            self._process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def api(self, path: str) -> Any:
        """GET an API path and return its ``data`` (for waiting on conditions in tests)."""
        with urllib.request.urlopen(self.url + path, timeout=5) as response:
            return json.load(response)["data"]

    def wait_for_targets(self, timeout: float = 15.0) -> None:
        """Until every target has been scraped successfully at least once."""
        deadline = time.monotonic() + timeout
        while True:
            active = self.api("/api/v1/targets")["activeTargets"]
            if len(active) == len(self.targets) and all(t["health"] == "up" for t in active):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"targets not all up after {timeout}s: {active}")
            time.sleep(0.1)  # bounded by the deadline

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
