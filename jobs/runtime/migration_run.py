"""What a migration step works with (``Run``) and what it answers (an ``Outcome``).

A step reads the cluster, writes at most what is still missing (so running it again after a
worker died changes nothing twice) and answers: ``Done`` (next step), ``Again`` (save what it
noted, then run it again at once: a step notes what it will need for an undo *before* it
writes), ``Wait`` (come back on a later tick) or ``Stop`` (the workflow stops, said why).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.audit import AuditEntry
from jobs.adapters.kube_workloads import KubeWorkloads
from jobs.adapters.prometheus import MetricsSource
from jobs.domain import migration as model
from jobs.domain.approval_rules import ApprovalState
from jobs.domain.migration import Step, Workflow
from jobs.domain.promql import duration, rate_window
from jobs.runtime import api
from jobs.runtime.context import JobContext
from jobs.runtime.reports import report
from meshbot import cluster_scope
from meshbot.commands import Command, Request, Verb
from meshbot.errors import MetricsUnavailable, Refused
from policies.views import ServiceView
from rendering import migrate as words


@dataclass(frozen=True)
class Done:
    note: str = ""


@dataclass(frozen=True)
class Again:
    note: str = ""


@dataclass(frozen=True)
class Wait:
    note: str


@dataclass(frozen=True)
class Stop:
    note: str


Outcome = Done | Again | Wait | Stop
APPROVE = "approve"  # the command switch an approval request carries (never typed)

@dataclass
class Run:
    ctx: JobContext
    workflow: Workflow
    source: MetricsSource | None = None
    now: float = field(default_factory=time.time)

    @cached_property
    def work(self) -> KubeWorkloads:
        return KubeWorkloads(self.ctx.kube)

    @property
    def namespace(self) -> str:
        return self.workflow.namespace

    def view(self, service: str) -> ServiceView:
        view = self.ctx.policy.service(service)
        if view is None:
            raise Refused(f"service `{service}` is no longer in meshbot's policy")
        return view

    def memo(self, step: Step) -> dict[str, Any]:
        return self.workflow.remembered(step)

    def remember(self, step: Step, **values: Any) -> None:
        self.workflow = self.workflow.remember(step, **values)

    def say(self, text: str) -> None:
        """A reply in the workflow's thread, or owed to it while Slack does not take it: said
        after the step's change, so Slack failing must not make the step run again (which
        would find its change made and say nothing)."""
        if self.workflow.thread_ts:
            report(self.ctx, self.workflow.channel, self.workflow.thread_ts, text)

    def watch_window(self, step: Step, length: float) -> tuple[float, float, float] | None:
        """(elapsed, minimum, window) of a watch over ``length`` seconds: None on its first
        look (it starts now). The window holds at least five scrapes, the least that is
        evidence, and at most ``length``."""
        memo = self.memo(step)
        if "since" not in memo:
            self.remember(step, since=self.now)
            return None
        elapsed = self.now - float(memo["since"])
        minimum = 5 * (self.source.scrape_interval if self.source else 15.0)
        return elapsed, minimum, min(max(elapsed, minimum), length)

    def measured(self, text: str) -> None:
        self.workflow = self.workflow.model_copy(update={"last": text})

    def audit(self, target: str, outcome: str, detail: str, *, before: str | None = None,
              after: str | None = None) -> None:
        """Every change the workflow makes, by meshbot on behalf of its requester."""
        wf = self.workflow
        self.ctx.audit.record(AuditEntry(
            actor=wf.requester, action="migrate", target=target, outcome=outcome,
            request_id=wf.request_id, before=before, after=after,
            approvers=tuple(a for approvers in wf.approvals.values() for a in approvers),
            detail=detail,
        ))

    def error_percent(self, service: str, window_s: float,
                      version: str | None = None) -> tuple[float | None, float | None]:
        """(percent of 5xx, requests per second) over the last ``window_s``."""
        if self.source is None:
            raise MetricsUnavailable("no Prometheus configured for the workflow")
        window = duration(rate_window(window_s, self.source.scrape_interval))
        errors_q, total_q = model.error_queries(service, self.namespace, window, version)
        errors, total = (_scalar(self.source.query(q)) for q in (errors_q, total_q))
        return model.error_percent(errors, total), total


def _scalar(result: list[dict[str, Any]]) -> float | None:
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value  # NaN: no traffic


def approval_request_id(workflow: Workflow, step: Step, attempt: int = 1) -> str:
    return f"migrate-approval:{workflow.id}:{step.key}:{attempt}"


def need_approval(run: Run, step: Step, count: int, what: str) -> Outcome:
    """Done once ``count`` approvers said yes through meshbot's approval request (posted in the
    channel like any other), Wait until then, Stop when it is rejected or expires."""
    wf = run.workflow
    if count <= 0 or step.key in wf.approvals:
        return Done()
    memo = run.memo(step)
    request_id = memo.get("request")
    if request_id is None:
        run.remember(step, request=approval_request_id(wf, step), what=what, count=count)
        return Again()
    pending = ApprovalStore(run.ctx.redis).for_request(str(request_id))
    if pending is None:
        approvers = tuple(m for m in run.ctx.policy.members(run.ctx.policy.approve)
                          if m != wf.requester)
        request = Request(
            id=str(request_id),
            # Approved, it runs in the workflow's cluster, where its record is kept.
            command=Command(verb=Verb.MIGRATE, target=wf.namespace, switch=APPROVE,
                            options={"step": step.key, "what": what},
                            cluster=cluster_scope.current()),
            user=wf.requester, channel=wf.channel, received_at=run.now,
            approvals_required=count, eligible_approvers=approvers,
        )
        api.submit(run.ctx.redis, request, queue=run.ctx.settings.queue_name)
        return Wait(words.waiting_approval(what, count))
    if pending.state in (ApprovalState.REJECTED, ApprovalState.EXPIRED, ApprovalState.VOIDED):
        return Stop(words.approval_refused(what, pending.state.value))
    link = f" (<{pending.permalink}|the request>)" if pending.permalink else ""
    return Wait(words.waiting_approval(what, count) + link)

