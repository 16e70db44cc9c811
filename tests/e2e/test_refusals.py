"""Every refusal of ``/mesh`` over real wires: the caller is told why (ephemerally), nothing is
posted in a channel, the VirtualService is untouched, and the refusal is audited.

Refusals the bot can decide from the grammar and the policy come back in the ack body of the
slash-command POST; refusals that depend on the cluster come from the job, through the command's
``response_url``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from jobs.adapters.audit import AuditEntry, AuditLog
from playground.processes import ServeProcess
from playground.slack_client import new_trigger_id, send_slash_command
from tests.fixtures.meshbot import CHANNEL, OPERATOR, Mesh

GROUP, VERSION, NS = "networking.istio.io", "v1beta1", "production"
SERVICE = "payment-service"
OUTSIDER = "U0SOMEONE"  # in the workspace, in no role of the policy
OTHER_CHANNEL = "C0RANDOM"  # not in the policy's channels


def slash(mesh: Mesh, server: ServeProcess, text: str, *, user: str = OPERATOR,
          channel: str = CHANNEL, trigger_id: str | None = None,
          retry_num: int | None = None) -> tuple[int, dict[str, Any], str]:
    """POST a signed slash command; (HTTP status, the ack's JSON body, the response_url)."""
    response_url = mesh.slack.new_response_url(channel=channel, user=user)
    reply = send_slash_command(f"{server.url}/slack/events", mesh.signing_secret, text=text,
                               user_id=user, channel_id=channel, response_url=response_url,
                               trigger_id=trigger_id, retry_num=retry_num)
    body: dict[str, Any] = reply.json() if reply.body.startswith("{") else {"text": reply.body}
    return reply.status, body, response_url


def virtual_service(mesh: Mesh, name: str = SERVICE) -> dict[str, Any]:
    return mesh.cluster.get(GROUP, VERSION, "virtualservices", NS, name)


def newest_audit(mesh: Mesh) -> AuditEntry:
    entries = AuditLog(mesh.redis).last(None, 1)
    assert entries, "nothing was recorded in the audit log"
    return entries[0]


def assert_nothing_posted(mesh: Mesh) -> None:
    """No message in any channel: a refusal is for the caller's eyes only."""
    assert mesh.slack.calls("chat.postMessage") == []
    assert mesh.slack.messages(CHANNEL) == []
    assert mesh.slack.messages(OTHER_CHANNEL) == []


def assert_refused_at_once(mesh: Mesh, server: ServeProcess, text: str, *,
                           expected: list[str], user: str = OPERATOR,
                           channel: str = CHANNEL) -> AuditEntry:
    """A refusal the bot decides alone: ack says so, nothing queued, nothing changed."""
    before = virtual_service(mesh)
    status, body, _ = slash(mesh, server, text, user=user, channel=channel)
    assert status == 200
    assert body.get("response_type") == "ephemeral"
    message = str(body.get("text", ""))
    assert message.startswith(":no_entry: Refused:"), message
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message!r}"

    mesh.run_jobs()

    assert virtual_service(mesh) == before  # same spec, same resourceVersion: never written
    assert_nothing_posted(mesh)
    assert mesh.slack.responses() == []  # the ack was the whole answer
    entry = newest_audit(mesh)
    assert (entry.outcome, entry.actor) == ("refused", user)
    return entry


# --- refusals decided by the bot (grammar and policy) -----------------------------------------


def test_unknown_verb(mesh: Mesh, server: ServeProcess) -> None:
    entry = assert_refused_at_once(mesh, server, "frobnicate payment-service 10",
                                   expected=["unknown command `frobnicate`", "/mesh help"])
    assert "frobnicate" in entry.detail


def test_service_not_in_policy(mesh: Mesh, server: ServeProcess) -> None:
    entry = assert_refused_at_once(mesh, server, "canary billing-service 10",
                                   expected=["unknown service billing-service", SERVICE])
    assert entry.target == "billing-service" and entry.action == "canary"


def test_malformed_service_name(mesh: Mesh, server: ServeProcess) -> None:
    assert_refused_at_once(mesh, server, "canary Payment_Service 10",
                           expected=["`Payment_Service`", "DNS-1123 label"])


@pytest.mark.parametrize("percent", ["abc", "101", "-5", "10.5"])
def test_percent_not_a_whole_number_from_0_to_100(mesh: Mesh, server: ServeProcess,
                                                  percent: str) -> None:
    assert_refused_at_once(mesh, server, f"canary payment-service {percent}",
                           expected=[f"`{percent}`", "whole number from 0 to 100"])


