"""Start meshbot's own processes (``serve``, ``worker``) as a person would, from the CLI.

Used by the end-to-end tests, the benchmarks and the demo, so all three run what ships.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from playground.redis_server import free_port


def wait_http_ok(host: str, port: int, path: str, timeout: float,
                 process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        conn = http.client.HTTPConnection(host, port, timeout=1)
        try:
            conn.request("GET", path)
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the process exited with {process.returncode} before {path} "
                               "answered")
        if time.monotonic() > deadline:
            raise TimeoutError(f"http://{host}:{port}{path} did not answer 200 in {timeout}s")
        time.sleep(0.05)  # polling a process we started; bounded by the deadline


class MeshbotProcess:
    """``meshbot <args>`` in a child process with the given environment (or ``python -m
    <module> <args>``: a benchmark's own server)."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path, *,
                 module: str = "meshbot.cli") -> None:
        self.args = args
        self.module = module
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> Self:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args], env=self.env,
                stdout=log, stderr=subprocess.STDOUT,
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: a worker dying mid-job, as a crash would."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class ServeProcess(MeshbotProcess):
    """``meshbot serve`` on a free loopback port, ready when ``/healthz`` answers."""

    def __init__(self, env: Mapping[str, str], log_path: Path, *, workers: int = 1,
                 threads: int = 8) -> None:
        self.port = free_port()
        super().__init__(["serve", "--host", "127.0.0.1", "--port", str(self.port),
                          "--workers", str(workers), "--threads", str(threads)], env, log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Self:
        super().start()
        try:
            wait_http_ok("127.0.0.1", self.port, "/healthz", timeout, self.process)
        except (RuntimeError, TimeoutError) as exc:
            self.stop()
            raise RuntimeError(f"meshbot serve did not start:\n{self.log()}") from exc
        return self
