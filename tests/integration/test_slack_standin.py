"""The Slack stand-in answers a real slack_sdk.WebClient like Slack, and the inbound helpers
sign and shape requests exactly as Slack does (checked with slack_sdk's own verifier)."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import Clock, SignatureVerifier

from playground.slack_api import SlackApiStandIn
from playground.slack_client import (
    SlackSender,
    reaction_event,
    send_event,
    send_slash_command,
    sign,
)

TOKEN = "xoxb-standin-test"


@pytest.fixture
def client(slack_api: SlackApiStandIn) -> WebClient:
    return WebClient(token=TOKEN, base_url=slack_api.base_url, retry_handlers=[])


def error_of(exc: pytest.ExceptionInfo[SlackApiError]) -> str:
    return str(exc.value.response["error"])


def test_post_message_answers_like_slack_and_is_recorded(
    slack_api: SlackApiStandIn, client: WebClient
) -> None:
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*hi*"}}]
    first = client.chat_postMessage(channel="C0MESHOPS", text="hi", blocks=blocks)
    second = client.chat_postMessage(channel="C0MESHOPS", text="again")

    assert first["ok"] and first["channel"] == "C0MESHOPS"
    assert first["message"]["text"] == "hi"
    assert float(second["ts"]) > float(first["ts"])
    assert [m.text for m in slack_api.messages("C0MESHOPS")] == ["hi", "again"]
    assert slack_api.message("C0MESHOPS", first["ts"]).blocks == tuple(blocks)
    call = slack_api.calls("chat.postMessage")[0]
    assert call.params["channel"] == "C0MESHOPS"
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.status == 200 and call.ok


def test_form_encoded_body_is_understood(slack_api: SlackApiStandIn) -> None:
    blocks = json.dumps([{"type": "section", "text": {"type": "plain_text", "text": "x"}}])
    data = f"channel=C1&text=from+a+form&blocks={urllib.parse.quote(blocks)}".encode()
    request = urllib.request.Request(
        slack_api.base_url + "chat.postMessage",
        data=data,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request) as response:
        answer = json.load(response)

    assert answer["ok"]
    assert slack_api.messages("C1")[0].text == "from a form"
    assert slack_api.messages("C1")[0].blocks[0]["type"] == "section"


def test_token_is_required(slack_api: SlackApiStandIn) -> None:
    with pytest.raises(SlackApiError) as missing:
        WebClient(base_url=slack_api.base_url).auth_test()
    with pytest.raises(SlackApiError) as wrong:
        WebClient(token="xoxp-user-token", base_url=slack_api.base_url).auth_test()

    assert error_of(missing) == "not_authed"
    assert error_of(wrong) == "invalid_auth"


def test_bot_must_join_public_channel_and_cannot_join_private(
    slack_api: SlackApiStandIn, client: WebClient
) -> None:
    slack_api.add_channel("C0PUBLIC", "public", member=False)
    slack_api.add_channel("G0SECRET", "secret", private=True, member=False)

    with pytest.raises(SlackApiError) as outside:
        client.chat_postMessage(channel="C0PUBLIC", text="hello")
    client.conversations_join(channel="C0PUBLIC")
    client.chat_postMessage(channel="C0PUBLIC", text="hello")
    with pytest.raises(SlackApiError) as private_join:
        client.conversations_join(channel="G0SECRET")
    with pytest.raises(SlackApiError) as private_post:
        client.chat_postMessage(channel="G0SECRET", text="hello")

    assert error_of(outside) == "not_in_channel"
    assert [m.text for m in slack_api.messages("C0PUBLIC")] == ["hello"]
    assert error_of(private_join) == "method_not_supported_for_channel_type"
    assert error_of(private_post) == "channel_not_found"


def test_unknown_channels_can_be_refused(client: WebClient) -> None:
    with SlackApiStandIn(auto_create=False) as strict:
        strict_client = WebClient(token=TOKEN, base_url=strict.base_url, retry_handlers=[])
        with pytest.raises(SlackApiError) as exc:
            strict_client.chat_postMessage(channel="C0NOWHERE", text="x")
    assert error_of(exc) == "channel_not_found"


def test_rate_limit_answers_429_with_retry_after_then_recovers(
    slack_api: SlackApiStandIn, client: WebClient
) -> None:
    slack_api.rate_limit("chat.postMessage", times=1, retry_after=7)

    with pytest.raises(SlackApiError) as limited:
        client.chat_postMessage(channel="C1", text="x")
    client.chat_postMessage(channel="C1", text="y")

    assert limited.value.response.status_code == 429
    assert limited.value.response.headers["Retry-After"] == "7"
    assert [c.status for c in slack_api.calls("chat.postMessage")] == [429, 200]


def test_update_thread_and_render(slack_api: SlackApiStandIn, client: WebClient) -> None:
    slack_api.add_user("U0ALICE", "alice")
    slack_api.add_channel("C0MESHOPS", "mesh-ops")
    root = client.chat_postMessage(channel="C0MESHOPS", text="Canary for <@U0ALICE>")["ts"]
    reply = client.chat_postMessage(channel="C0MESHOPS", text="step 1", thread_ts=root)["ts"]
    nested = client.chat_postMessage(channel="C0MESHOPS", text="step 2", thread_ts=reply)["ts"]
    client.chat_update(channel="C0MESHOPS", ts=root, text="stable 90 / canary 10")
    slack_api.add_reaction("C0MESHOPS", root, "white_check_mark", "U0ALICE")

    thread = slack_api.thread("C0MESHOPS", reply)
    assert [m.ts for m in thread] == [root, reply, nested]
    assert thread[0].history == ("Canary for <@U0ALICE>",)
    assert thread[2].thread_ts == root  # a reply to a reply joins the root's thread
    rendered = slack_api.render_thread("C0MESHOPS", root)
    assert "#mesh-ops" in rendered
    assert "stable 90 / canary 10" in rendered and "(edited 1x)" in rendered
    assert ":white_check_mark: 1 (@alice)" in rendered
    assert rendered.index("step 1") < rendered.index("step 2")
    got = client.reactions_get(channel="C0MESHOPS", timestamp=root)
    assert got["message"]["reactions"] == [
        {"name": "white_check_mark", "users": ["U0ALICE"], "count": 1}
    ]


def test_reply_to_unknown_thread_is_refused(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel="C1", text="x", thread_ts="1.000001")
    assert error_of(exc) == "thread_not_found"


def test_lookups_and_ephemeral(slack_api: SlackApiStandIn, client: WebClient) -> None:
    slack_api.add_user("U0BOB", "bob", real_name="Bob B")
    slack_api.set_usergroup("S0ONCALL", ["U0BOB", "U0ALICE"])
    ts = client.chat_postMessage(channel="C1", text="root")["ts"]

    ephemeral = client.chat_postEphemeral(channel="C1", user="U0BOB", text="only you")
    link = client.chat_getPermalink(channel="C1", message_ts=ts)["permalink"]
    auth = client.auth_test()

    assert slack_api.ephemerals(user="U0BOB")[0].ts == ephemeral["message_ts"]
    assert link.endswith("/archives/C1/p" + ts.replace(".", ""))
    assert (auth["user_id"], auth["team_id"]) == (slack_api.bot_user_id, slack_api.team_id)
    assert client.users_info(user="U0BOB")["user"]["real_name"] == "Bob B"
    assert client.usergroups_users_list(usergroup="S0ONCALL")["users"] == ["U0BOB", "U0ALICE"]
    assert client.conversations_info(channel="C1")["channel"]["is_member"] is True
    assert slack_api.messages("C1")[0].text == "root"  # ephemerals are not channel history


def test_response_url_records_replies_and_expires(slack_api: SlackApiStandIn) -> None:
    url = slack_api.new_response_url(channel="C0MESHOPS", user="U0BOB")

    def post(body: dict[str, object]) -> int:
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            exc.close()
            return exc.code

    statuses = [post({"text": "private"}), post({"response_type": "in_channel", "text": "all"})]
    statuses += [post({"text": f"{n}"}) for n in range(4)]

    assert statuses == [200, 200, 200, 200, 200, 404]  # five uses, as Slack allows
    responses = slack_api.responses()
    assert [r.text for r in responses][:2] == ["private", "all"]
    assert responses[0].ephemeral and not responses[1].ephemeral
    assert [m.text for m in slack_api.messages("C0MESHOPS")] == ["all"]


def test_wait_for_wakes_on_change_and_times_out(
    slack_api: SlackApiStandIn, client: WebClient
) -> None:
    poster = threading.Thread(target=lambda: client.chat_postMessage(channel="C2", text="late"))
    poster.start()
    message = slack_api.wait_for_message("C2", lambda m: m.text == "late", timeout=5)
    poster.join()

    assert message.text == "late"
    with pytest.raises(TimeoutError, match="a message in C3"):
        slack_api.wait_for_message("C3", timeout=0.05)


# -- the inbound side: what Slack sends to meshbot -------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A minimal HTTP server standing where meshbot would, recording what arrives."""
    seen: list[Received] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = dict(self.headers.items())
            seen.append(Received("POST", self.path, headers, body, self.client_address[1]))
            payload = b'{"text": "ack"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/slack/events", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_sign_matches_slack_sdk_verifier() -> None:
    body = b"token=x&text=canary+payment-service+10"
    signature = sign("s3cret", body, 1_700_000_000)
    verifier = SignatureVerifier("s3cret", clock=FixedClock(1_700_000_000))

    assert signature.startswith("v0=")
    assert verifier.is_valid(body, "1700000000", signature)
    assert not verifier.is_valid(body + b"x", "1700000000", signature)


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> float:
        return self._now


