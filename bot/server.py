"""``meshbot serve``: the WSGI app behind gunicorn (threaded workers), not Bolt's dev server."""

from __future__ import annotations

from typing import Any

import redis
from gunicorn.app.base import BaseApplication
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.app import BotContext, create_app, web_client
from bot.groups import GroupResolver
from bot.http import MeshbotWSGI
from meshbot.logs import configure_logging
from meshbot.settings import Settings
from policies.loader import load_policy_file


def build_wsgi(settings: Settings) -> MeshbotWSGI:
    policy = load_policy_file(settings.policy_path)
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5,
                                  health_check_interval=30)
    ctx = BotContext(settings=settings, policy=policy, redis=client,
                     groups=GroupResolver(web_client(settings)))
    return MeshbotWSGI(SlackRequestHandler(create_app(ctx)), client)


class _Gunicorn(BaseApplication):  # type: ignore[misc]
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> MeshbotWSGI:
        # Built in each worker after the fork, so no Redis connection is shared across processes.
        return build_wsgi(Settings())


def serve(*, host: str, port: int, workers: int, threads: int) -> None:
    settings = Settings()
    configure_logging()
    load_policy_file(settings.policy_path)  # fail fast, before forking, on a bad policy
    _Gunicorn({
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 30,
        "graceful_timeout": 10,
        "keepalive": 5,
        "accesslog": None,
        "loglevel": "warning",
    }).run()
