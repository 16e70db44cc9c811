"""``meshbot serve``: the WSGI app behind gunicorn (threaded workers), not Bolt's dev server.

The app is imported only inside ``load`` (in each worker): prometheus_client must not be imported
before ``serve`` has set up the metric files the workers share (``meshbot.multiproc``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from meshbot.logs import configure_logging
from meshbot.multiproc import use_shared_metric_files
from meshbot.settings import Settings
from policies.loader import load_policy_file

if TYPE_CHECKING:
    from wsgiref.types import WSGIApplication as WSGIApp

    from bot.http import MeshbotWSGI


def build_wsgi(settings: Settings) -> MeshbotWSGI:
    from bot.assembly import build_wsgi as assemble

    return assemble(settings)


class Gunicorn(BaseApplication):  # type: ignore[misc]
    """gunicorn with ``options``, serving the WSGI app ``load`` builds in each worker."""

    def __init__(self, options: dict[str, Any], load: Callable[[], WSGIApp]) -> None:
        self.options = options
        self._load = load
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> WSGIApp:
        return self._load()


def gunicorn_options(*, host: str, port: int, workers: int, threads: int) -> dict[str, Any]:
    """How ``meshbot serve`` runs gunicorn; ``bench.ack_latency``'s floor runs the same."""
    return {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,
        "loglevel": "warning",
    }


def serve(*, host: str, port: int, workers: int, threads: int) -> None:
    settings = Settings()
    configure_logging()
    load_policy_file(settings.policy_path)  # fail fast, before forking, on a bad policy
    metric_files = use_shared_metric_files()  # /metrics counts every worker process
    options = gunicorn_options(host=host, port=port, workers=workers, threads=threads)
    # Built in each worker after the fork, so no Redis connection is shared across processes.
    Gunicorn({**options, "on_exit": lambda _arbiter: metric_files.remove()},
             lambda: build_wsgi(Settings())).run()
