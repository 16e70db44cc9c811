"""The local stack every playground user shares: a private Redis, the Kubernetes stand-in with
the runbook's sample mesh, the Slack stand-in with one channel, and the environment that points
`meshbot serve`/`meshbot worker` (or an in-process job context) at them.

`make demo`, the benchmarks and the end-to-end fixtures build it here, so the three cannot drift.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from playground.kube_emulator import RunningCluster, start_cluster
from playground.redis_server import RedisServer
from playground.sample_mesh import seed_sample_mesh
from playground.slack_api import SlackApiStandIn


@dataclass
class LocalStack:
    workdir: Path
    redis_url: str
    redis: redis.Redis
    cluster: RunningCluster
    slack: SlackApiStandIn
    env: dict[str, str]  # what `meshbot worker` (or an in-process JobContext) is configured by


def meshbot_env(*, slack_url: str, bot_token: str, signing_secret: str, redis_url: str,
                kubeconfig: Path, policy: Path) -> dict[str, str]:
    """The environment (the documented variable names) of a meshbot process on the local stack."""
    return {
        "SLACK_API_URL": slack_url,
        "SLACK_BOT_TOKEN": bot_token,
        "SLACK_SIGNING_SECRET": signing_secret,
        "REDIS_URL": redis_url,
        "KUBECONFIG": str(kubeconfig),
        "MESHBOT_POLICY": str(policy),
    }


@contextlib.contextmanager
def local_stack(workdir: Path, policy: Path, *, channel: tuple[str, str], bot_token: str,
                signing_secret: str, sample_mesh: bool = True) -> Iterator[LocalStack]:
    """Start everything (stopped on the way out, whatever happens). ``channel`` is (id, name)."""
    with (RedisServer(workdir / "redis") as redis_server,
          start_cluster() as cluster,
          SlackApiStandIn() as slack):
        if sample_mesh:
            seed_sample_mesh(cluster)
        slack.add_channel(*channel)
        env = meshbot_env(slack_url=slack.base_url, bot_token=bot_token,
                          signing_secret=signing_secret, redis_url=redis_server.url,
                          kubeconfig=cluster.write_kubeconfig(workdir / "kubeconfig"),
                          policy=policy)
        client = redis.Redis.from_url(redis_server.url)
        try:
            yield LocalStack(workdir, redis_server.url, client, cluster, slack, env)
        finally:
            client.close()