def test_caller_not_permitted(mesh: Mesh, server: ServeProcess) -> None:
    entry = assert_refused_at_once(mesh, server, "canary payment-service 10", user=OUTSIDER,
                                   expected=[f"<@{OUTSIDER}> may not run `/mesh canary`",
                                             "only operators may"])
    assert entry.target == SERVICE


def test_channel_not_allowed(mesh: Mesh, server: ServeProcess) -> None:
    mesh.slack.add_channel(OTHER_CHANNEL, "random")
    assert_refused_at_once(mesh, server, "canary payment-service 10", channel=OTHER_CHANNEL,
                           expected=[f"not accepted in <#{OTHER_CHANNEL}>", f"<#{CHANNEL}>"])


# --- refusals that depend on the cluster (answered by the job through response_url) ----------


def refused_by_job(mesh: Mesh, server: ServeProcess, text: str = "canary payment-service 10",
                   ) -> tuple[str, dict[str, Any] | None]:
    """Send ``text``; it is accepted, and the job's answer reaches the caller via response_url.

    Returns (what the caller was told, the VirtualService afterwards or None if absent)."""
    status, body, response_url = slash(mesh, server, text)
    assert status == 200 and "Accepted" in str(body.get("text"))
    mesh.run_jobs()
    posts = [r for r in mesh.slack.responses() if response_url.endswith(r.token)]
    assert len(posts) == 1, posts
    assert posts[0].body.get("response_type", "ephemeral") == "ephemeral"
    assert_nothing_posted(mesh)
    try:
        after: dict[str, Any] | None = virtual_service(mesh)
    except KeyError:
        after = None
    return str(posts[0].body.get("text", "")), after


def delete_virtual_service(mesh: Mesh, name: str = SERVICE) -> None:
    """Delete through the Kubernetes API as its admin, as `kubectl delete virtualservice`."""
    mesh.cluster.delete(GROUP, VERSION, "virtualservices", NS, name)


def test_virtual_service_missing(mesh: Mesh, server: ServeProcess) -> None:
    delete_virtual_service(mesh)
    told, after = refused_by_job(mesh, server)
    assert f"VirtualService {NS}/{SERVICE}" in told and "does not exist" in told
    assert after is None  # meshbot did not create one either


def only_stable(obj: dict[str, Any]) -> None:
    obj["spec"]["http"][0]["route"] = [
        {"destination": {"host": SERVICE, "subset": "stable"}, "weight": 100}]


def without_canary_subset(obj: dict[str, Any]) -> None:
    obj["spec"]["subsets"] = [s for s in obj["spec"]["subsets"] if s["name"] != "canary"]


def test_virtual_service_without_the_two_subsets(mesh: Mesh, server: ServeProcess) -> None:
    mesh.cluster.change(GROUP, VERSION, "virtualservices", NS, SERVICE, only_stable)
    mesh.cluster.change(GROUP, VERSION, "destinationrules", NS, SERVICE, without_canary_subset)
    before = virtual_service(mesh)
    told, after = refused_by_job(mesh, server)
    assert "only to subset 'stable'" in told and "subset 'canary'" in told
    assert "DestinationRule" in told  # says what to add, and where
    assert after == before


def test_canary_subset_without_ready_pods(mesh: Mesh, server: ServeProcess) -> None:
    def not_ready(pod: dict[str, Any]) -> None:
        for condition in pod["status"]["conditions"]:
            condition["status"] = "False"

    mesh.cluster.change("", "v1", "pods", NS, f"{SERVICE}-v2-0", not_ready)
    before = virtual_service(mesh)
    told, after = refused_by_job(mesh, server)
    assert "no ready pods" in told and "'canary'" in told and "no traffic was shifted" in told
    assert after == before
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}


def test_gitops_owned_virtual_service(mesh: Mesh, server: ServeProcess) -> None:
    def argo_owned(obj: dict[str, Any]) -> None:
        obj["metadata"].setdefault("labels", {})["argocd.argoproj.io/instance"] = "payments"

    mesh.cluster.change(GROUP, VERSION, "virtualservices", NS, SERVICE, argo_owned)
    before = virtual_service(mesh)
    told, after = refused_by_job(mesh, server)
    assert "Argo CD" in told and "would revert" in told and "payments" in told
    assert after == before


