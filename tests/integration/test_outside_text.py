"""Outside text in Slack (issue 14): what the cluster's AuthorizationPolicies, live objects and
Prometheus's labels hold is shown literally, never as Slack's ``<!channel>``/``<!here>`` pings,
and no message passes Slack's limits. Commands go through the bot's real listener and a real
RQ worker, against the real kube-apiserver (under the chart's RBAC) and a real Prometheus;
what people see is read back from the Slack stand-in."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from jobs.adapters.audit import AuditEntry, AuditLog
from jobs.adapters.prometheus import MetricsSource
from jobs.adapters.slack_notifier import Notifier
from jobs.domain.authz import observed_callers, traffic_query
from playground.prometheus_server import PrometheusServer
from playground.slack_api import SlackApiStandIn
from tests.fixtures.live import eventually
from tests.fixtures.meshbot import Mesh
from tests.integration.chatops import ChatOps
from tests.integration.test_authz import (
    GROUP,
    MANAGED,
    NS,
    PLURAL,
    SVC,
    VERSION,
    WEB,
    told,
    write_authz_policy,
)
from tests.integration.test_runbook_routing import run

PING = re.compile(r"<!(channel|here|everyone)")  # what Slack would turn into a ping
OUTSIDER = "cluster.local/ns/<!here>/sa/web"
# The note a message cut to Slack's limits ends with.
CUT_NOTE = re.compile(r"… \([0-9,]+ characters cut; the whole message is in meshbot's log "
                      r"\(logger meshbot\.slack\)\)$")


@pytest.fixture
def policy_path(tmp_path: Path) -> Path:
    return write_authz_policy(tmp_path)


class _Exposition(BaseHTTPRequestHandler):
    """An Istio sidecar's metrics as Prometheus scrapes them, with a source principal label
    nobody checked: Prometheus's labels are outside text."""

    def do_GET(self) -> None:
        body = ('# TYPE istio_requests_total counter\n'
                f'istio_requests_total{{reporter="destination",destination_service_name="{SVC}",'
                f'destination_workload_namespace="{NS}",source_principal="spiffe://{OUTSIDER}",'
                'source_workload_namespace="frontend"} 10\n').encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def callers() -> Iterator[str]:
    """A scrape target of this test's own: its caller stays out of the session's Prometheus."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Exposition)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def ops(mesh: Mesh, callers: str,
        prometheus_factory: Callable[[Sequence[str]], PrometheusServer],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[ChatOps]:
    server = prometheus_factory([callers])
    server.wait_for_targets()
    monkeypatch.setenv("PROMETHEUS_URL", server.url)
    yield ChatOps.start(mesh)


def put_policy(mesh: Mesh, name: str, paths: list[str], principals: list[str],
               labels: dict[str, str] | None = None) -> None:
    mesh.cluster.put_object(GROUP, VERSION, PLURAL, {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {"selector": {"matchLabels": {"app": SVC}}, "action": "ALLOW",
                 "rules": [{"from": [{"source": {"principals": principals}}],
                            "to": [{"operation": {"methods": ["GET"], "paths": paths}}]}]}})


def test_the_listing_shows_paths_and_principals_literally(ops: ChatOps, mesh: Mesh) -> None:
    put_policy(mesh, "allow-outsiders", ["/<!channel>"], [OUTSIDER])
    run(ops, f"authz {NS} list")
    listing = ops.roots()[-1]
    assert "`allow-outsiders` —" in listing
    assert not PING.search(listing), listing
    assert "to GET /&lt;!channel&gt;" in listing
    assert "from cluster.local/ns/&lt;!here&gt;/sa/web" in listing


def test_a_dry_run_shows_the_live_values_literally(ops: ChatOps, mesh: Mesh) -> None:
    """meshbot's own policy, edited in the cluster: the plan to replace it shows its values."""
    put_policy(mesh, "allow-payment-service-from-web", ["/<!channel>"], [OUTSIDER], MANAGED)
    url = run(ops, f"authz {NS} allow from={WEB} to={SVC} confirm=yes dry-run")
    words = told(ops, url)
    assert "update AuthorizationPolicy production/allow-payment-service-from-web" in words
    assert not PING.search(words), words
    assert "&lt;!channel&gt;" in words and "&lt;!here&gt;" in words


def test_callers_prometheus_saw_are_named_literally(ops: ChatOps, mesh: Mesh) -> None:
    with MetricsSource(str(ops.bot.settings.prometheus_url), timeout=5) as source:
        eventually(lambda: [c for c in observed_callers(source.query(traffic_query(NS)), [SVC])
                            if c.source == OUTSIDER], 30, "Prometheus sees the caller")
    url = run(ops, f"authz {NS} deny-all")
    words = told(ops, url)
    assert "would cut traffic that no ALLOW rule admits" in words
    assert not PING.search(words), words
    assert f"`{SVC}` ← `cluster.local/ns/&lt;!here&gt;/sa/web`" in words


def test_a_long_audit_listing_is_cut_to_slacks_limit_with_a_note(ops: ChatOps,
                                                                 mesh: Mesh) -> None:
    """A hundred entries of plan-sized detail (600 characters each) pass the 40,000
    characters chat.postMessage takes."""
    audit = AuditLog(mesh.redis)
    for i in range(100):
        audit.record(AuditEntry(actor="U0OPERATOR", action="routing", target=SVC,
                                outcome="done", detail=f"entry {i}: " + "x" * 600))
    run(ops, f"audit {SVC} 100")
    text = ops.roots()[-1]
    assert text.startswith(f":ledger: *Audit* `{SVC}`: last 100")
    assert len(text) <= 40_000
    assert CUT_NOTE.search(text), text[-300:]
    assert "entry 99:" in text  # the newest first: what is cut is the oldest


def test_every_write_is_cut_to_slacks_limits(slack_api: SlackApiStandIn) -> None:
    notifier = Notifier("xoxb-test", slack_api.base_url)
    long = "y" * 50_000
    section = [{"type": "section", "text": {"type": "mrkdwn", "text": "z" * 5_000}}]
    ts = notifier.post_root("C1", long, section)
    reply = notifier.reply("C1", ts, long)
    posted, replied = slack_api.message("C1", ts), slack_api.message("C1", reply)
    for message in (posted, replied):
        assert len(message.text) == 40_000 and CUT_NOTE.search(message.text)
    shown = posted.blocks[0]["text"]["text"]
    assert len(shown) == 3_000 and CUT_NOTE.search(shown)
    notifier.update("C1", ts, "w" * 45_000)
    updated = slack_api.message("C1", ts).text
    assert len(updated) == 40_000 and updated.startswith("w") and CUT_NOTE.search(updated)
    notifier.ephemeral("v" * 41_000, channel="C1", user="U1")
    [private] = slack_api.ephemerals(user="U1")
    assert len(private.text) == 40_000 and CUT_NOTE.search(private.text)
