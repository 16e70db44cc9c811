"""What a person does on the page, done as Slack would do it to meshbot.

- a slash command: form-encoded, signed with the app's signing secret, POSTed to
  ``meshbot serve``'s ``/slack/events`` with a fresh ``response_url`` of the Slack stand-in;
- a click on an emoji: Slack records the reaction and sends a signed ``reaction_added`` event
  (``reaction_removed`` when the same person clicks it again);
- the traffic panel: the traffic generator's control (the canary's error rate and latency).
"""

from __future__ import annotations

import json
import secrets
import time

from playground.sample_mesh import NAMESPACE, SERVICES
from playground.slack_client import SlackSender, reaction_event
from playground.web.live import CHANNEL_NAME, SIGNING_SECRET, Playground
from playground.web.state import JSON, Asked, Asks

MAX_TEXT = 500


class Refused(ValueError):
    """The page's request is not one the page makes (unknown person, service, emoji …)."""


def _person(playground: Playground, user: str) -> str:
    if not any(p.id == user for p in playground.people):
        raise Refused(f"unknown person {user!r}")
    return next(p.name for p in playground.people if p.id == user)


def slash_command(playground: Playground, asks: Asks, user: str, text: str) -> JSON:
    """``/mesh text`` from ``user`` in the channel; answers meshbot's ack as the caller sees it."""
    name = _person(playground, user)
    text = text.strip().removeprefix("/mesh").strip()
    if not text or len(text) > MAX_TEXT or "\n" in text:
        raise Refused("type one line after /mesh")
    response_url = playground.slack.new_response_url(channel=playground.channel, user=user)
    asked = Asked(user, text, time.time(), response_url)
    with SlackSender(playground.events_url, SIGNING_SECRET) as sender:
        reply = sender.slash_command(text=text, user_id=user, user_name=name,
                                     channel_id=playground.channel, channel_name=CHANNEL_NAME,
                                     response_url=response_url)
    asked.status = reply.status
    try:
        body = json.loads(reply.body) if reply.body.startswith("{") else {"text": reply.body}
    except ValueError:
        body = {"text": reply.body}
    asked.ack = body if isinstance(body, dict) else {"text": reply.body}
    if reply.status != 200:
        asked.ack = {"text": f"meshbot answered HTTP {reply.status}: {reply.body[:300]}"}
    asks.add(asked)
    return {"status": reply.status, "ack": asked.ack}


def toggle_reaction(playground: Playground, user: str, ts: str, name: str) -> JSON:
    """Add ``user``'s ``name`` reaction to the message ``ts`` (remove it if there), and tell
    meshbot as Slack's Events API does."""
    _person(playground, user)
    if not name.replace("_", "").replace("-", "").replace("+", "").isalnum() or len(name) > 60:
        raise Refused(f"not an emoji name: {name!r}")
    slack, channel = playground.slack, playground.channel
    message = slack.message(channel, ts)  # SlackMethodError if there is none
    added = user not in message.reactions.get(name, ())
    if added:
        slack.add_reaction(channel, ts, name, user)
    else:
        slack.remove_reaction(channel, ts, name, user)
    kind = "reaction_added" if added else "reaction_removed"
    event = reaction_event(kind, user=user, reaction=name, channel=channel, ts=ts,
                           item_user=message.user)
    with SlackSender(playground.events_url, SIGNING_SECRET) as sender:
        reply = sender.event(event, f"Ev{secrets.token_hex(8).upper()}")
    return {"status": reply.status, "kind": kind}


def set_canary_behaviour(playground: Playground, service: str, error_rate: float,
                         latency_ms: float) -> JSON:
    """The traffic generator's canary version of ``service`` answers 5xx to ``error_rate`` of
    its requests and takes ``latency_ms`` (the p99 it aims at)."""
    if service not in SERVICES:
        raise Refused(f"unknown service {service!r}")
    if not 0.0 <= error_rate <= 1.0 or not 0.0 < latency_ms <= 10_000.0:
        raise Refused("error rate in [0, 1] and latency in (0, 10000] ms")
    playground.traffic.set_profile(service, subset="canary", namespace=NAMESPACE,
                                   error_rate=error_rate, latency_ms=latency_ms)
    return dict(playground.traffic.control({"service": service, "namespace": NAMESPACE}))