def test_slash_command_is_form_encoded_and_signed(receiver: Receiver) -> None:
    reply = send_slash_command(
        receiver.url,
        "s3cret",
        text="canary payment-service 10",
        user_id="U0OPERATOR1",
        channel_id="C0MESHOPS",
        team_id="T0MESH",
        trigger_id="123.456.abc",
        response_url="http://127.0.0.1:1/response/x",
        retry_num=1,
    )

    assert reply.status == 200 and reply.json() == {"text": "ack"} and reply.elapsed > 0
    got = receiver.requests[0]
    assert got.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert SignatureVerifier("s3cret").is_valid_request(got.body, got.headers)
    form = {k: v[0] for k, v in parse_qs(got.body.decode()).items()}
    assert form["command"] == "/mesh" and form["text"] == "canary payment-service 10"
    assert form["trigger_id"] == "123.456.abc" and form["user_id"] == "U0OPERATOR1"
    assert {"token", "team_domain", "channel_name", "user_name", "api_app_id"} <= form.keys()
    assert got.headers["X-Slack-Retry-Num"] == "1"
    assert got.headers["X-Slack-Retry-Reason"] == "http_timeout"


def test_event_callback_envelope_is_json_and_signed(receiver: Receiver) -> None:
    event = reaction_event(
        "reaction_added", user="U0APPROVER1", reaction="white_check_mark", channel="C1", ts="1.2"
    )
    reply = send_event(receiver.url, "s3cret", event, "Ev0001")

    assert reply.status == 200
    got = receiver.requests[0]
    assert SignatureVerifier("s3cret").is_valid_request(got.body, got.headers)
    envelope = json.loads(got.body)
    assert envelope["type"] == "event_callback" and envelope["event_id"] == "Ev0001"
    assert envelope["event"]["item"] == {"type": "message", "channel": "C1", "ts": "1.2"}
    assert "X-Slack-Retry-Num" not in got.headers


