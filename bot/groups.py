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
                 clock: Clock = time.monotonic, error_ttl_s: float = 10.0) -> None:
        self.client = client
        self.ttl_s = ttl_s
        # A failed lookup is remembered briefly (not for the full TTL), so Slack is asked again
        # soon instead of the group counting as empty for minutes.
        self.error_ttl_s = error_ttl_s
        self.clock = clock
        # group -> (when looked up, members, whether the lookup failed)
        self._cache: dict[str, tuple[float, frozenset[str], bool]] = {}
        self._lock = threading.Lock()

    def members(self, group: str) -> frozenset[str]:
        now = self.clock()
        with self._lock:
            cached = self._cache.get(group)
        if cached is not None:
            fetched_at, users, failed = cached
            if now - fetched_at < (self.error_ttl_s if failed else self.ttl_s):
                return users
        try:
            response = self.client.usergroups_users_list(usergroup=group)
            users, failed = frozenset(str(u) for u in response.get("users") or []), False
        except SlackApiError:
            # An unknown or unreadable group grants nothing (fail closed); keep the last good
            # view if there is one so a Slack hiccup does not lock out every approver at once.
            users, failed = (cached[1] if cached is not None else frozenset()), True
        with self._lock:
            self._cache[group] = (now, users, failed)
        return users

    def groups_of(self, user: str, groups: Iterable[str]) -> frozenset[str]:
        return frozenset(g for g in groups if user in self.members(g))
