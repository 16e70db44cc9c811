"""The Slack app manifest in docs/ asks for what meshbot uses: the command, its URL, the
events approvals need, and a scope for every Web API method meshbot calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MANIFEST = Path(__file__).resolve().parents[2] / "docs" / "slack-app-manifest.yaml"
URL = "https://meshbot.example.com/slack/events"
# The Web API methods meshbot's code calls, and the bot scope each one needs.
METHOD_SCOPES = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.postEphemeral": "chat:write",
    "conversations.join": "channels:join",
    "conversations.history": "channels:history",
    "usergroups.users.list": "usergroups:read",
}


def manifest() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(MANIFEST.read_text())
    return loaded


def test_the_slash_command_events_and_interactivity_reach_slack_events() -> None:
    app = manifest()
    [command] = app["features"]["slash_commands"]
    assert (command["command"], command["url"]) == ("/mesh", URL)
    settings = app["settings"]
    assert settings["event_subscriptions"]["request_url"] == URL
    assert set(settings["event_subscriptions"]["bot_events"]) == {"reaction_added",
                                                                   "reaction_removed"}
    assert settings["interactivity"] == {"is_enabled": True, "request_url": URL}
    assert settings["socket_mode_enabled"] is False  # the HTTP variant; docs say how to flip it


def test_scopes_cover_every_method_and_event_meshbot_uses() -> None:
    scopes = set(manifest()["oauth_config"]["scopes"]["bot"])
    assert set(METHOD_SCOPES.values()) <= scopes
    assert {"commands", "reactions:read", "chat:write.public"} <= scopes
    assert not [s for s in scopes if s.endswith(":write") and s != "chat:write"]
