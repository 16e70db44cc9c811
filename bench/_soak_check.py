"""The soak's invariants, checked once the system is quiet. Each violation is one line.

- every acked command ended: run exactly once, or answered with a reason (audit + Slack);
- every service's VirtualService weights say what its rollout's final phase says;
- a service whose last command on its routes was a rollback that ran has no header route or
  mirror;
- every mutation audited exactly once (commands: one ``done``; the analysis's own changes too);
- no rollout stuck, none judged twice in one tick;
- no ``Traceback`` in any process log.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import redis

from bench._soak_load import Sent
from jobs.adapters.audit import AuditEntry
from jobs.adapters.keys import Keys
from jobs.domain.rollout import Event, Phase, Rollout, Transition
from jobs.domain.routes import Weights

# What closes an accepted request, in the audit log.
TERMINAL = frozenset({"done", "refused", "failed", "abandoned", "overtaken", "voided", "not used",
                      "expired", "rejected", "unsupported"})
# A request's own end, beside which its approval request may close ("not used", "voided" …).
OWN_ENDS = frozenset({"done", "refused", "failed", "abandoned", "overtaken", "unsupported"})
# Said to the caller alone (response_url).
TOLD = frozenset({"refused", "failed", "abandoned", "overtaken"})
JUDGED = frozenset({Event.CHECK_PASSED, Event.CHECK_FAILED, Event.NO_DATA, Event.REGRESSION,
                    Event.SERVICE_WIDE})
AUTOMATIC_ROLLBACK = frozenset({Event.CHECK_FAILED, Event.REGRESSION, Event.NO_DATA})
# What a person's command does to a rollout (the analysis's own events are the others).
COMMANDS = frozenset({Event.ROLLBACK, Event.ABORT, Event.PROMOTE, Event.MOVE, Event.PAUSE})
TICK_SLACK_S = 1.5  # the tick period and a little: how late a due check may run
# What RQ's worker loop says when Redis restarts under it: one warning line, no traceback
# (``jobs.runtime.worker.RedisFailureLine``; ``jobs.runtime.worker`` starts a new worker, and a
# worker process that exits is a violation of its own, "died"). A job's designed retry (a
# TemporaryError) is one log line without traceback too (``MeshbotWorker``): any traceback in a
# log is a violation.
REDIS_LOST = re.compile(r"Worker \S+: Redis failed \(\w+")


@dataclass
class Violations:
    lines: list[tuple[str, str]] = field(default_factory=list)  # (kind, text)

    def add(self, kind: str, text: str) -> None:
        self.lines.append((kind, text))

    def kinds(self) -> Counter[str]:
        return Counter(kind for kind, _ in self.lines)


def read_audit(client: redis.Redis) -> list[AuditEntry]:
    entries = []
    for _id, fields in client.xrange(Keys().audit) or []:
        raw = (fields or {}).get(b"entry") or (fields or {}).get("entry")
        if raw:
            entries.append(AuditEntry.model_validate_json(raw))
    return entries


def read_rollouts(client: redis.Redis, names: list[str]) -> dict[str, Rollout]:
    """Every service's rollout document (read only: nothing set aside, unlike the store)."""
    keys = Keys()
    raws = client.mget([keys.rollout(n) for n in names])
    return {n: Rollout.model_validate_json(raw) for n, raw in zip(names, raws, strict=True)
            if raw}


def outcome_of(entries: list[AuditEntry]) -> str:
    ends = [e.outcome for e in entries if e.outcome in TERMINAL]
    return ends[-1] if ends else "(none)"


def check_commands(v: Violations, sent: list[Sent], audit: list[AuditEntry],
                   told: set[str]) -> Counter[str]:
    """Each acked command's end; how many ended which way."""
    by_request: dict[str, list[AuditEntry]] = defaultdict(list)
    for entry in audit:
        if entry.request_id:
            by_request[entry.request_id].append(entry)
    ends: Counter[str] = Counter()
    first = {s.trigger_id: s for s in sent if s.retry_of is None}
    for s in sent:
        if s.status >= 500:
            v.add("ack", f"`{s.text}` ({s.trigger_id}): serve answered HTTP {s.status}")
        if not s.acked:
            ends["not acked"] += 1
            continue
        kind = s.ack_kind
        if s.retry_of is not None:
            original = first.get(s.retry_of)
            if kind == "accepted" and original is not None and original.acked \
                    and original.ack_kind == "accepted":
                v.add("duplicate", f"Slack's retry of `{s.text}` ({s.trigger_id}) was accepted "
                      "again, not answered as a duplicate")
            ends[f"retry answered {kind}"] += 1
            continue
        if kind != "accepted":
            ends[f"answered at once: {kind}"] += 1
            continue
        entries = by_request.get(s.trigger_id, [])
        terminal = [e.outcome for e in entries if e.outcome in TERMINAL]
        outcomes = [e.outcome for e in entries]
        if not terminal:
            v.add("lost", f"`{s.text}` ({s.trigger_id}) by {s.user} at {s.at:.1f}: acked, "
                  f"never ended; audit: {outcomes or 'nothing'}")
            ends["lost"] += 1
            continue
        if terminal.count("done") > 1:
            v.add("twice", f"`{s.text}` ({s.trigger_id}) ran {terminal.count('done')} times; "
                  f"audit: {outcomes}")
        elif len([t for t in terminal if t in OWN_ENDS]) > 1:
            v.add("twice", f"`{s.text}` ({s.trigger_id}) ended more than once: {outcomes}")
        end = terminal[0]
        ends[end] += 1
        if end in TOLD and s.response_token not in told:
            detail = next((e.detail for e in entries if e.outcome == end), "")
            v.add("untold", f"`{s.text}` ({s.trigger_id}) {end} ({detail[:120]}) but the "
                  "caller was never told (no response_url post)")
    return ends


