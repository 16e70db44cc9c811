"""A person's side of the chat for integration tests: slash commands and reactions go through
the bot's real listener functions (as Bolt calls them), jobs run on a real RQ worker, and what
people see is read back from the Slack stand-in."""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import yaml

from bot.app import BotContext, handle_command, handle_reaction, web_client
from bot.groups import GroupResolver
from jobs.adapters.locks import Lock, Locks
from meshbot.settings import Settings, packaged_default_policy
from playground.slack_client import new_trigger_id, reaction_event
from playground.slack_model import Message
from policies.loader import load_policy_file
from tests.fixtures.meshbot import CHANNEL, OPERATOR, MeshBase

APPROVERS = ("U0APPROVER1", "U0APPROVER2", "U0APPROVER3")
ONCALL_GROUP = "S0ONCALL"
ONCALL = "U0ONCALL1"
_events = itertools.count(1)


def write_policy(directory: Path) -> Path:
    """The packaged policy, plus an on-call user group among the approvers, and an approver who
    is also an operator (so a requester's own approval can be tried)."""
    data = yaml.safe_load(packaged_default_policy().read_text())
    data["roles"]["operators"].append("U0APPROVER1")
    data["roles"]["approvers"].append(ONCALL_GROUP)
    path = directory / "policy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class ChatOps:
    mesh: MeshBase
    bot: BotContext

    @classmethod
    def start(cls, mesh: MeshBase) -> ChatOps:
        settings = Settings()
        mesh.slack.set_usergroup(ONCALL_GROUP, [ONCALL])
        bot = BotContext(settings=settings, policy=load_policy_file(settings.policy_path),
                         redis=mesh.redis, groups=GroupResolver(web_client(settings)))
        return cls(mesh, bot)

    def command(self, text: str, user: str = OPERATOR) -> tuple[str, str]:
        """(the ack the caller saw, the command's response_url)."""
        url = self.mesh.slack.new_response_url(channel=CHANNEL, user=user)
        ack = handle_command(self.bot, {"text": text, "user_id": user, "channel_id": CHANNEL,
                                        "trigger_id": new_trigger_id(), "response_url": url})
        return ack, url

    def react(self, user: str, ts: str, emoji: str = "white_check_mark", *, added: bool = True,
              event_id: str | None = None) -> str:
        kind = "reaction_added" if added else "reaction_removed"
        body = {"type": "event_callback", "event_id": event_id or f"Ev{next(_events):08d}",
                "event": reaction_event(kind, user=user, reaction=emoji, channel=CHANNEL,
                                        ts=ts)}
        return handle_reaction(self.bot, body)

    def run(self) -> None:
        self.mesh.run_jobs()

    def approval(self) -> Message:
        """The newest approval request in the channel."""
        found = [m for m in self.mesh.slack.roots(CHANNEL) if "Approval needed" in m.text]
        assert found, f"no approval request in {CHANNEL}: {self.mesh.slack.roots(CHANNEL)}"
        return self.mesh.slack.message(CHANNEL, found[-1].ts)  # as it reads now

    def roots(self) -> list[str]:
        return [m.text for m in self.mesh.slack.roots(CHANNEL)]

    def thread(self, ts: str) -> list[str]:
        return [m.text for m in self.mesh.slack.thread(CHANNEL, ts)]

    def told(self, response_url: str, user: str = OPERATOR) -> list[str]:
        """Everything only the caller saw: replies to the command, and ephemerals later."""
        posts = [r.text for r in self.mesh.slack.responses() if r.url == response_url]
        return posts + [e.text for e in self.mesh.slack.ephemerals(user=user)]

    def queued(self) -> int:
        return int(sum(self.mesh.redis.llen(f"rq:queue:{name}")
                       for name in ("meshbot", "meshbot-urgent")))

    def lock(self, service: str, holder: str, what: str, since: float) -> None:
        """A lock another worker holds (e.g. one killed mid-job)."""
        held = Locks(self.mesh.redis).acquire(Lock(service=service, request_id="other-worker",
                                                   user=holder, what=what, since=since))
        assert held is None
