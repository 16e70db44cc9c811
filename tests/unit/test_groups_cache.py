"""User-group lookups: a Slack error is not remembered as "no members" for the whole TTL."""

from __future__ import annotations

from slack_sdk import WebClient

from bot.groups import GroupResolver
from playground.slack_api import SlackApiStandIn


def test_a_failed_lookup_is_asked_again_soon_and_a_good_one_is_cached() -> None:
    now = [1000.0]
    with SlackApiStandIn() as slack:
        client = WebClient(token="xoxb-test", base_url=slack.base_url)
        resolver = GroupResolver(client, ttl_s=300.0, clock=lambda: now[0], error_ttl_s=10.0)
        # The group does not exist yet: the lookup fails and grants nothing (fail closed).
        assert resolver.members("S0ONCALL") == frozenset()
        slack.set_usergroup("S0ONCALL", ["U0APPROVER1"])
        now[0] += 5.0
        assert resolver.members("S0ONCALL") == frozenset()  # within the short error TTL
        now[0] += 6.0
        assert resolver.members("S0ONCALL") == frozenset({"U0APPROVER1"})
        slack.set_usergroup("S0ONCALL", ["U0APPROVER2"])
        now[0] += 200.0
        assert resolver.members("S0ONCALL") == frozenset({"U0APPROVER1"})  # a good answer lasts


def test_a_slack_that_cannot_be_reached_keeps_the_last_good_view_else_grants_nothing() -> None:
    now = [1000.0]
    slack = SlackApiStandIn().start()
    slack.set_usergroup("S0ONCALL", ["U0APPROVER1"])
    client = WebClient(token="xoxb-test", base_url=slack.base_url)
    resolver = GroupResolver(client, ttl_s=300.0, clock=lambda: now[0], error_ttl_s=10.0)
    assert resolver.groups_of("U0APPROVER1", ["S0ONCALL"]) == {"S0ONCALL"}
    slack.stop()  # the connection is refused from now on
    now[0] += 301.0
    seen = resolver.groups_of("U0APPROVER1", ["S0ONCALL", "S0OTHER"])
    assert seen == {"S0ONCALL"}  # the last good view
    assert seen.unread == {"S0OTHER"}  # never read: it grants nothing, and says so
    now[0] += 11.0
    assert resolver.groups_of("U0APPROVER1", ["S0OTHER"]).unread == {"S0OTHER"}
