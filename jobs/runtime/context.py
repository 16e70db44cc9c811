"""What a job works with, built once per worker process from the settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

import redis

from jobs.adapters.audit import AuditLog
from jobs.adapters.keys import Keys
from jobs.adapters.kube import KubeClient
from jobs.adapters.rollout_store import RolloutStore
from jobs.adapters.slack_notifier import Notifier
from meshbot.redis_client import connect
from meshbot.settings import Settings
from policies.loader import load_policy_file
from policies.policy import Policy

_lock = threading.Lock()


@dataclass
class JobContext:
    settings: Settings
    policy: Policy
    redis: redis.Redis
    # The policy's cluster this context drives (None: the only one of a policy naming none).
    cluster: str | None = None
    _clusters: dict[str, JobContext] = field(default_factory=dict, repr=False)

    def for_cluster(self, name: str | None) -> JobContext:
        """The context of one of the policy's clusters: its Kubernetes API, its Prometheus,
        its keys; built once and kept (a client per cluster, not per job)."""
        if name == self.cluster:
            return self
        with _lock:
            found = self._clusters.get(name or "")
            if found is None:
                found = JobContext(self.settings, self.policy, self.redis, cluster=name)
                # One Slack client for all clusters; each cluster's messages say its name
                # when there is more than one to tell apart.
                several = len(self.policy.clusters) > 1
                found.__dict__["notifier"] = (self.notifier.labelled(name)
                                              if several and name else self.notifier)
                self._clusters[name or ""] = found
            return found

    @cached_property
    def keys(self) -> Keys:
        return Keys(cluster=self.cluster)

    @property
    def prometheus_url(self) -> str:
        spec = self.policy.clusters.get(self.cluster) if self.cluster else None
        return (spec.prometheus_url if spec else None) or self.settings.prometheus_url

    @cached_property
    def store(self) -> RolloutStore:
        return RolloutStore(self.redis, self.keys)

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(self.redis, self.keys)

    @cached_property
    def notifier(self) -> Notifier:
        return Notifier.from_settings(self.settings, redis_client=self.redis)

    @cached_property
    def kube(self) -> KubeClient:
        spec = self.policy.clusters.get(self.cluster) if self.cluster else None
        return KubeClient.from_environment(spec.context if spec else None,
                                           settings=self.settings)




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
                redis=connect(settings.redis_url, "jobs"),  # a hung Redis fails the job
            )
        return _current


def reset() -> None:
    """Forget the process's context (tests that change the environment between runs)."""
    global _current
    with _lock:
        _current = None
