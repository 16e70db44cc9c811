"""Alert threads: one Slack thread per Alertmanager alert group, kept up to date.

The first notification of a group posts the thread root in the service's channel (the policy's
``channel`` for it, else the first global channel); later ones update the root and say what
changed in the thread, and a resolved group says so. The root names the rollout in progress and
the commands to use; a rollback emoji on it rolls back (``jobs.api.alert_reaction``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from jobs.adapters.alert_threads import ROLLBACK_EMOJI, AlertThread, AlertThreads
from jobs.runtime import context
from jobs.runtime.context import JobContext
from jobs.runtime.handlers.common import links_text
from meshbot import cluster_scope
from meshbot.alerts import Notification
from meshbot.errors import MeshbotError, PermanentError
from rendering import alerts as alert_text
from rendering import replies
from rendering import traffic as traffic_text

log = logging.getLogger("meshbot.alerts")
ALERT_LOOKBACK_S = 3600.0  # the links of an alert thread show its last hour


def channel_for(ctx: JobContext, service: str | None) -> str:
    view = ctx.policy.service(service) if service else None
    if view is not None and view.channel:
        return view.channel
    if ctx.policy.channels:
        return ctx.policy.channels[0]
    raise PermanentError("an alert arrived but the policy names no channel to post it in "
                         "(set `channels`, or a `channel` for the service)")


def rollout_in_progress(ctx: JobContext, service: str | None) -> list[str]:
    rollout = ctx.store.get(service) if service else None
    if rollout is None or rollout.phase.terminal:
        return []
    return ["Rollout in progress:", *traffic_text.rollout_lines(rollout)]


def cluster_of(ctx: JobContext, notification: Notification, service: str | None) -> str | None:
    """The policy's cluster an alert is about: its ``cluster`` label (Prometheus's external
    label) when the policy knows it, else the service's only cluster; None when unknown."""
    named = notification.label("cluster")
    if named in ctx.policy.clusters:
        return named
    view = ctx.policy.service(service) if service else None
    return view.clusters[0] if view is not None and len(view.clusters) == 1 else None


def handle_alert(ctx: JobContext, notification: Notification) -> str:
    service = notification.service()
    threads = AlertThreads(ctx.redis)
    existing = threads.get(notification.group_key)
    channel = existing.channel if existing else channel_for(ctx, service)
    service = service or (existing.service if existing else None)
    cluster = cluster_of(ctx, notification, service) or (existing.cluster if existing else None)
    with cluster_scope.scope(cluster):  # its rollout, links and messages are its cluster's
        return _show(ctx.for_cluster(cluster), notification, threads, existing, channel,
                     service)


def _show(ctx: JobContext, notification: Notification, threads: AlertThreads,
          existing: AlertThread | None, channel: str, service: str | None) -> str:
    alerts = [alert_text.alert_lines(a) for a in notification.alerts]
    root = alert_text.alert_thread(service or "unknown service", notification.status, alerts,
                                 rollout_in_progress(ctx, service), sorted(ROLLBACK_EMOJI)[0])
    view = ctx.policy.service(service) if service else None
    if view is not None:
        now = time.time()
        links = links_text(ctx, view, now - ALERT_LOOKBACK_S, now)
        root = "\n".join(line for line in (root, links) if line)
    digest = notification.digest()
    if existing is None:
        ts = ctx.notifier.post_root(channel, root)
        threads.save(AlertThread(group_key=notification.group_key, channel=channel, ts=ts,
                                 service=service, digest=digest, cluster=ctx.cluster))
        return f"opened {channel}/{ts}"
    if existing.digest == digest:
        return "unchanged"
    ctx.notifier.update(existing.channel, existing.ts, root)
    ctx.notifier.flush()
    ctx.notifier.reply(existing.channel, existing.ts,
                       alert_text.alert_update(notification.status, alerts))
    threads.save(existing.model_copy(update={"digest": digest, "service": service,
                                             "cluster": ctx.cluster}))
    return f"{notification.status} {existing.channel}/{existing.ts}"


# --- RQ entry points (module-level, JSON-safe arguments) ---------------------------------------


def alert_job(payload: dict[str, Any]) -> str:
    return handle_alert(context.current(), Notification.model_validate(payload))


def note_job(channel: str, ts: str, user: str, service: str, refusal: str | None) -> str:
    """Say in the alert thread that a rollback was asked for; or tell the person why not."""
    ctx = context.current()
    if refusal is None:
        ctx.notifier.reply(channel, ts, alert_text.alert_rollback_started(user, service))
        return "noted"
    try:
        ctx.notifier.ephemeral(replies.refused(alert_text.alert_rollback_refused(service, refusal)),
                               channel=channel, user=user)
    except MeshbotError as exc:
        log.warning("could not tell %s: %s", user, exc.message)
    return "refused"
