"""Every Redis key meshbot uses, under one prefix (``meshbot:`` by default).

Keys about a cluster's mesh (rollouts, locks, audit, backups) carry the cluster the code runs
for (``meshbot.cluster_scope``); keys the bot must find from a Slack event alone (approval
requests, requests' dedupe marks) and the freeze are the same for every cluster.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from meshbot import cluster_scope


@dataclass(frozen=True)
class Keys:
    root: str = "meshbot:"
    cluster: str | None = field(default_factory=cluster_scope.current)

    @property
    def prefix(self) -> str:
        return self.root if self.cluster is None else f"{self.root}cluster:{self.cluster}:"

    def rollout(self, service: str) -> str:
        return f"{self.prefix}rollout:{service}"

    @property
    def watched(self) -> str:
        """Sorted set: service → next_check_at, for the analysis tick."""
        return f"{self.prefix}watched"

    def request(self, request_id: str) -> str:
        return f"{self.root}request:{request_id}"

    @property
    def audit(self) -> str:
        return f"{self.prefix}audit"

    def audit_for(self, target: str) -> str:
        return f"{self.prefix}audit:{target}"

    def ended(self, request_id: str) -> str:
        """How a request ended without changing anything (refused, overtaken, …): a run of
        its job after that (a dead worker's job taken over) does not run it again."""
        return f"{self.root}ended:{request_id}"

    def live_subset(self, service: str) -> str:
        return f"{self.prefix}live:{service}"

    def lock(self, service: str) -> str:
        return f"{self.prefix}lock:{service}"

    @property
    def unapplied(self) -> str:
        """Sorted set: service → when its rollout's weights were decided but not yet written."""
        return f"{self.prefix}unapplied"

    @property
    def last_tick(self) -> str:
        return f"{self.prefix}last_tick"

    # -- approvals, locks and the freeze (issue 4)

    def approval(self, channel: str, ts: str) -> str:
        """JSON of one pending approval, keyed by its Slack message (what approvers react on)."""
        return f"{self.root}approval:{channel}:{ts}"

    def approval_for(self, request_id: str) -> str:
        """``channel ts`` of the approval message a request is waiting on."""
        return f"{self.root}approval-for:{request_id}"

    @property
    def approvals_open(self) -> str:
        """Sorted set: ``channel ts`` → expires_at, of approvals still collecting reactions or
        whose approved work waits (for a lock, the freeze)."""
        return f"{self.root}approvals:open"

    def removed_by(self, request_id: str) -> str:
        """The lock or freeze a request's ``unlock`` or ``freeze off`` removed (kept a day): its
        retry (the worker died before saying it) says and audits what was removed instead of
        finding nothing there and refusing."""
        return f"{self.root}removed-by:{request_id}"

    @property
    def lock_pattern(self) -> str:
        return f"{self.prefix}lock:*"

    @property
    def freeze(self) -> str:
        """JSON of the change freeze while it is on (absent: no freeze)."""
        return f"{self.root}freeze"