def check_weights(v: Violations, names: Iterable[str], rollouts: Mapping[str, Rollout],
                  weights: Mapping[str, dict[str, int]], live: Mapping[str, str]) -> None:
    """Rolled back (or cancelled, or none): the live subset at 100; promoted: the promoted
    subset at 100 and live; otherwise the rollout's weight on its canary, the rest on the live
    subset. (A rollback after a promote returns to the live subset, the promoted one.)"""
    for name in names:
        have, now_live = weights[name], live.get(name, "stable")
        rollout = rollouts.get(name)
        if rollout is None or rollout.phase in (Phase.ROLLED_BACK, Phase.CANCELLED):
            want = {now_live: 100}
        elif rollout.phase is Phase.PROMOTED:
            want = {rollout.canary_subset: 100}
        else:
            want = {rollout.canary_subset: rollout.weight,
                    rollout.stable_subset: 100 - rollout.weight}
        live_wrong = rollout is not None and (
            (rollout.phase is Phase.PROMOTED and now_live != rollout.canary_subset)
            or (not rollout.phase.terminal and now_live != rollout.stable_subset))
        if live_wrong or any(have.get(subset, 0) != w for subset, w in want.items()):
            phase = rollout.phase.value if rollout else "no rollout"
            weight = f" at {rollout.weight}" if rollout else ""
            last = "; ".join(f"{t.at:.1f} {t.event.value}→{t.after.value}@{t.weight}"
                             for t in (rollout.history[-4:] if rollout else ()))
            v.add("weights", f"{name}: VirtualService {have}, live subset {now_live}, but its "
                  f"rollout is {phase}{weight} (wants {want}); history: {last or '-'}")


# Commands that change a service's header route or mirror: the route edits, and the rollbacks
# (a rollback, an abort) that remove both.
ROUTE_VERBS = frozenset({"ab", "mirror", "rollback", "abort"})
REMOVES_ROUTES = frozenset({"rollback", "abort"})


def check_routes(v: Violations, names: Iterable[str], sent: list[Sent],
                 audit: list[AuditEntry],
                 routes: Mapping[str, tuple[str | None, float | None]]) -> int:
    """A service whose last accepted command touching its routes was a rollback (or an abort)
    that ran shows no header route and no mirror: nothing acked before a rollback lands after
    it, and nothing was acked after it. (Commands answered with a refusal changed nothing and
    do not count.) How many services were checked so."""
    ends: dict[str, str] = {}
    for entry in audit:
        if entry.request_id and entry.outcome in OWN_ENDS:
            ends.setdefault(entry.request_id, entry.outcome)
    last: dict[str, Sent] = {}
    for s in sent:
        if s.retry_of is None and s.acked and s.ack_kind == "accepted" \
                and s.verb in ROUTE_VERBS and ends.get(s.trigger_id) != "refused":
            last[s.service] = s
    checked = 0
    for name in names:
        final = last.get(name)
        if final is None or final.verb not in REMOVES_ROUTES \
                or ends.get(final.trigger_id) != "done":
            continue
        checked += 1
        header, mirror = routes[name]
        if header is not None or mirror is not None:
            v.add("routes", f"{name}: header route {header or 'none'}, mirror "
                  f"{'none' if mirror is None else f'{mirror:g} %'} after `{final.text}` "
                  f"({final.trigger_id}), the last command on its routes, ran")
    return checked


