"""Run the page: ``meshbot demo`` (until Ctrl-C), or a test's fixture (a thread of its own).

``PageServer`` serves ``app.build_app`` on one loopback port from an asyncio loop in a
background thread, so the caller keeps its own thread (the demo's wait for Ctrl-C, a test's
browser). A non-loopback host is refused: the page drives meshbot as anyone in the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType, TracebackType
from typing import Self

from aiohttp import web

from playground.redis_server import free_port
from playground.sample_mesh import SERVICES
from playground.web.app import build_app, is_loopback
from playground.web.live import CHECK_INTERVAL_S, Playground, live_playground

DEFAULT_PORT = 8765
RULE = "─" * 78


class PageServer:
    """The page of ``playground`` on http://127.0.0.1:``port`` (0: a free port)."""

    def __init__(self, playground: Playground, *, host: str = "127.0.0.1", port: int = 0):
        if not is_loopback(host):
            raise ValueError(f"the playground page serves loopback only, not {host!r}")
        self.playground, self.host = playground, host
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> Self:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="playground-page",
                                        daemon=True)
        self._thread.start()
        runner = web.AppRunner(build_app(self.playground), access_log=None)

        async def begin() -> None:
            await runner.setup()
            await web.TCPSite(runner, self.host, self.port).start()

        asyncio.run_coroutine_threadsafe(begin(), loop).result(timeout)
        self._runner = runner
        return self

    def stop(self, timeout: float = 10.0) -> None:
        loop, runner = self._loop, self._runner
        if loop is None:
            return
        if runner is not None:
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout)
        loop.close()
        self._loop = self._runner = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


@contextlib.contextmanager
def _page_on(playground: Playground, port: int) -> Iterator[PageServer]:
    """The page on ``port``, or on a free port when that one is taken (said so)."""
    page = PageServer(playground, port=port)
    try:
        page.start()
    except OSError as exc:
        page.stop()
        print(f"  port {port} is taken ({exc.strerror}); using a free one", flush=True)
        page = PageServer(playground).start()
    try:
        yield page
    finally:
        page.stop()


def run_page(workdir: Path, port: int = DEFAULT_PORT) -> int:
    """``meshbot demo``: start everything, print the page's URL, serve until Ctrl-C."""
    started = time.monotonic()
    print(f"Starting Redis, the Kubernetes emulator, the Slack stand-in, the mesh traffic "
          f"generator, Prometheus, meshbot serve and meshbot worker (files in {workdir}) ...",
          flush=True)
    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        with live_playground(workdir) as playground, \
                _page_on(playground, port) as page:
            print(RULE)
            print(f"meshbot playground, on loopback only (ready in "
                  f"{time.monotonic() - started:.1f}s):\n")
            print(f"    open  {page.url}\n")
            print(f"  #mesh-ops channel, {len(SERVICES)} services in production, traffic "
                  f"flowing; checks every {CHECK_INTERVAL_S:g}s")
            print(f"  Prometheus {playground.prometheus.url}   meshbot serve "
                  f"{playground.serve.url}")
            print(f"  logs: {playground.workdir}/serve.log, worker.log")
            print("  Ctrl-C stops everything.", flush=True)
            # Until Ctrl-C or SIGTERM; the wait wakes at once on either. Ctrl-C is handled here
            # rather than left to KeyboardInterrupt: a process started with SIGINT ignored (a
            # background job, nohup) would otherwise never stop on it.
            interrupt = signal.signal(signal.SIGINT, on_signal)
            try:
                while not stopping.wait(3600):
                    pass
            finally:
                signal.signal(signal.SIGINT, interrupt)
    except KeyboardInterrupt:  # Ctrl-C while starting
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    print("\nStopped every process the playground started.")
    return 0
