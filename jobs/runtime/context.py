"""What a job works with, built once per worker process from the settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from functools import cached_property

import redis

from jobs.adapters.audit import AuditLog
from jobs.adapters.kube import KubeClient
from jobs.adapters.rollout_store import RolloutStore
from jobs.adapters.slack_notifier import Notifier
from meshbot.settings import Settings
from policies.loader import load_policy_file
from policies.policy import Policy


@dataclass
class JobContext:
    settings: Settings
    policy: Policy
    redis: redis.Redis

    @cached_property
    def store(self) -> RolloutStore:
        return RolloutStore(self.redis)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.redis)

    @cached_property
    def notifier(self) -> Notifier:
        return Notifier.from_settings(self.settings, redis_client=self.redis)

    @cached_property
    def kube(self) -> KubeClient:
        return KubeClient.from_environment(settings=self.settings)


_lock = threading.Lock()
_current: JobContext | None = None


def current() -> JobContext:
    """The process's context, built on first use (the settings are read from the environment)."""
    global _current
    with _lock:
        if _current is None:
            settings = Settings()
            _current = JobContext(
                settings=settings,
                policy=load_policy_file(settings.policy_path),
                redis=redis.Redis.from_url(settings.redis_url),
            )
        return _current


def reset() -> None:
    """Forget the process's context (tests that change the environment between runs)."""
    global _current
    with _lock:
        _current = None
