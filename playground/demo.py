"""``meshbot demo`` (``make demo``): the whole of meshbot on loopback, and a short Slack session.

No Slack workspace and no cluster are needed. The demo starts, all on 127.0.0.1 and free ports:

- a private ``redis-server`` (the queue and meshbot's state),
- the Kubernetes API emulator seeded with the runbook's sample mesh (nine services),
- the Slack Web API stand-in (where meshbot posts its messages),
- ``meshbot serve`` and ``meshbot worker`` as real processes, exactly as they ship,

then types a few ``/mesh`` commands as an operator would, signed as Slack signs them, and prints
what that person sees: the private replies, the channel thread, and — read straight from the
cluster — the VirtualService weights after each step. Its files (logs, kubeconfig, Redis) stay
under the work directory; every process it started is stopped when it ends.
"""

from __future__ import annotations

import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
from rq import Worker

from meshbot.settings import packaged_default_policy
from playground.deployment_controller import RolloutController
from playground.kube_emulator import RunningCluster
from playground.mesh_weights import managed_route
from playground.processes import MeshbotProcess, ServeProcess
from playground.redis_server import free_port
from playground.sample_mesh import NETWORKING, SERVICES, TIERS
from playground.slack_api import SlackApiStandIn
from playground.slack_client import SlackSender
from playground.slack_model import Message
from playground.stack import local_stack
from policies.loader import load_policy_file
from policies.views import ServiceView

SERVICE = "payment-service"
WANTED_CANARY = 10
CHANNEL_NAME = "mesh-ops"
OPERATOR_NAME = "alex"
BOT_TOKEN = "xoxb-meshbot-demo"
SIGNING_SECRET = "meshbot-demo-signing-secret"
# Generous for a step that takes well under a second, yet short enough that a stuck demo says so
# quickly; the whole demo must stay well under a minute even when one step fails.
STARTUP_DEADLINE_S = 30.0
STEP_DEADLINE_S = 15.0
MIGRATION_DEADLINE_S = 30.0
NAMESPACE = "production"
INJECT = "sidecar.istio.io/inject"
RULE = "─" * 78


class DemoFailed(Exception):
    """A step did not happen within its deadline; the message says which."""


def run_demo(workdir: Path) -> int:
    """Bring everything up, play the session, stop everything. 0 when every step happened."""
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    logs = {"meshbot serve": workdir / "serve.log", "meshbot worker": workdir / "worker.log"}
    started = time.monotonic()
    print(f"Starting Redis, the Kubernetes emulator, the Slack stand-in, meshbot serve and "
          f"meshbot worker (files in {workdir}) ...")
    try:
        with _installation(workdir, logs) as session:
            session.play()
    except (DemoFailed, TimeoutError, RuntimeError) as exc:
        print(f"\nDEMO FAILED: {exc}")
        for name, path in logs.items():
            print(f"  {name} log: {path}")
            tail = path.read_text(errors="replace").splitlines()[-15:] if path.exists() else []
            print(textwrap.indent("\n".join(tail), "    | ") if tail else "    (empty)")
        return 1
    print(f"\nDemo finished in {time.monotonic() - started:.1f}s; "
          f"logs of serve and worker are in {workdir}.")
    return 0


