"""The analysis ticker: one periodic tick across all workers, taken over at once when one dies.

Each worker runs a ticker thread; a short Redis lease (a few tick periods) decides which one
ticks. A worker that starts takes the lease as soon as the last holder's expires, so a killed
worker stops the analysis for seconds, not for the minute RQ's scheduler lock would hold it.

One duty runs in every ticker, lease or not: the check that Redis still holds the state this
worker saw (``meshbot.state_epoch``). A Redis that came back empty lost the lease key too, and
the worker that takes it next may never have seen the old state.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial

import redis

from jobs.adapters.prometheus import MetricsSource
from jobs.adapters.slack_outbox import Outbox
from jobs.runtime import context
from jobs.runtime.analysis import tick
from jobs.runtime.api import queue_names
from jobs.runtime.handlers.approvals import sweep
from jobs.runtime.migration import advance_all
from jobs.runtime.reconcile import reconcile
from jobs.runtime.reports import deliver_owed
from jobs.runtime.scheduled import release_due
from jobs.runtime.takeover import take_over
from meshbot import cluster_scope
from meshbot.errors import MeshbotError
from meshbot.settings import Settings
from meshbot.state_epoch import StateEpoch
from rendering import admin as admin_text

log = logging.getLogger("meshbot.ticker")

LEASE_KEY = "meshbot:tick-lease"
# Renew only if we still hold it; never extend someone else's lease.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""


class Ticker:
    def __init__(self, connection: redis.Redis, settings: Settings) -> None:
        self.connection = connection
        self.settings = settings
        self.owner = uuid.uuid4().hex
        self.lease_ms = int(max(3.0, 3 * settings.tick_period_s) * 1000)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="meshbot-ticker", daemon=True)
        self._renew = connection.register_script(_RENEW)
        self.epoch = StateEpoch(connection)
        try:  # the epoch as this worker finds it: a loss from now on is noticed here too
            self.epoch.check()
        except redis.RedisError as exc:
            log.warning("ticker: Redis did not answer (%s); the state epoch is read on the "
                        "first tick", type(exc).__name__)
        self._sources: dict[str, MetricsSource] = {}

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        self._release()

    def holds_lease(self) -> bool:
        if self._renew(keys=[LEASE_KEY], args=[self.owner, self.lease_ms]):
            return True
        return bool(self.connection.set(LEASE_KEY, self.owner, nx=True, px=self.lease_ms))

    def _release(self) -> None:
        try:
            if self.connection.get(LEASE_KEY) == self.owner.encode():
                self.connection.delete(LEASE_KEY)
        except redis.RedisError:
            pass

    def _run(self) -> None:
        ctx = context.current()
        try:
            ctx.kube  # noqa: B018 — built now, not inside the first tick that must roll back
        except MeshbotError as exc:
            log.warning("Kubernetes client not ready yet: %s", exc.message)
        defaults = ctx.policy.defaults.slo.burn_rate.windows
        source = MetricsSource(self.settings.prometheus_url,
                               scrape_interval=self.settings.scrape_interval_s,
                               burn_windows=tuple(defaults))
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                holds = self.holds_lease()
            except redis.RedisError as exc:
                log.warning("ticker: Redis did not answer (%s); trying again", type(exc).__name__)
                holds = False
            if holds:
                self.run_once(ctx, source)
            else:
                self.watch_state(ctx)
            self._stop.wait(max(0.0, self.settings.tick_period_s - (time.monotonic() - started)))
        source.close()
        for other in self._sources.values():
            other.close()

    def run_once(self, ctx: context.JobContext, source: MetricsSource) -> None:
        """One tick's duties, each on its own: one failing never stops the others."""
        queues = queue_names(self.settings.queue_name)
        # Each cluster's rollouts are analysed against its own Prometheus and reconciled with
        # its own API server: a constant number of queries per cluster per tick.
        clusters = [(c, ctx.for_cluster(c)) for c in ctx.policy.cluster_names or (None,)]
        duties: list[tuple[str, str | None, Callable[[], object]]] = [
            ("state check", None, lambda: self._check_state(ctx)),
            # Reports Slack did not take when they were made, oldest first, once.
            ("delivery of owed reports", None, lambda: deliver_owed(ctx)),
            *(("analysis", c, partial(self._analyse, scoped, self._source_for(scoped, source)))
              for c, scoped in clusters),
            ("release of scheduled jobs", None, lambda: release_due(self.connection, queues)),
            ("takeover of dead workers' jobs", None, lambda: take_over(self.connection, queues)),
            *(("reconcile", c, partial(reconcile, scoped)) for c, scoped in clusters),
            # Expiry of approvals, and approved work that waited for a lock or the freeze.
            ("approval sweep", None, lambda: sweep(ctx, time.time())),
            # Every migration workflow moved on, each under its own lease, in its cluster.
            *(("migrations", c, partial(advance_all, scoped, self._source_for(scoped, source),
                                        self.owner)) for c, scoped in clusters),
            # A thread root's status changed twice within Slack's update interval waits on
            # the ticker's notifier (every cluster's shares it) until it may be shown.
            ("held status updates", None, lambda: ctx.notifier.flush(wait=False)),
        ]
        for duty_name, cluster, duty in duties:
            name = duty_name if cluster is None else f"{duty_name} of cluster {cluster}"
            try:
                with cluster_scope.scope(cluster):
                    duty()
            except redis.RedisError as exc:  # Redis went away mid-tick: the rest would fail too
                log.warning("ticker: %s stopped, Redis did not answer (%s); the next tick "
                            "tries again", name, type(exc).__name__)
                return
            except MeshbotError as exc:  # a state of the world (Slack, Kubernetes), not a bug
                log.warning("ticker: %s failed: %s", name, exc.message)
            except Exception:  # the ticker must outlive any one bad duty
                log.exception("ticker: %s failed", name)

    def _source_for(self, ctx: context.JobContext, default: MetricsSource) -> MetricsSource:
        """The Prometheus of the context's cluster (the default one unless the policy names
        another), kept for the ticker's life."""
        url = ctx.prometheus_url
        if ctx.cluster is None or url == self.settings.prometheus_url:
            return default
        if url not in self._sources:
            self._sources[url] = MetricsSource(
                url, scrape_interval=self.settings.scrape_interval_s,
                burn_windows=tuple(ctx.policy.defaults.slo.burn_rate.windows))
        return self._sources[url]

    def watch_state(self, ctx: context.JobContext) -> None:
        """The state check of a ticker that does not hold the lease (see the module doc)."""
        try:
            self._check_state(ctx)
        except redis.RedisError as exc:
            log.warning("ticker: state check stopped, Redis did not answer (%s); the next tick "
                        "tries again", type(exc).__name__)
        except Exception:  # the ticker must outlive it
            log.exception("ticker: state check failed")

    def _check_state(self, ctx: context.JobContext) -> None:
        loss = self.epoch.check()
        if loss is None:
            return
        if ctx.policy.channels:
            # Owed, not posted: the lease holder's delivery posts it, and again when Slack
            # failed; owed once per vanished epoch, by whichever worker noticed first.
            Outbox(self.connection).owe_root(ctx.policy.channels[0],
                                             admin_text.state_vanished(loss.at),
                                             once=f"state-lost:{loss.epoch}")
        self.epoch.said()

    @staticmethod
    def _analyse(ctx: context.JobContext, source: MetricsSource) -> None:
        report = tick(ctx, source)
        if report.due:
            log.info("tick: %d due, %d queries, events %s", report.due, report.queries,
                     report.events)
