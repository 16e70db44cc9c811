"""The Slack stand-in's message metadata, conversations.history and served-then-failed calls,
through a real ``slack_sdk.WebClient`` (Slack's shapes: metadata {event_type, event_payload},
history newest first with a cursor, metadata only with include_all_metadata)."""

from __future__ import annotations

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from playground.slack_api import SlackApiStandIn

TOKEN = "xoxb-standin-history"
METADATA = {"event_type": "meshbot_thread_root", "event_payload": {"key": "job-1:C1:1"}}


@pytest.fixture
def client(slack_api: SlackApiStandIn) -> WebClient:
    return WebClient(token=TOKEN, base_url=slack_api.base_url, retry_handlers=[])


def test_metadata_is_kept_and_returned_only_when_asked(client: WebClient) -> None:
    posted = client.chat_postMessage(channel="C1", text="root", metadata=METADATA)
    assert posted["message"]["metadata"] == METADATA

    plain = client.conversations_history(channel="C1")
    asked = client.conversations_history(channel="C1", include_all_metadata=True)

    assert "metadata" not in plain["messages"][0]
    assert asked["messages"][0]["metadata"] == METADATA
    assert asked["messages"][0]["ts"] == posted["ts"]


def test_metadata_of_the_wrong_shape_is_refused(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel="C1", text="root",
                                metadata={"event_type": "x", "event_payload": "not an object"})
    assert refused.value.response["error"] == "invalid_metadata_format"


def test_history_is_top_level_messages_newest_first_by_pages(client: WebClient) -> None:
    roots = [client.chat_postMessage(channel="C1", text=f"root {i}")["ts"] for i in range(5)]
    client.chat_postMessage(channel="C1", text="a reply", thread_ts=roots[0])

    first = client.conversations_history(channel="C1", limit=3)
    rest = client.conversations_history(channel="C1", limit=3,
                                        cursor=first["response_metadata"]["next_cursor"])
    since = client.conversations_history(channel="C1", oldest=roots[2])

    assert [m["ts"] for m in first["messages"]] == roots[:1:-1]
    assert first["has_more"] is True
    assert [m["ts"] for m in rest["messages"]] == roots[1::-1] and rest["has_more"] is False
    assert [m["ts"] for m in since["messages"]] == roots[:2:-1]  # oldest is exclusive


def test_a_call_served_then_failed_changes_the_workspace(
        slack_api: SlackApiStandIn, client: WebClient) -> None:
    slack_api.fail_after_serving("chat.postMessage", "fatal_error", status=500)
    with pytest.raises(SlackApiError) as failed:
        client.chat_postMessage(channel="C1", text="landed anyway")
    assert failed.value.response.status_code == 500
    assert [m.text for m in slack_api.roots("C1")] == ["landed anyway"]


def test_replies_give_the_thread_oldest_first_with_metadata_only_when_asked(
        client: WebClient) -> None:
    root = client.chat_postMessage(channel="C1", text="root")["ts"]
    reply = {"event_type": "meshbot_thread_reply", "event_payload": {"key": "job-1:r:1"}}
    first = client.chat_postMessage(channel="C1", text="one", thread_ts=root, metadata=reply)
    client.chat_postMessage(channel="C1", text="two", thread_ts=root)
    client.chat_postMessage(channel="C1", text="elsewhere")

    plain = client.conversations_replies(channel="C1", ts=root)
    asked = client.conversations_replies(channel="C1", ts=first["ts"], include_all_metadata=True)
    later = client.conversations_replies(channel="C1", ts=root, oldest=first["ts"])
    paged = client.conversations_replies(channel="C1", ts=root, limit=2)
    rest = client.conversations_replies(channel="C1", ts=root, limit=2,
                                        cursor=paged["response_metadata"]["next_cursor"])

    assert [m["text"] for m in plain["messages"]] == ["root", "one", "two"]
    assert all("metadata" not in m for m in plain["messages"])
    assert [m.get("metadata") for m in asked["messages"]] == [None, reply, None]
    assert [m["text"] for m in later["messages"]] == ["two"]
    assert paged["has_more"] and [m["text"] for m in paged["messages"]] == ["root", "one"]
    assert not rest["has_more"] and [m["text"] for m in rest["messages"]] == ["two"]
    with pytest.raises(SlackApiError) as missing:
        client.conversations_replies(channel="C1", ts="1.000001")
    assert missing.value.response["error"] == "thread_not_found"
