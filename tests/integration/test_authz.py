"""`/mesh authz` as a person uses it: through the bot's real listener (grammar, policy,
approvals), a real RQ worker, the real kube-apiserver (meshbot under the chart's RBAC), a real
Prometheus asked who called the services (no callers are set on the traffic generator here, so
its calls come from a source Istio cannot name and the callers are the policy's; the Prometheus
side is tests/e2e/test_authz_observed_callers.py), and the Slack stand-in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from cloudcoil.models.istio.security import v1, v1beta1

from jobs.adapters.audit import AuditLog
from playground.prometheus_server import PrometheusServer
from tests.fixtures.meshbot import CHANNEL, Mesh
from tests.fixtures.slack import fail_post_saying
from tests.integration.chatops import APPROVERS, ChatOps
from tests.integration.test_runbook_routing import run, thread, write_runbook_policy
from tests.integration.test_worker_jobs import release_retries

GROUP, VERSION, PLURAL = "security.istio.io", "v1beta1", "authorizationpolicies"
NS, SVC = "production", "payment-service"
WEB = "cluster.local/ns/frontend/sa/web"
PAYMENTS = "cluster.local/ns/production/sa/payment-service"
MANAGED = {"app.kubernetes.io/managed-by": "meshbot"}
A1, A2, _ = APPROVERS


def write_authz_policy(directory: Path, approvals: int = 1) -> Path:
    """The runbook policy with who calls whom: the web frontend and the batch jobs' namespace
    call payment-service, which calls user-service."""
    path = write_runbook_policy(directory)
    data = yaml.safe_load(path.read_text())
    data["services"][SVC]["callers"] = [WEB, "jobs"]
    data["services"]["user-service"]["callers"] = [PAYMENTS]
    data["namespace_approvals"] = {"authz": approvals}
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def policy_path(tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    return write_authz_policy(tmp_path, getattr(request, "param", 1))


@pytest.fixture
def ops(mesh: Mesh, prometheus: PrometheusServer,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatOps]:
    monkeypatch.setenv("PROMETHEUS_URL", prometheus.url)
    yield ChatOps.start(mesh)


def policies(mesh: Mesh) -> dict[str, dict[str, Any]]:
    found = mesh.cluster.list(GROUP, VERSION, PLURAL, NS)
    return {p["metadata"]["name"]: p for p in found}


def assert_valid_istio(obj: dict[str, Any]) -> None:
    """Istio's published models, both served versions; a field they do not know would be
    dropped, so the spec must survive the round trip unchanged."""
    for version, models in (("v1beta1", v1beta1), ("v1", v1)):
        model = models.AuthorizationPolicy.model_validate(
            dict(obj, apiVersion=f"{GROUP}/{version}"))
        assert model.spec is not None
        assert model.spec.model_dump(by_alias=True, exclude_none=True, mode="json") == obj["spec"]


def approved(ops: ChatOps, text: str, *approvers: str) -> str:
    url = run(ops, text)
    request = ops.approval()
    for approver in approvers or (A1,):
        ops.react(approver, request.ts)
    ops.run()
    return url


def told(ops: ChatOps, url: str) -> str:
    return "\n".join(ops.told(url))


def foreign(mesh: Mesh, name: str, **labels: str) -> None:
    """An AuthorizationPolicy someone else wrote (kubectl, a GitOps controller)."""
    mesh.cluster.put_object(GROUP, VERSION, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"selector": {"matchLabels": {"app": "analytics-service"}}, "action": "ALLOW",
                 "rules": [{"from": [{"source": {"namespaces": ["monitoring"]}}]}]}})


def test_deny_all_is_refused_naming_the_callers_it_would_cut(ops: ChatOps, mesh: Mesh) -> None:
    url = run(ops, f"authz {NS} deny-all")
    words = told(ops, url)
    assert "would cut traffic that no ALLOW rule admits" in words
    for caller in (f"`{SVC}` ← `{WEB}`", f"`{SVC}` ← `jobs`", f"`user-service` ← `{PAYMENTS}`"):
        assert caller in words
    assert "Nothing was changed" in words and "confirm=yes" in words
    assert policies(mesh) == {}
    # Refused before approvers are asked: there would be nothing to approve.
    assert not [m for m in mesh.slack.roots(CHANNEL) if "Approval needed" in m.text]
    assert AuditLog(mesh.redis).last(NS, 1)[0].outcome == "refused"


def test_deny_all_goes_ahead_once_allow_rules_admit_every_caller(ops: ChatOps,
                                                                 mesh: Mesh) -> None:
    approved(ops, f"authz {NS} allow from={WEB},jobs to={SVC} methods=GET,POST paths=/api/*")
    url = run(ops, f"authz {NS} deny-all")
    assert "would cut" in told(ops, url)  # user-service's caller is not admitted yet
    approved(ops, f"authz {NS} allow from={PAYMENTS} to=user-service")
    approved(ops, f"authz {NS} deny-all")

    found = policies(mesh)
    assert set(found) == {"deny-all", "allow-payment-service-from-web-jobs",
                          "allow-user-service-from-payment-service"}
    assert found["deny-all"]["spec"] == {}
    for policy in found.values():
        assert policy["metadata"]["labels"] == MANAGED
        assert_valid_istio(policy)
    texts = thread(ops, f"`/mesh authz {NS} deny-all`")
    assert "create AuthorizationPolicy production/deny-all" in texts[1]
    assert any(f"AuthorizationPolicy `{NS}/deny-all` created" in t for t in texts)
    entry = AuditLog(mesh.redis).last(NS, 1)[0]
    assert (entry.action, entry.outcome, entry.approvers) == ("authz", "done", (A1,))
    assert "deny-all" in (entry.after or "")


def test_deny_all_with_confirm_cuts_on_purpose_and_says_whom(ops: ChatOps, mesh: Mesh) -> None:
    run(ops, f"authz {NS} deny-all confirm=yes")
    assert f"`{SVC}` ← `{WEB}`" in ops.approval().text  # approvers see what they cut
    ops.react(A1, ops.approval().ts)
    ops.run()
    assert policies(mesh)["deny-all"]["spec"] == {}
    assert any("Cut on purpose" in t and WEB in t
               for t in thread(ops, f"`/mesh authz {NS} deny-all confirm=yes`"))


def test_allow_writes_one_rule_istio_accepts(ops: ChatOps, mesh: Mesh) -> None:
    approved(ops, f"authz {NS} allow from={WEB},jobs to={SVC} methods=GET,POST "
                  "paths=/api/*,*/health")
    policy = policies(mesh)["allow-payment-service-from-web-jobs"]
    assert policy["spec"] == {
        "selector": {"matchLabels": {"app": SVC}}, "action": "ALLOW",
        "rules": [{"from": [{"source": {"principals": [WEB]}},
                            {"source": {"namespaces": ["jobs"]}}],
                   "to": [{"operation": {"methods": ["GET", "POST"],
                                         "paths": ["/api/*", "*/health"]}}]}]}
    assert_valid_istio(policy)
    # The same callers again: their rule is updated in place, not a second policy.
    approved(ops, f"authz {NS} allow from={WEB},jobs to={SVC} methods=GET")
    found = policies(mesh)
    assert list(found) == ["allow-payment-service-from-web-jobs"]
    assert found["allow-payment-service-from-web-jobs"]["spec"]["rules"][0]["to"] == [
        {"operation": {"methods": ["GET"]}}]
    assert_valid_istio(found["allow-payment-service-from-web-jobs"])


def test_the_first_allow_on_a_service_is_refused_when_it_shuts_out_its_other_callers(
        ops: ChatOps, mesh: Mesh) -> None:
    url = run(ops, f"authz {NS} allow from={WEB} to={SVC}")
    assert f"`{SVC}` ← `jobs`" in told(ops, url)
    assert policies(mesh) == {}


def test_remove_takes_only_meshbots_own(ops: ChatOps, mesh: Mesh) -> None:
    foreign(mesh, "allow-monitoring")
    url = run(ops, f"authz {NS} remove allow-monitoring")
    assert "was not created by meshbot" in told(ops, url)
    url = run(ops, f"authz {NS} remove nothing-here")
    assert "there is no AuthorizationPolicy `nothing-here`" in told(ops, url)
    approved(ops, f"authz {NS} allow from={PAYMENTS} to=user-service")
    approved(ops, f"authz {NS} remove allow-user-service-from-payment-service")
    assert list(policies(mesh)) == ["allow-monitoring"]
    assert any(f"`{NS}/allow-user-service-from-payment-service` removed" in t
               for t in thread(ops, "remove allow-user-service-from-payment-service"))


def test_removing_what_admits_callers_under_a_deny_all_needs_confirm(ops: ChatOps,
                                                                       mesh: Mesh) -> None:
    approved(ops, f"authz {NS} allow from={WEB},jobs to={SVC}")
    approved(ops, f"authz {NS} allow from={PAYMENTS} to=user-service")
    approved(ops, f"authz {NS} deny-all")
    url = run(ops, f"authz {NS} remove allow-user-service-from-payment-service")
    assert f"`user-service` ← `{PAYMENTS}`" in told(ops, url)
    assert "allow-user-service-from-payment-service" in policies(mesh)


def test_a_change_that_limits_a_caller_to_some_methods_needs_confirm(ops: ChatOps,
                                                                     mesh: Mesh) -> None:
    """Removing the rule that let the web in whole leaves it only the GET and POST of
    another: that limit is reported like a cut, and nothing is removed without confirm=yes."""
    approved(ops, f"authz {NS} allow from={WEB},jobs to={SVC} methods=GET,POST")
    approved(ops, f"authz {NS} allow from={WEB} to={SVC}")
    before = policies(mesh)
    url = run(ops, f"authz {NS} remove allow-payment-service-from-web")
    said = told(ops, url)
    assert "would cut traffic that no ALLOW rule admits (or limit it to some methods or " \
        f"paths): `{SVC}` ← `{WEB}`" in said, said
    assert "Nothing was changed" in said
    assert policies(mesh) == before
    assert AuditLog(mesh.redis).last(NS, 1)[0].outcome == "refused"


def test_list_marks_meshbots_own_needs_no_approval_and_runs_in_a_freeze(ops: ChatOps,
                                                                         mesh: Mesh) -> None:
    foreign(mesh, "allow-monitoring")
    approved(ops, f"authz {NS} allow from={PAYMENTS} to=user-service")
    ops.command("freeze on")
    ops.run()
    run(ops, f"authz {NS} list")
    listing = ops.roots()[-1]
    assert "AuthorizationPolicies in `production`" in listing
    assert "`allow-user-service-from-payment-service` :robot_face: meshbot" in listing
    assert f"from {PAYMENTS}" in listing
    assert "`allow-monitoring` —" in listing and "from monitoring" in listing


def test_dry_run_shows_the_diff_and_changes_nothing(ops: ChatOps, mesh: Mesh) -> None:
    url = run(ops, f"authz {NS} deny-all confirm=yes dry-run")
    words = told(ops, url)
    assert "Dry run" in words and "nothing was changed" in words
    assert "create AuthorizationPolicy production/deny-all" in words
    assert "Cut on purpose" in words
    approved(ops, f"authz {NS} allow from={WEB},jobs to={SVC} methods=GET")
    url = run(ops, f"authz {NS} allow from={WEB},jobs to={SVC} methods=GET,POST dry-run")
    words = told(ops, url)
    assert "update AuthorizationPolicy production/allow-payment-service-from-web-jobs" in words
    changed = [line for line in words.splitlines() if "operation.methods" in line]
    assert changed and "POST" in changed[0] and "→" in changed[0], words
    found = policies(mesh)
    assert list(found) == ["allow-payment-service-from-web-jobs"]
    assert found["allow-payment-service-from-web-jobs"]["spec"]["rules"][0]["to"] == [
        {"operation": {"methods": ["GET"]}}]
    assert len([m for m in mesh.slack.roots(CHANNEL) if "Approval needed" in m.text]) == 1


@pytest.mark.parametrize("policy_path", [2], indirect=True)
def test_approvals_are_the_policys_count(ops: ChatOps, mesh: Mesh) -> None:
    run(ops, f"authz {NS} allow from={PAYMENTS} to=user-service")
    request = ops.approval()
    assert "Approvals so far: 0 of 2" in request.text
    assert "create AuthorizationPolicy production/allow-user-service-from-payment-service" in (
        request.text)
    ops.react(A1, request.ts)
    ops.run()
    assert policies(mesh) == {}
    ops.react(A2, request.ts)
    ops.run()
    assert "allow-user-service-from-payment-service" in policies(mesh)


def test_refusals_change_nothing(ops: ChatOps, mesh: Mesh) -> None:
    url = run(ops, "authz meshbot deny-all confirm=yes")
    assert "meshbot's own namespace" in told(ops, url)
    url = run(ops, "authz nowhere deny-all confirm=yes")
    assert "`nowhere` does not exist" in told(ops, url)
    url = run(ops, f"authz {NS} allow from={WEB} to=ghost-service")
    assert "`ghost-service` is not a service of namespace `production`" in told(ops, url)
    foreign(mesh, "allow-payment-service-from-web-jobs", **MANAGED,
            **{"argocd.argoproj.io/instance": "payments"})
    url = run(ops, f"authz {NS} allow from={WEB},jobs to={SVC}")
    assert "Argo CD would revert" in told(ops, url)
    ack, _ = ops.command(f"authz {NS} allow from=frontend/sa/web to={SVC}")
    assert "neither a principal" in ack
    assert list(policies(mesh)) == ["allow-payment-service-from-web-jobs"]
    assert policies(mesh)["allow-payment-service-from-web-jobs"]["spec"]["selector"] == {
        "matchLabels": {"app": "analytics-service"}}
    assert not [m for m in mesh.slack.roots(CHANNEL) if "Approval needed" in m.text]


def test_a_remove_retried_after_its_delete_landed_says_removed_once(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    """Slack answers 500 to the report that the policy was removed (the delete had landed):
    RQ runs the job again, and the retry — which finds no such policy any more — says and
    audits what the first attempt did, once, instead of refusing "there is no
    AuthorizationPolicy" after removing it."""
    name = "allow-user-service-from-payment-service"
    approved(ops, f"authz {NS} allow from={PAYMENTS} to=user-service")
    assert name in policies(mesh)
    fail_post_saying(mesh.slack, monkeypatch, f"`{NS}/{name}` removed")
    url = approved(ops, f"authz {NS} remove {name}")
    while release_retries(mesh.redis):  # RQ's retry, as its time comes
        ops.run()

    assert name not in policies(mesh)
    said = thread(ops, f"remove {name}")
    assert len([t for t in said if f"`{NS}/{name}` removed" in t]) == 1, said
    assert "there is no AuthorizationPolicy" not in told(ops, url)
    mine = [(e.outcome, e.after) for e in AuditLog(mesh.redis).last(NS, 20)
            if e.action == "authz" and e.outcome != "approval requested"
            and "remove" in (e.after or "") + (e.detail or "")]
    assert mine == [("done", f"delete AuthorizationPolicy {name}: removed")], mine


def test_an_allow_retried_after_its_create_landed_says_created_not_unchanged(
        ops: ChatOps, mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    name = "allow-user-service-from-payment-service"
    fail_post_saying(mesh.slack, monkeypatch, f"`{NS}/{name}` created")
    approved(ops, f"authz {NS} allow from={PAYMENTS} to=user-service")
    while release_retries(mesh.redis):
        ops.run()

    assert name in policies(mesh)
    said = thread(ops, "allow from=")
    assert len([t for t in said if f"`{NS}/{name}` created" in t]) == 1, said
    assert not any("says exactly this" in t for t in said), said
    outcomes = [e.outcome for e in AuditLog(mesh.redis).last(NS, 20) if e.action == "authz"]
    assert outcomes.count("done") == 1 and "unchanged" not in outcomes, outcomes