@contextmanager
def _installation(workdir: Path, logs: dict[str, Path]) -> Iterator[Session]:
    """Every stand-in and both meshbot processes; all stopped on the way out, whatever happens."""
    # The packaged default policy, named explicitly so a MESHBOT_POLICY left in the caller's
    # shell cannot change what the demo shows. Its first channel and first operator are the
    # channel and person the demo plays.
    policy_path = packaged_default_policy()
    policy = load_policy_file(policy_path)
    view = policy.service(SERVICE)
    if view is None or not policy.channels or not policy.members(["operators"]):
        raise DemoFailed(f"{policy_path} lists no {SERVICE}, channel or operator to play with")
    with ExitStack() as stack:
        channel, operator = policy.channels[0], policy.members(["operators"])[0]
        local = stack.enter_context(local_stack(
            workdir, policy_path, channel=(channel, CHANNEL_NAME), bot_token=BOT_TOKEN,
            signing_secret=SIGNING_SECRET))
        cluster, slack = local.cluster, local.slack
        # The emulator runs no controllers: this one completes the migration's rollouts.
        stack.enter_context(RolloutController(cluster))
        slack.add_user(operator, OPERATOR_NAME, real_name="Alex (on-call operator)")
        env = {
            **local.env,
            # The demo runs no Prometheus: a port nobody listens on, so no shared Prometheus on
            # localhost:9090 is ever queried (no data means "hold", never "healthy").
            "PROMETHEUS_URL": f"http://127.0.0.1:{free_port()}",
            # Ticks close together: the migration's steps follow one another within seconds.
            "MESHBOT_TICK_PERIOD": "0.5",
        }
        for path in logs.values():
            path.unlink(missing_ok=True)  # this run's logs only
        # The worker starts first so it loads while serve waits for /healthz.
        worker = stack.enter_context(MeshbotProcess(["worker"], env, logs["meshbot worker"]))
        serve = ServeProcess(env, logs["meshbot serve"])
        stack.enter_context(serve)  # starts it and waits for /healthz
        _wait_for_worker(worker, local.redis_url, STARTUP_DEADLINE_S)
        sender = stack.enter_context(
            SlackSender(f"{serve.url}/slack/events", SIGNING_SECRET, persistent=True))
        print(RULE)
        print("meshbot demo: everything runs on this machine (loopback only)")
        print(f"  Redis                {local.redis_url}")
        print(f"  Kubernetes emulator  {cluster.url}  ({len(SERVICES)} services in production)")
        print(f"  Slack stand-in       {slack.base_url}  (channel #{CHANNEL_NAME} = {channel})")
        print(f"  meshbot serve        {serve.url}  log: {logs['meshbot serve']}")
        print(f"  meshbot worker       log: {logs['meshbot worker']}")
        print(f"  policy               {policy_path}")
        print(f"  you are              @{OPERATOR_NAME} ({operator}), an operator")
        yield Session(slack, cluster, sender, worker, view, channel, operator)