def test_persistent_sender_reuses_one_connection(receiver: Receiver) -> None:
    with SlackSender(receiver.url, "s3cret", persistent=True) as sender:
        for n in range(3):
            sender.slash_command(
                text=f"status svc-{n}", user_id="U1", channel_id="C1", response_url="http://x/"
            )

    assert len({r.client_port for r in receiver.requests}) == 1
    assert len(receiver.requests) == 3


# -- file uploads: files.getUploadURLExternal, the upload URL, files.completeUploadExternal --

def test_files_upload_v2_shares_the_file_in_the_thread(slack_api: SlackApiStandIn,
                                                      client: WebClient) -> None:
    root = client.chat_postMessage(channel="C0MESHOPS", text="root")["ts"]
    answer = client.files_upload_v2(channel="C0MESHOPS", thread_ts=root, filename="chart.png",
                                    content=b"\x89PNG\r\n\x1a\n-chart-", title="the chart",
                                    initial_comment="see the chart")
    shared = answer["file"]
    assert shared["name"] == "chart.png" and shared["mimetype"] == "image/png"
    reply = slack_api.thread("C0MESHOPS", root)[-1]
    assert reply.text == "see the chart" and reply.files == (shared["id"],)
    assert slack_api.file(shared["id"]).shared_in == (("C0MESHOPS", reply.ts),)


def test_completing_an_upload_whose_bytes_never_arrived_is_refused(
        client: WebClient) -> None:
    started = client.files_getUploadURLExternal(filename="chart.png", length=10)
    with pytest.raises(SlackApiError) as missing:
        client.files_completeUploadExternal(files=[{"id": started["file_id"]}],
                                            channel_id="C0MESHOPS")
    assert error_of(missing) == "file_not_found"
    request = urllib.request.Request(started["upload_url"], data=b"short", method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    with pytest.raises(SlackApiError) as wrong:
        client.files_completeUploadExternal(files=[{"id": started["file_id"]}],
                                            channel_id="C0MESHOPS")
    assert error_of(wrong) == "invalid_file_length"
    with pytest.raises(SlackApiError) as bad:
        client.files_getUploadURLExternal(filename="chart.png", length=0)
    assert error_of(bad) == "invalid_arguments"
