"""What the page shows, as JSON: the channel, what only one person saw, the mesh's routes.

Everything is read from the stand-ins as they are at that moment: the Slack stand-in's record
of messages (threads, edits, reactions, shared files), the replies meant for one person (the
ack of their slash command, later posts to its ``response_url``, ``chat.postEphemeral``), and
the VirtualServices in the Kubernetes stand-in. Nothing here writes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jobs.adapters.rollout_store import RolloutStore
from playground.mesh_weights import managed_route
from playground.sample_mesh import NAMESPACE, NETWORKING, SERVICES, TIERS
from playground.slack_model import Message
from playground.web.live import Playground

JSON = dict[str, Any]


@dataclass
class Asked:
    """One slash command someone sent from the page, and what meshbot answered them alone."""

    user: str
    text: str
    at: float
    response_url: str
    status: int = 0
    ack: JSON = field(default_factory=dict)  # the ack's body: {"text", "blocks"?}


class Asks:
    """The page's record of who asked what (Slack keeps no history of ephemeral replies)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._asked: list[Asked] = []

    def add(self, asked: Asked) -> None:
        with self._lock:
            self._asked.append(asked)

    def of(self, user: str) -> list[Asked]:
        with self._lock:
            return [a for a in self._asked if a.user == user]


def message_json(message: Message, files: Mapping[str, JSON]) -> JSON:
    return {
        "ts": message.ts,
        "user": message.user,
        "text": message.text,
        "blocks": list(message.blocks),
        "edited": message.edits,
        "reactions": [{"name": name, "users": list(users)}
                      for name, users in message.reactions.items()],
        "files": [files[f] for f in message.files if f in files],
    }


def channel_json(playground: Playground) -> list[JSON]:
    """The channel's threads, oldest first: each root with its replies in order."""
    slack = playground.slack
    files = {f.id: {"id": f.id, "title": f.title or f.filename, "alt": f.alt_txt,
                    "image": f.mimetype == "image/png", "url": f"/api/files/{f.id}"}
             for f in slack.files() if f.content is not None}
    messages = slack.messages(playground.channel)
    threads: dict[str, JSON] = {}
    for message in messages:
        if not message.is_reply:
            threads[message.ts] = {**message_json(message, files), "replies": []}
    for message in messages:
        root = threads.get(message.thread_ts or "") if message.is_reply else None
        if root is not None:
            root["replies"].append(message_json(message, files))
    return list(threads.values())


def private_json(playground: Playground, asks: Asks, user: str) -> list[JSON]:
    """What ``user`` alone sees, oldest first: their commands with meshbot's private answers."""
    answers = playground.slack.responses()
    shown: list[JSON] = []
    for asked in asks.of(user):
        later = [{"text": r.text, "blocks": list(r.body.get("blocks") or []), "at": r.at}
                 for r in answers if r.url == asked.response_url and r.ephemeral]
        shown.append({"command": f"/mesh {asked.text}", "at": asked.at, "status": asked.status,
                      "replies": [{"text": str(asked.ack.get("text", "")),
                                   "blocks": list(asked.ack.get("blocks") or []),
                                   "at": asked.at}, *later]})
    for eph in playground.slack.ephemerals(channel=playground.channel, user=user):
        shown.append({"command": "", "at": float(eph.ts), "status": 200,
                      "replies": [{"text": eph.text, "blocks": list(eph.blocks),
                                   "at": float(eph.ts)}]})
    return sorted(shown, key=lambda s: float(s["at"]))


def _route_json(route: Mapping[str, Any]) -> JSON:
    weights = {str(d["destination"].get("subset", "")): int(d.get("weight", 100))
               for d in route.get("route", [])}
    match = None
    for clause in route.get("match") or []:
        for name, rule in (clause.get("headers") or {}).items():
            value = next(iter(rule.values()), "") if isinstance(rule, Mapping) else rule
            match = f"{name}: {value}"
    mirror = route.get("mirror")
    percentage = route.get("mirrorPercentage", {}).get("value") if mirror else None
    return {"weights": weights, "match": match,
            "mirror": None if not mirror else {"subset": mirror.get("subset"),
                                               "percent": 100.0 if percentage is None
                                               else float(percentage)}}


def mesh_json(playground: Playground) -> list[JSON]:
    """Per service: its tier and the routes of its VirtualService as the cluster has them."""
    tier_of = {svc: tier for tier, services in TIERS.items() for svc in services}
    rollouts = {svc: rollout for svc, (_, rollout)
                in RolloutStore(playground.redis).get_many(list(SERVICES)).items()}
    shown: list[JSON] = []
    for service in SERVICES:
        try:
            vs = playground.cluster.get(*NETWORKING, "virtualservices", NAMESPACE, service)
        except Exception as exc:  # a missing object is shown, not fatal to the page
            shown.append({"service": service, "tier": tier_of[service], "error": str(exc)})
            continue
        spec = vs.get("spec", {})
        managed = managed_route(spec) or {}
        entry: JSON = {
            "service": service,
            "tier": tier_of[service],
            "managed": _route_json(managed),
            "header_routes": [_route_json(r) for r in spec.get("http", []) if r.get("match")],
            "resource_version": vs.get("metadata", {}).get("resourceVersion"),
            "rollout": None if (r := rollouts.get(service)) is None else {
                "phase": str(r.phase.value).replace("_", " "), "weight": r.weight,
                "passed_checks": r.passed_checks, "failed_checks": r.failed_checks,
                "failure_threshold": r.failure_threshold},
        }
        shown.append(entry)
    return shown


def traffic_json(playground: Playground, service: str) -> JSON:
    """The traffic generator's behaviour of ``service``'s versions (error rate, latency)."""
    for described in playground.traffic.state()["services"]:
        if described["service"] == service:
            return dict(described)
    return {}


def page_state(playground: Playground, asks: Asks, user: str) -> JSON:
    return {
        "now": time.time(),
        "channel": channel_json(playground),
        "private": private_json(playground, asks, user),
        "mesh": mesh_json(playground),
        "users": {u.id: u.name for u in playground.slack.users().values()},
    }
