"""Slack user-group membership, resolved with ``usergroups.users.list`` and cached with a TTL.

Roles in the policy may name user groups (``S…``); the policy decides on the set of groups the
caller belongs to, which this module works out.

The lookups happen while a slash command waits for its ack (Slack allows 3 s), so they have a
short timeout of their own, and a Slack that cannot be reached is a failed lookup like any
other: the last good view if there is one, else no members (fail closed), remembered briefly.
"""

from __future__ import annotations

import http.client
import logging
import threading
import time
from collections.abc import Callable, Iterable

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from meshbot.network_words import in_words

Clock = Callable[[], float]
log = logging.getLogger(__name__)

# Well inside Slack's 3 s for an ack, with room for the rest of the command.
LOOKUP_TIMEOUT_S = 1


class UserGroups(frozenset[str]):
    """The groups a user belongs to, and the groups that could not be read from Slack (it could
    not be reached and there was no earlier view): the policy decides on the first; a refusal
    can say the second were not counted."""

    unread: frozenset[str]

    def __new__(cls, groups: Iterable[str] = (), unread: Iterable[str] = ()) -> UserGroups:
        self = super().__new__(cls, groups)
        self.unread = frozenset(unread)
        return self


class GroupResolver:
    def __init__(self, client: WebClient, ttl_s: float = 300.0,
                 clock: Clock = time.monotonic, error_ttl_s: float = 10.0,
                 timeout_s: int = LOOKUP_TIMEOUT_S) -> None:
        # A client of its own with a short timeout and no retry: a hung or unreachable Slack
        # must cost the ack about ``timeout_s``, not the caller's client's 10 s (twice).
        self.client = WebClient(token=client.token, base_url=client.base_url,
                                timeout=timeout_s,
                                ssl=client.ssl, proxy=client.proxy, retry_handlers=[])
        self.ttl_s = ttl_s
        # A failed lookup is remembered briefly (not for the full TTL), so Slack is asked again
        # soon instead of the group counting as empty for minutes.
        self.error_ttl_s = error_ttl_s
        self.clock = clock
        # group -> (when looked up, members, whether the lookup failed, whether it was read)
        self._cache: dict[str, tuple[float, frozenset[str], bool, bool]] = {}
        # Until when Slack is taken to be unreachable: the other groups are not asked in turn
        # (each would wait its own timeout).
        self._unreachable_until = float("-inf")
        self._lock = threading.Lock()

    def members(self, group: str) -> frozenset[str]:
        return self._lookup(group)[0]

    def _lookup(self, group: str) -> tuple[frozenset[str], bool]:
        """(members, whether Slack's answer — now or earlier — is behind them)."""
        now = self.clock()
        with self._lock:
            cached = self._cache.get(group)
            unreachable = now < self._unreachable_until
        if cached is not None:
            fetched_at, users, failed, read = cached
            if now - fetched_at < (self.error_ttl_s if failed else self.ttl_s):
                return users, read
        # An unknown or unreadable group grants nothing (fail closed); keep the last good view
        # if there is one so a Slack hiccup does not lock out every approver at once.
        users, read = (cached[1], cached[3]) if cached is not None else (frozenset(), False)
        failed = True
        if not unreachable:
            try:
                response = self.client.usergroups_users_list(usergroup=group)
                users = frozenset(str(u) for u in response.get("users") or [])
                failed, read = False, True
            except SlackApiError as exc:
                log.warning("user group %s could not be read: %s", group, exc)
                read = True  # Slack answered; the group grants what it had, if anything
            except (OSError, http.client.HTTPException) as exc:
                # urllib's URLError, TimeoutError, a reset: Slack was not asked at all.
                log.warning("user group %s not looked up: Slack %s (%r)", group, in_words(exc),
                            exc)
                with self._lock:
                    self._unreachable_until = now + self.error_ttl_s
        with self._lock:
            self._cache[group] = (now, users, failed, read)
        return users, read

    def groups_of(self, user: str, groups: Iterable[str]) -> UserGroups:
        member_of: list[str] = []
        unread: list[str] = []
        for group in groups:
            users, read = self._lookup(group)
            if user in users:
                member_of.append(group)
            elif not read:
                unread.append(group)
        return UserGroups(member_of, unread)