def _wait_for_worker(worker: MeshbotProcess, redis_url: str, timeout: float) -> None:
    """Ready when RQ has registered the worker in Redis; its early exit ends the wait at once."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout
    try:
        while not Worker.count(connection=client):
            remaining = deadline - time.monotonic()
            if worker.process is None or remaining <= 0:
                raise DemoFailed(f"meshbot worker was not listening within {timeout:.0f}s")
            try:
                # Blocks until the worker exits or 0.1 s passes: the pause between two checks
                # is also how an early crash is noticed without delay.
                code = worker.process.wait(timeout=min(0.1, remaining))
            except subprocess.TimeoutExpired:
                continue
            raise DemoFailed(f"meshbot worker exited with status {code} before it was ready")
    finally:
        client.close()


@dataclass
class Session:
    """The scripted conversation, and what the operator reads after each command."""

    slack: SlackApiStandIn
    cluster: RunningCluster
    sender: SlackSender
    worker: MeshbotProcess
    view: ServiceView
    channel: str
    operator: str
    thread_ts: str = ""  # the canary's thread, where the rollback is reported too
    seen: int = 0  # messages in the channel before the last command
    response_url: str = ""  # the last command's, where meshbot answers the caller privately

    def play(self) -> None:
        self.print_weights("before")

        self.type("help")

        percent = self.ungated_canary_percent()
        self.type(f"canary {SERVICE} {percent}")
        stable_line = self.weights_text(100 - percent, percent)
        reply = self.wait_for_new(f"the canary thread to report {stable_line}",
                                  lambda m: m.is_reply and stable_line in m.text)
        self.thread_ts = reply.thread_ts or reply.ts
        self.print_thread(self.thread_ts)
        self.print_weights("after the canary", expect=(100 - percent, percent))

        self.type(f"status {SERVICE}")
        status = self.wait_for_new(
            "the status message in the channel",
            lambda m: not m.is_reply and SERVICE in m.text and stable_line in m.text)
        self.print_thread(status.ts)

        self.type(f"rollback {SERVICE}")
        self.wait_for_new(
            "the rollback to be reported in the canary thread",
            lambda m: m.thread_ts == self.thread_ts and self.weights_text(100, 0) in m.text)
        self.print_thread(self.thread_ts)
        self.print_weights("after the rollback", expect=(100, 0))

        self.migrate_pilots()

    def migrate_pilots(self) -> None:
        """The runbook's phase 2 as one thread: the pilot services injected one at a time, each
        rollout completed by the demo's stand-in Deployment controller."""
        self.type(f"migrate {NAMESPACE} phase=2")
        root = self.wait_for_new("the migration's thread",
                                 lambda m: not m.is_reply and "*Migration*" in m.text)
        status = self.wait_for_new("the migration's status message",
                                   lambda m: m.thread_ts == root.ts and "step 0/" in m.text)

        def finished() -> bool:
            text = self.slack.message(self.channel, status.ts).text
            return ": done*" in text or ": stopped*" in text

        try:
            self.slack.wait_for(finished, MIGRATION_DEADLINE_S, what="the migration to finish")
        except TimeoutError as exc:
            raise DemoFailed(str(exc)) from None
        self.print_thread(root.ts)
        injected = [d["metadata"]["name"] for d in self.cluster.list(
            "apps", "v1", "deployments", NAMESPACE)
            if (d["spec"]["template"]["metadata"].get("annotations") or {}).get(INJECT) == "true"]
        print(f"\n  Deployments with the sidecar in the cluster now: {', '.join(sorted(injected))}")
        if len(injected) != 2 * len(TIERS["pilot"]):
            raise DemoFailed(f"expected the pilots' {2 * len(TIERS['pilot'])} Deployments "
                             f"injected, found {injected}")

    def ungated_canary_percent(self) -> int:
        """The demo's canary weight, lowered if the policy would make it wait for approvers.

        The default policy gates a critical service's canary only above 25%, so 10% runs at
        once; a policy with a lower ``canary_above`` gets a canary at that weight instead.
        """
        if not self.view.approvals_for_weight(WANTED_CANARY):
            return WANTED_CANARY
        return max(1, self.view.approvals.canary_above or 1)

    # -- what the operator does and sees ---------------------------------------------------

    def type(self, text: str) -> None:
        """Send ``/mesh text`` as Slack would and print meshbot's private (ephemeral) answer."""
        print(f"\n{RULE}\n@{OPERATOR_NAME} in #{CHANNEL_NAME}:  /mesh {text}\n")
        self.seen = len(self.slack.messages(self.channel))
        self.response_url = self.slack.new_response_url(channel=self.channel, user=self.operator)
        reply = self.sender.slash_command(text=text, user_id=self.operator,
                                          channel_id=self.channel, response_url=self.response_url)
        if reply.status != 200:
            raise DemoFailed(f"`/mesh {text}` was answered {reply.status}: {reply.body[:200]}")
        answer = reply.json() if reply.body.startswith("{") else {"text": reply.body}
        print(f"  only you see (in {reply.elapsed * 1000:.0f} ms):")
        print(textwrap.indent(str(answer.get("text", "")), "    "))

    def wait_for_new(self, what: str, wanted: Callable[[Message], bool]) -> Message:
        """The first message posted since the last command that ``wanted`` accepts."""
        def found() -> Message | None:
            return next((m for m in self.slack.messages(self.channel)[self.seen:] if wanted(m)),
                        None)

        try:
            return self.slack.wait_for(found, STEP_DEADLINE_S, what=what)
        except TimeoutError as exc:
            # meshbot tells the caller privately when a job is refused or fails: show that.
            told = [r.text for r in self.slack.responses() if r.url == self.response_url]
            alive = self.worker.process is not None and self.worker.process.poll() is None
            raise DemoFailed(
                f"{exc}\n  meshbot worker running: {alive}"
                + "".join(f"\n  meshbot told the caller: {t}" for t in told)) from None

    def print_thread(self, ts: str) -> None:
        print(f"\n  in #{CHANNEL_NAME}, everyone sees:")
        print(textwrap.indent(self.slack.render_thread(self.channel, ts), "    "))

    def print_weights(self, when: str, expect: tuple[int, int] | None = None) -> None:
        namespace, name = self.virtual_service()
        route = managed_route(self.cluster.get(*NETWORKING, "virtualservices", namespace,
                                               name)["spec"]) or {}
        weights = {d["destination"]["subset"]: int(d.get("weight", 0))
                   for d in route.get("route", [])}
        stable, canary = self.view.subsets.stable, self.view.subsets.canary
        shown = self.weights_text(weights.get(stable, 0), weights.get(canary, 0))
        print(f"\n  VirtualService {namespace}/{name} in the cluster, {when}: {shown}")
        if expect is not None and (weights.get(stable, 0), weights.get(canary, 0)) != expect:
            raise DemoFailed(f"expected {self.weights_text(*expect)} in the cluster, "
                             f"found {shown}")

    def virtual_service(self) -> tuple[str, str]:
        # The policy names a VirtualService as "name" or "namespace/name".
        namespace, _, name = self.view.virtual_services[0].rpartition("/")
        return namespace or self.view.namespace, name

    def weights_text(self, stable: int, canary: int) -> str:
        """Weights as meshbot writes them in every message: ``stable 90 / canary 10``."""
        return f"{self.view.subsets.stable} {stable} / {self.view.subsets.canary} {canary}"
