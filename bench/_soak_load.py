"""The soak's load: seeded commands from several users as signed slash commands to
``meshbot serve``, and approvers answering every open approval request with signed
``reaction_added`` events (now and then a rejection).
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from bench._soak_stack import (
    APPROVERS,
    CHANNEL,
    CRITICAL,
    OPERATORS,
    SIGNING_SECRET,
    SoakStack,
)
from jobs.adapters.approval_store import ApprovalStore
from jobs.adapters.keys import Keys
from playground.slack_client import SlackSender, reaction_event

# (what, weight): canary starts and moves, stepped rollouts, promotes, rollbacks, aborts, route
# edits (a header route, a mirror: on or off), a Slack retry of an earlier command (same
# trigger_id), and a command from someone not allowed to.
MIX: tuple[tuple[str, int], ...] = (("canary", 20), ("move", 12), ("rollout", 14),
                                    ("promote", 14), ("rollback", 14), ("abort", 8),
                                    ("ab", 6), ("mirror", 5), ("retry", 5), ("forbidden", 5))
# What a route edit sends: on more often than off, so a rollback usually has one to remove.
ROUTE_EDITS = {"ab": ("header=x-soak:yes", "header=x-soak:yes", "off"),
               "mirror": ("20 confirm=yes", "50 confirm=yes", "off")}


@dataclass
class Sent:
    trigger_id: str
    text: str
    user: str
    at: float
    status: int  # HTTP status of the ack (0: no answer)
    body: str
    response_token: str
    retry_of: str | None = None

    @property
    def verb(self) -> str:
        return self.text.split()[0]

    @property
    def service(self) -> str:
        return self.text.split()[1]

    @property
    def acked(self) -> bool:
        return self.status == 200

    @property
    def ack_kind(self) -> str:
        """accepted (work for the workers) | duplicate | unavailable | refused (at the gate)."""
        if "Accepted" in self.body:
            return "accepted"
        if "was already received" in self.body:
            return "duplicate"
        if "cannot reach its queue" in self.body:
            return "unavailable"
        return "refused"


class Load:
    def __init__(self, stack: SoakStack, rng: random.Random) -> None:
        self.stack, self.rng = stack, rng
        self.sender = SlackSender(f"{stack.serve.url}/slack/events", SIGNING_SECRET,
                                  persistent=True, timeout=10)
        self.events = SlackSender(f"{stack.serve.url}/slack/events", SIGNING_SECRET, timeout=10)
        self.sent: list[Sent] = []
        self.reacted: dict[str, float] = {}  # approval message ("channel ts") → last answered
        self.reactions = 0
        self.rejections = 0

    def recent_services(self) -> list[str]:
        """The services of the last few commands (where a fault will meet meshbot's work)."""
        return [s.service for s in self.sent[-8:]] or list(self.stack.names)

    def close(self) -> None:
        self.sender.close()
        self.events.close()

    def text(self) -> tuple[str, str, str | None]:
        """(command text, user, trigger_id of the command it retries or None)."""
        what = self.rng.choices([m for m, _ in MIX], [w for _, w in MIX])[0]
        # A quarter on the critical tier: its promotes and canaries above 30 % need approvals.
        service = self.rng.choice(CRITICAL if self.rng.random() < 0.25 else self.stack.names)
        user = self.rng.choice(OPERATORS)
        if what == "retry" and self.sent:
            earlier = self.rng.choice(self.sent[-20:])
            return earlier.text, earlier.user, earlier.trigger_id
        if what in ("canary", "move"):
            return f"canary {service} {self.rng.choice((5, 10, 20, 30, 40, 60))}", user, None
        if what == "rollout":
            steps = ",".join(str(s) for s in self.rng.choice(((10, 25, 50), (10, 50), (20,))))
            return f"rollout {service} steps={steps} interval=2s", user, None
        if what in ROUTE_EDITS:
            return f"{what} {service} {self.rng.choice(ROUTE_EDITS[what])}", user, None
        if what == "forbidden":
            return f"canary {service} 10", self.rng.choice(APPROVERS), None
        return f"{what if what != 'retry' else 'rollback'} {service}", user, None

    def send_one(self) -> Sent:
        text, user, retry_of = self.text()
        trigger = retry_of or f"{int(time.time())}.{secrets.randbelow(10**9)}.{len(self.sent)}"
        url = self.stack.slack.new_response_url(channel=CHANNEL, user=user)
        token = url.rsplit("/", 1)[-1]
        try:
            reply = self.sender.slash_command(text=text, user_id=user, channel_id=CHANNEL,
                                              response_url=url, trigger_id=trigger,
                                              retry_num=1 if retry_of else None)
            status, body = reply.status, reply.body
        except OSError as exc:  # no answer within the timeout: not acked
            self.sender.close()
            status, body = 0, repr(exc)
        sent = Sent(trigger, text, user, time.time(), status, body, token, retry_of)
        self.sent.append(sent)
        return sent

    def answer_approvals(self) -> int:
        """React on every open approval request not yet answered (two approvers; one in ten
        rejected); how many were answered. Redis being away is tried again next time."""
        try:
            open_ = self.stack.redis.zrange(Keys().approvals_open, 0, -1)
        except redis.RedisError:
            return 0
        answered = 0
        store = ApprovalStore(self.stack.redis)
        for member in open_[:20]:
            name = member.decode() if isinstance(member, bytes) else str(member)
            if time.monotonic() - self.reacted.get(name, -1e9) < 3.0:
                continue  # answered a moment ago: give the bot time to count it
            channel, _, ts = name.partition(" ")
            try:
                pending = store.get(channel, ts)
            except redis.RedisError:
                return answered
            if pending is None or pending.state.value != "open":
                continue
            reject = name not in self.reacted and self.rng.random() < 0.1
            voters: Sequence[str] = [a for a in APPROVERS if a != pending.request.user
                                     and a not in pending.approvals]
            voters = voters[:1] if reject else voters[:max(1, pending.required)]
            for voter in voters:
                self._react(voter, "x" if reject else "white_check_mark", channel, ts)
            self.reacted[name] = time.monotonic()
            self.rejections += reject
            answered += 1
        return answered

    def _react(self, user: str, emoji: str, channel: str, ts: str) -> bool:
        event = reaction_event("reaction_added", user=user, reaction=emoji, channel=channel,
                               ts=ts)
        try:
            reply = self.events.event(event, f"Ev{secrets.token_hex(8).upper()}")
        except OSError:
            self.events.close()
            return False
        self.reactions += 1
        return reply.status == 200