def check_rollouts(v: Violations, rollouts: Mapping[str, Rollout], now: float,
                   unapplied: list[str]) -> Counter[str]:
    """No rollout stuck; the final phases counted."""
    phases: Counter[str] = Counter()
    for name, rollout in rollouts.items():
        phases[rollout.phase.value] += 1
        if rollout.phase.watched:
            late = now - (rollout.next_check_at + rollout.interval_s)
            if late > rollout.interval_s + TICK_SLACK_S:
                v.add("stuck", f"{name}: {rollout.phase.value}, last check "
                      f"{now - rollout.next_check_at + rollout.interval_s:.1f} s ago "
                      f"(interval {rollout.interval_s:g} s)")
        elif rollout.phase is Phase.PAUSED:
            v.add("stuck", f"{name}: paused (nobody paused it)")
    for name in unapplied:
        v.add("stuck", f"{name}: weights decided but never written (unapplied mark left)")
    return phases


def check_history(v: Violations, seen: Mapping[str, Rollout],
                  audit: list[AuditEntry]) -> tuple[int, int]:
    """No rollout judged twice within half an interval; every change the analysis made
    itself (a step advanced, an automatic rollback) audited. (judgements, automatic changes)"""
    judgements = automatic = 0
    by_target: dict[str, list[AuditEntry]] = defaultdict(list)
    for entry in audit:
        if entry.target:
            by_target[entry.target].append(entry)
    for rollout in seen.values():
        last_judged: float | None = None
        weight = rollout.history[0].weight if rollout.history else 0
        for index, t in enumerate(rollout.history):
            if t.event in JUDGED:
                judgements += t.repeated
                # Identical checks in a row are one history entry (``repeated`` of them since
                # ``first_at``): their mean spacing tells a rollout judged twice per interval.
                first = t.first_at if t.first_at is not None else t.at
                if t.repeated > 1 and (t.at - first) / (t.repeated - 1) < rollout.interval_s / 2:
                    v.add("judged twice", f"{rollout.service} ({rollout.id}): {t.repeated} "
                          f"checks between {first:.2f} and {t.at:.2f} (interval "
                          f"{rollout.interval_s:g} s)")
                if last_judged is not None and first - last_judged < rollout.interval_s / 2:
                    v.add("judged twice", f"{rollout.service} ({rollout.id}): judged at "
                          f"{last_judged:.2f} and again at {t.at:.2f} (interval "
                          f"{rollout.interval_s:g} s)")
                last_judged = t.at
            else:
                last_judged = None
            changed = (t.event is Event.CHECK_PASSED and t.weight != weight) or \
                (t.event in AUTOMATIC_ROLLBACK and t.after is Phase.ROLLED_BACK)
            weight = t.weight
            if not changed:
                continue
            automatic += 1
            following = rollout.history[index + 1] if index + 1 < len(rollout.history) else None
            # Audited as that change: by meshbot, within moments, with the weights it set.
            want = str(Weights(stable=100, canary=0)) if t.after is Phase.ROLLED_BACK \
                else str(Weights.canary_at(t.weight))
            if not any(e.actor == "meshbot" and e.after == want and t.at - 2 <= e.at <= t.at + 30
                       for e in by_target[rollout.service]) \
                    and not _overtaken(t, following, by_target[rollout.service]):
                what = "rolled back" if t.after is Phase.ROLLED_BACK else f"moved to {t.weight}"
                v.add("unaudited-auto", f"{rollout.service}: the analysis {what} at {t.at:.1f} "
                      f"({t.event.value}); no audit entry")
    return judgements, automatic


def _overtaken(t: Transition, following: Transition | None,
               entries: list[AuditEntry]) -> bool:
    """Whether a command took the rollout over before the analysis's change reached the mesh:
    the next transition is the command's, and its audit entry shows the mesh as it was before
    the change (the analysis's write stopped, "no longer wanted": nothing to audit)."""
    if following is None or following.event not in COMMANDS:
        return False
    target = "stable 100 / canary 0" if t.after is Phase.ROLLED_BACK \
        else f"stable {100 - t.weight} / canary {t.weight}"
    return any(t.at <= e.at <= following.at + 60 and e.actor != "meshbot"
               and e.before is not None and e.before != target for e in entries)


def check_logs(v: Violations, logs: Mapping[str, str]) -> int:
    """Every Traceback in a log is a violation; how many times RQ's worker loop lost Redis (a
    restart), which is said in one warning line."""
    lost = 0
    for name, text in logs.items():
        for i, line in enumerate(text.splitlines()):
            try:
                record = json.loads(line)
            except ValueError:
                record = {}
            if (record.get("logger") == "rq.worker" and record.get("level") == "warning"
                    and REDIS_LOST.match(str(record.get("msg", "")))):
                lost += 1
            if "Traceback" not in line:
                continue
            trace = str(record.get("exc") or record.get("msg") or line)
            last = trace.strip().splitlines()[-1] if trace.strip() else line
            where = f"{record.get('logger', '?')}: {str(record.get('msg', ''))[:120]}"
            v.add("traceback", f"{name} log line {i + 1}: {where} … {last.strip()[:240]}")
    return lost


def now() -> float:
    return time.time()
