"""Slack user-group membership, resolved with ``usergroups.users.list`` and cached with a TTL.

Roles in the policy may name user groups (``S…``); the policy decides on the set of groups the
caller belongs to, which this module works out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

Clock = Callable[[], float]


class GroupResolver:
    def __init__(self, client: WebClient, ttl_s: float = 300.0,
                 clock: Clock = time.monotonic) -> None:
        self.client = client
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def members(self, group: str) -> frozenset[str]:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(group)
        if cached is not None and now - cached[0] < self.ttl_s:
            return cached[1]
        try:
            response = self.client.usergroups_users_list(usergroup=group)
            users = frozenset(str(u) for u in response.get("users") or [])
        except SlackApiError:
            # An unknown or unreadable group grants nothing (fail closed); keep the stale view
            # if there is one so a Slack hiccup does not lock out every approver at once.
            users = cached[1] if cached is not None else frozenset()
        with self._lock:
            self._cache[group] = (now, users)
        return users

    def groups_of(self, user: str, groups: Iterable[str]) -> frozenset[str]:
        return frozenset(g for g in groups if user in self.members(g))
