"""The notifier against the Slack stand-in: real slack_sdk calls over loopback HTTP."""

from __future__ import annotations

import pytest

from jobs.adapters.slack_notifier import BotNotInChannel, Notifier, SlackCallFailed, UpdateOutcome
from meshbot.errors import PermanentError, SlackRateLimited, TemporaryError
from playground.slack_api import SlackApiStandIn
from tests.fixtures.slack import SlackEnv

TOKEN = "xoxb-notifier-test"


class FakeTime:
    """A clock the test moves by hand; ``sleep`` advances it and remembers each wait."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.waits: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.now += seconds


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def notifier(slack_api: SlackApiStandIn, fake_time: FakeTime) -> Notifier:
    return Notifier(TOKEN, slack_api.base_url, clock=fake_time.clock, sleep=fake_time.sleep)


def test_root_and_reply_land_in_one_thread(slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    root = notifier.post_root("C0MESHOPS", "Canary payment-service: stable 90 / canary 10")
    reply = notifier.reply("C0MESHOPS", root, "step 1 passed")

    thread = slack_api.thread("C0MESHOPS", root)
    assert [m.ts for m in thread] == [root, reply]
    assert thread[1].thread_ts == root and thread[1].text == "step 1 passed"
    posted = slack_api.calls("chat.postMessage")
    assert [c.params.get("thread_ts") for c in posted] == [None, root]
    assert {c.params["channel"] for c in posted} == {"C0MESHOPS"}


def test_update_only_on_change(
    slack_api: SlackApiStandIn, notifier: Notifier, fake_time: FakeTime
) -> None:
    ts = notifier.post_root("C1", "progressing")

    same_as_posted = notifier.update("C1", ts, "progressing")
    changed = notifier.update("C1", ts, "holding: no data")
    fake_time.now += 5
    repeated = notifier.update("C1", ts, "holding: no data")

    assert (same_as_posted, changed, repeated) == (
        UpdateOutcome.UNCHANGED,
        UpdateOutcome.SENT,
        UpdateOutcome.UNCHANGED,
    )
    assert len(slack_api.calls("chat.update")) == 1
    assert slack_api.message("C1", ts).text == "holding: no data"


def test_blocks_count_as_content(slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    ts = notifier.post_root("C1", "status")
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*status*"}}]

    assert notifier.update("C1", ts, "status", blocks) is UpdateOutcome.SENT
    assert slack_api.message("C1", ts).blocks == tuple(blocks)


def test_rapid_updates_coalesce_to_one_per_interval(
    slack_api: SlackApiStandIn, notifier: Notifier, fake_time: FakeTime
) -> None:
    ts = notifier.post_root("C1", "step 0")
    assert notifier.update("C1", ts, "step 1") is UpdateOutcome.SENT
    fake_time.now += 0.2
    assert notifier.update("C1", ts, "step 2") is UpdateOutcome.DEFERRED
    assert notifier.update("C1", ts, "step 3") is UpdateOutcome.DEFERRED

    assert notifier.flush() == 1

    assert fake_time.waits == [pytest.approx(0.8)]
    assert [c.params["text"] for c in slack_api.calls("chat.update")] == ["step 1", "step 3"]
    assert slack_api.message("C1", ts).history == ("step 0", "step 1")


def test_held_update_goes_out_on_the_next_update_after_the_interval(
    slack_api: SlackApiStandIn, notifier: Notifier, fake_time: FakeTime
) -> None:
    ts = notifier.post_root("C1", "a")
    notifier.update("C1", ts, "b")
    notifier.update("C1", ts, "c")  # held
    fake_time.now += 1.5

    assert notifier.update("C1", ts, "d") is UpdateOutcome.SENT
    assert notifier.flush() == 0  # "c" was superseded, never sent
    assert [c.params["text"] for c in slack_api.calls("chat.update")] == ["b", "d"]


def test_flush_skips_an_update_another_thread_settled_while_it_waited(
    slack_api: SlackApiStandIn, fake_time: FakeTime
) -> None:
    # The worker's job thread and its ticker share one notifier: while flush waits out the
    # interval, the other thread shows the on-screen state again, which drops the held one.
    def sleep_while_the_other_thread_updates(seconds: float) -> None:
        fake_time.sleep(seconds)
        assert notifier.update("C1", ts, "b") is UpdateOutcome.UNCHANGED

    notifier = Notifier(TOKEN, slack_api.base_url, clock=fake_time.clock,
                        sleep=sleep_while_the_other_thread_updates)
    ts = notifier.post_root("C1", "a")
    notifier.update("C1", ts, "b")
    assert notifier.update("C1", ts, "c") is UpdateOutcome.DEFERRED

    assert notifier.flush() == 0  # was a TypeError (found by bench/soak.py)
    assert [c.params["text"] for c in slack_api.calls("chat.update")] == ["b"]


def test_context_manager_sends_the_last_held_state(
    slack_api: SlackApiStandIn, fake_time: FakeTime
) -> None:
    with Notifier(TOKEN, slack_api.base_url, clock=fake_time.clock, sleep=fake_time.sleep) as n:
        ts = n.post_root("C1", "a")
        n.update("C1", ts, "b")
        n.update("C1", ts, "rolled back")

    assert slack_api.message("C1", ts).text == "rolled back"


def test_short_retry_after_is_waited_out_and_retried_once(slack_api: SlackApiStandIn) -> None:
    # The real clock: the second attempt must reach Slack no sooner than Retry-After.
    notifier = Notifier(TOKEN, slack_api.base_url)
    slack_api.rate_limit("chat.postMessage", times=1, retry_after=0.3)

    ts = notifier.post_root("C1", "hello")

    first, second = slack_api.calls("chat.postMessage")
    assert (first.status, second.status) == (429, 200)
    assert second.at - first.at >= 0.3
    assert slack_api.message("C1", ts).text == "hello"


def test_long_retry_after_is_left_to_the_caller(
    slack_api: SlackApiStandIn, notifier: Notifier, fake_time: FakeTime
) -> None:
    slack_api.rate_limit("chat.update", times=1, retry_after=30)
    ts = notifier.post_root("C1", "a")

    with pytest.raises(SlackRateLimited) as exc:
        notifier.update("C1", ts, "b")

    assert exc.value.delay == 30
    assert fake_time.waits == []
    assert len(slack_api.calls("chat.update")) == 1
    # Nothing was shown, so the same update is not mistaken for "unchanged" later.
    assert notifier.update("C1", ts, "b") is UpdateOutcome.SENT


def test_second_429_after_waiting_raises(
    slack_api: SlackApiStandIn, notifier: Notifier, fake_time: FakeTime
) -> None:
    slack_api.rate_limit("chat.postMessage", times=2, retry_after=2)

    with pytest.raises(SlackRateLimited) as exc:
        notifier.post_root("C1", "x")

    assert fake_time.waits == [2.0] and exc.value.delay == 2.0
    assert len(slack_api.calls("chat.postMessage")) == 2


def test_not_in_channel_joins_and_posts(slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    slack_api.add_channel("C0PUBLIC", "public", member=False)

    ts = notifier.post_root("C0PUBLIC", "hello")

    assert [(c.method, c.response.get("error")) for c in slack_api.calls()] == [
        ("chat.postMessage", "not_in_channel"),
        ("conversations.join", None),
        ("chat.postMessage", None),
    ]
    assert slack_api.message("C0PUBLIC", ts).text == "hello"


def test_private_channel_says_the_bot_must_be_invited(
    slack_api: SlackApiStandIn, notifier: Notifier
) -> None:
    slack_api.add_channel("C0PRIV", "private", member=False)
    slack_api.fail("conversations.join", "method_not_supported_for_channel_type")

    with pytest.raises(BotNotInChannel) as exc:
        notifier.post_root("C0PRIV", "hello")

    assert "/invite @meshbot" in exc.value.message and exc.value.channel == "C0PRIV"
    assert isinstance(exc.value, PermanentError)
    assert [c.method for c in slack_api.calls()] == ["chat.postMessage", "conversations.join"]


def test_invisible_private_channel_also_asks_for_an_invite(
    slack_api: SlackApiStandIn, notifier: Notifier
) -> None:
    slack_api.add_channel("G0SECRET", "secret", private=True, member=False)

    with pytest.raises(BotNotInChannel, match="invite"):
        notifier.post_root("G0SECRET", "hello")


def test_ephemeral_prefers_response_url(slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    url = slack_api.new_response_url(channel="C1", user="U0BOB")

    notifier.ephemeral(
        "not allowed: canary needs operators", response_url=url, channel="C1", user="U0BOB"
    )

    (response,) = slack_api.responses()
    assert response.body == {
        "response_type": "ephemeral",
        "text": "not allowed: canary needs operators",
    }
    assert slack_api.calls() == []


def test_ephemeral_falls_back_when_response_url_expired(
    slack_api: SlackApiStandIn, notifier: Notifier
) -> None:
    expired = slack_api.url + "response/never-issued"

    notifier.ephemeral("approval expired", response_url=expired, channel="C1", user="U0BOB")

    (sent,) = slack_api.ephemerals(user="U0BOB")
    assert sent.text == "approval expired" and sent.channel == "C1"


def test_ephemeral_needs_somewhere_to_go(notifier: Notifier, slack_api: SlackApiStandIn) -> None:
    with pytest.raises(ValueError, match="response_url"):
        notifier.ephemeral("lost")
    with pytest.raises(PermanentError, match="expired_url"):
        notifier.ephemeral("lost", response_url=slack_api.url + "response/nope")


def test_permalink(slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    ts = notifier.post_root("C1", "root")
    assert notifier.permalink("C1", ts).endswith("/archives/C1/p" + ts.replace(".", ""))


def test_slack_errors_become_meshbot_errors(slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    slack_api.fail("chat.postMessage", "internal_error", status=500)
    with pytest.raises(TemporaryError):
        notifier.post_root("C1", "x")

    with pytest.raises(SlackCallFailed) as missing:
        notifier.update("C1", "1.000001", "x")
    assert missing.value.error == "message_not_found"


def test_unreachable_slack_is_temporary(slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    slack_api.stop()
    with pytest.raises(TemporaryError) as unreachable:
        notifier.post_root("C1", "x")
    # In words a thread can show; urllib's "<urlopen error [Errno 111] …>" goes to the log.
    assert unreachable.value.message == ("Slack (chat.postMessage) refused the connection "
                                         "(is it running?)")


def test_from_settings_uses_the_environment(slack_env: SlackEnv) -> None:
    notifier = Notifier.from_settings()
    notifier.post_root("C1", "configured")

    (call,) = slack_env.api.calls("chat.postMessage")
    assert call.headers["authorization"] == f"Bearer {slack_env.bot_token}"


# -- file uploads (the rollback chart) ---------------------------------------------------------

def test_a_chart_is_uploaded_into_the_thread_in_slacks_three_steps(
        slack_api: SlackApiStandIn, notifier: Notifier) -> None:
    from rendering.charts import RollbackChart, rollback_png

    png = rollback_png(RollbackChart(
        "payment-service", 1000.0, 1030.0,
        {"canary": [(1000.0 + t, 20.0) for t in range(31)],
         "stable": [(1000.0 + t, 0.1) for t in range(31)]},
        {"canary": [(1000.0 + t, 45.0) for t in range(31)],
         "stable": [(1000.0 + t, 40.0) for t in range(31)]},
        "errors vs stable", slo_error_rate=0.1, slo_p99_ms=100.0))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    root = notifier.post_root("C0MESHOPS", "Canary payment-service")
    file_id = notifier.upload("C0MESHOPS", root, "payment-service-rollback.png", png,
                              title="payment-service: canary vs stable", comment="the chart")
    assert [c.method for c in slack_api.calls()][-2:] == ["files.getUploadURLExternal",
                                                         "files.completeUploadExternal"]
    shared = slack_api.thread("C0MESHOPS", root)[-1]
    assert shared.text == "the chart" and shared.files == (file_id,)
    stored = slack_api.file(file_id)
    assert stored.content == png and stored.mimetype == "image/png"
    assert stored.title == "payment-service: canary vs stable"


def test_an_upload_slack_refuses_is_meshbots_own_error(slack_api: SlackApiStandIn,
                                                       notifier: Notifier) -> None:
    root = notifier.post_root("C0MESHOPS", "Canary payment-service")
    slack_api.fail("files.completeUploadExternal", "internal_error")
    with pytest.raises(TemporaryError):
        notifier.upload("C0MESHOPS", root, "chart.png", b"\x89PNG\r\n\x1a\n", title="chart")