def no_canary_subset(mesh: Mesh) -> None:
    mesh.cluster.change(GROUP, VERSION, "virtualservices", NS, SERVICE, only_stable)
    mesh.cluster.change(GROUP, VERSION, "destinationrules", NS, SERVICE, without_canary_subset)


CLUSTER_REFUSALS: dict[str, Callable[[Mesh], object]] = {
    "missing": lambda mesh: delete_virtual_service(mesh),
    "no-canary-subset": no_canary_subset,
    "gitops": lambda mesh: mesh.cluster.change(
        GROUP, VERSION, "virtualservices", NS, SERVICE,
        lambda o: o["metadata"].setdefault("labels", {}).update(
            {"argocd.argoproj.io/instance": "payments"})),
    "no-ready-canary": lambda mesh: mesh.cluster.change(
        "", "v1", "pods", NS, f"{SERVICE}-v2-0",
        lambda p: p["status"]["conditions"][0].update(status="False")),
}


@pytest.mark.parametrize("case", sorted(CLUSTER_REFUSALS))
def test_cluster_refusal_is_audited_and_shown_as_a_refusal(mesh: Mesh, server: ServeProcess,
                                                           case: str) -> None:
    """A refusal that needs the cluster is still a refusal: told as one, audited as one."""
    CLUSTER_REFUSALS[case](mesh)
    told, _ = refused_by_job(mesh, server)
    assert told.startswith(":no_entry: Refused:"), told
    entry = newest_audit(mesh)
    assert (entry.outcome, entry.actor, entry.action, entry.target) == (
        "refused", OPERATOR, "canary", SERVICE)
    assert entry.detail and entry.detail in told


# --- idempotency -------------------------------------------------------------------------------


def test_slack_retry_of_the_same_command_runs_it_once(mesh: Mesh, server: ServeProcess) -> None:
    trigger = new_trigger_id()
    first_status, first, _ = slash(mesh, server, "canary payment-service 10", trigger_id=trigger)
    retry_status, retry, _ = slash(mesh, server, "canary payment-service 10", trigger_id=trigger,
                                   retry_num=1)
    assert (first_status, retry_status) == (200, 200)
    assert "Accepted" in str(first.get("text"))
    assert "runs once" in str(retry.get("text"))

    mesh.run_jobs()

    assert mesh.weights(SERVICE) == {"stable": 90, "canary": 10}
    roots = mesh.slack.roots(CHANNEL)
    assert len(roots) == 1, [m.text for m in roots]
    applied = [m for m in mesh.slack.thread(CHANNEL, roots[0].ts) if "Weights applied" in m.text]
    assert len(applied) == 1
    done = [e for e in AuditLog(mesh.redis).last(SERVICE, 10) if e.outcome == "done"]
    assert len(done) == 1 and done[0].request_id == trigger


def test_refusal_ack_is_json_for_slack(mesh: Mesh, server: ServeProcess) -> None:
    """Slack shows the ack only to the caller when it is an ephemeral JSON message."""
    response_url = mesh.slack.new_response_url(channel=CHANNEL, user=OPERATOR)
    reply = send_slash_command(f"{server.url}/slack/events", mesh.signing_secret,
                               text="canary payment-service abc", user_id=OPERATOR,
                               channel_id=CHANNEL, response_url=response_url)
    body = json.loads(reply.body)
    assert body["response_type"] == "ephemeral" and body["text"].startswith(":no_entry:")


# --- approvals ---------------------------------------------------------------------------------


def test_canary_above_the_tier_limit_is_not_applied_without_approvals(
        mesh: Mesh, server: ServeProcess) -> None:
    """payment-service is critical (canary_above: 25): 50% needs two approvals first."""
    before = virtual_service(mesh)
    status, body, _ = slash(mesh, server, "canary payment-service 50")
    assert status == 200
    mesh.run_jobs()
    assert mesh.weights(SERVICE) == {"stable": 100, "canary": 0}
    assert virtual_service(mesh) == before
    # The caller learns it waits for approvers: in the ack, privately, or in the request message.
    seen = [str(body.get("text", ""))] + [str(r.body.get("text", "")) for r in
                                          mesh.slack.responses()]
    seen += [m.text for m in mesh.slack.messages(CHANNEL)]
    assert any("approv" in text.lower() for text in seen), seen
