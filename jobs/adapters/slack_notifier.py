"""The one place workers write to Slack (threads, status updates, private replies).

Everything Slack can answer is turned into meshbot's own errors here, so jobs never see a
``slack_sdk`` exception:

- HTTP 429: a short ``Retry-After`` (up to ``max_inline_wait``) is waited out and the call is
  tried once more; a longer one, or a second 429, raises ``SlackRateLimited(delay=Retry-After)``
  so the job is rescheduled instead of holding a worker. The window is shared through Redis
  (``RateWindows``): every notifier of every worker asks before calling the method, and a call
  that falls inside it is not sent but waited out (short) or deferred with the time left.
- ``not_in_channel``: the bot joins the (public) channel once and posts again; if it cannot
  join (private, archived, missing), ``BotNotInChannel`` says it must be invited.
- 5xx, Slack's own transient errors and connection failures: ``TemporaryError``.
- anything else: ``PermanentError`` naming the method and Slack's error code.

Slack's write limits are per workspace, and watching a thousand rollouts must stay under them,
so ``update`` skips a status update identical to what the message already shows and holds back
updates that come within ``min_update_interval`` of the last one to that message (the newest
replaces any held one). Held updates go out on the next ``update`` after the interval or on
``flush()``; use the notifier as a context manager so a job's last state is always sent.

Slack refuses a message whose ``text`` passes 40,000 characters, or a section block whose text
passes 3,000: every message is cut here to fit (``_outgoing``), ending with a note that it was
cut, and the whole of it goes to the log.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import http.client
import json
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, Self

import redis
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web import SlackResponse
from slack_sdk.webhook import WebhookClient

from jobs.adapters.attempt_places import AttemptPlaces
from meshbot.errors import MeshbotError, PermanentError, SlackRateLimited, TemporaryError
from meshbot.network_words import in_words
from meshbot.settings import Settings
from meshbot.slack_text import MAX_SECTION, MAX_TEXT, clip

Blocks = Sequence[dict[str, Any]]

# Slack's error codes that mean "try again later" even when the HTTP status is 200.
TRANSIENT_ERRORS = frozenset(
    {"internal_error", "fatal_error", "service_unavailable", "request_timeout", "timeout"}
)
RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})
REMEMBERED_MESSAGES = 10_000  # bounds the update ledger of a long-lived worker
RATE_WINDOW_PREFIX = "meshbot:slack:rate-limited:"  # + method: exists while Slack asked to wait
# A thread root a job posts carries this metadata event, so a later attempt can find it.
ROOT_EVENT = "meshbot_thread_root"
ROOT_PREFIX = "meshbot:slack:root:"  # + key: "sent <time>" while unsure, then "ts <ts>"
ROOT_TTL_S = 24 * 3600
# A reply posted under a key carries this event, so a later attempt can find it in its thread.
REPLY_EVENT = "meshbot_thread_reply"
REPLY_PREFIX = "meshbot:slack:reply:"  # + key: as ROOT_PREFIX, for replies
HISTORY_PAGES = 5  # of 200 messages: a retry comes within minutes, not thousands of messages
CLOCK_SLACK_S = 60.0  # Slack's clock and ours may differ: look back this much further
# Where the rest of a message cut to Slack's limits is: meshbot logs the whole of it.
CUT_WHERE = "the whole message is in meshbot's log (logger meshbot.slack)"

log = logging.getLogger("meshbot.slack")
# Numbers a report reads live (weights, rates, counts, times): left out of its reply key.
_NUMBERS = re.compile(r"\d+(?:[.,]\d+)*")


class SlackCallFailed(PermanentError):
    """Slack refused a call for good; ``error`` is Slack's code (e.g. ``message_not_found``)."""

    def __init__(self, method: str, error: str) -> None:
        super().__init__(f"Slack {method} failed: {error}")
        self.method = method
        self.error = error


def _field(response: SlackResponse, method: str, name: str) -> str:
    """A field of Slack's ok answer that meshbot needs; its absence is Slack's failure."""
    value = response.get(name)
    if not isinstance(value, str) or not value:
        raise SlackCallFailed(method, f"its answer had no {name}")
    return value


class BotNotInChannel(PermanentError):
    """meshbot is not in the channel and cannot join it by itself (private or archived)."""

    def __init__(self, channel: str, reason: str) -> None:
        super().__init__(
            f"meshbot cannot post in <#{channel}> ({reason}): invite it with `/invite @meshbot`"
        )
        self.channel = channel
        self.reason = reason


class SlackUnreachable(TemporaryError):
    """Slack did not answer at all (refused, reset, timed out): for any call, not just this."""


class UpdateOutcome(StrEnum):
    SENT = "sent"
    UNCHANGED = "unchanged"  # identical to what the message shows: no call made
    DEFERRED = "deferred"  # held back by the per-message interval; sent later or on flush()


@dataclass
class _Shown:
    fingerprint: str  # what Slack shows now, as far as this notifier knows
    updated_at: float | None  # clock() of the last chat.update we made, None if only posted
    held: tuple[str, Blocks | None, str] | None = None  # (text, blocks, fingerprint)


def fingerprint(text: str, blocks: Blocks | None) -> str:
    raw = json.dumps([text, list(blocks or [])], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()


def _fit_block(block: dict[str, Any]) -> dict[str, Any]:
    """A section block whose text Slack would refuse (past 3,000 characters), cut to fit."""
    shown = block.get("text")
    if block.get("type") != "section" or not isinstance(shown, dict):
        return block
    words = str(shown.get("text") or "")
    if len(words) <= MAX_SECTION:
        return block
    return {**block, "text": {**shown, "text": clip(words, MAX_SECTION, CUT_WHERE)}}


def _retry_after(headers: Any, default: float = 1.0) -> float:
    for name in ("Retry-After", "retry-after"):
        value = headers.get(name) if headers else None
        if isinstance(value, list):  # some transports give header lists
            value = value[0] if value else None
        if value is not None:
            with contextlib.suppress(ValueError):
                return max(0.0, float(value))
    return default


class RateWindows:
    """Slack's ``Retry-After`` windows, per method, in Redis: seen by every worker process.

    Slack's limits are per workspace, not per connection: a 429 met by one job says the next
    calls of that method from any job will be refused too, and calling inside the window only
    lengthens it. A window is a key that expires when it ends; it is only ever lengthened.
    Redis failing is logged and the call goes on: the window is advice, Slack still enforces it.
    """

    def __init__(self, client: redis.Redis, prefix: str = RATE_WINDOW_PREFIX) -> None:
        self._redis = client
        self._prefix = prefix

    def remaining(self, method: str) -> float:
        """Seconds left in ``method``'s window; 0 outside one."""
        try:
            left_ms = int(self._redis.pttl(self._prefix + method))
        except redis.RedisError as exc:
            log.warning("could not read Slack's rate-limit window for %s: %s", method, exc)
            return 0.0
        return left_ms / 1000 if left_ms > 0 else 0.0

    def open(self, method: str, seconds: float) -> None:
        """Slack asked to wait ``seconds`` before calling ``method`` again."""
        millis = max(1, math.ceil(seconds * 1000))
        key = self._prefix + method
        try:
            with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, "1", px=millis, nx=True)
                pipe.pexpire(key, millis, gt=True)  # a shorter 429 never shortens the window
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("could not share Slack's rate-limit window for %s: %s", method, exc)


class Notifier:
    """Posts roots, replies, status updates and private replies through ``slack_sdk``."""

    def __init__(
        self,
        token: str,
        base_url: str = "https://slack.com/api/",
        *,
        min_update_interval: float = 1.0,
        max_inline_wait: float = 3.0,
        timeout: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        redis_client: redis.Redis | None = None,
    ) -> None:
        # No slack_sdk retry handlers: every retry decision is made here, in meshbot's terms.
        self._client = WebClient(
            token=token, base_url=base_url, timeout=int(timeout), retry_handlers=[]
        )
        self.timeout = timeout
        self.min_update_interval = min_update_interval
        self.max_inline_wait = max_inline_wait
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._shown: OrderedDict[tuple[str, str], _Shown] = OrderedDict()
        self._redis = redis_client
        self._windows = RateWindows(redis_client) if redis_client is not None else None
        self._places = AttemptPlaces()  # the n-th root, the n-th such reply, of an attempt

    label = ""  # the cluster's name when the policy names several (``labelled``)

    def labelled(self, label: str) -> Notifier:
        """This notifier (the same client, rate windows and remembered messages) with every
        message it posts, updates or tells marked with ``label``: which cluster it is about."""
        other = copy.copy(self)
        other.label = label
        return other

    def _labelled(self, text: str, blocks: Blocks | None) -> tuple[str, Blocks | None]:
        if not self.label:
            return text, blocks
        mark = f"`{self.label}`"
        if text.startswith(mark):  # already marked (a held update sent again)
            return text, blocks
        if blocks:
            blocks = [{"type": "context", "elements": [{"type": "mrkdwn", "text": mark}]},
                      *blocks]
        return f"{mark} {text}", blocks

    def _outgoing(self, text: str, blocks: Blocks | None) -> tuple[str, Blocks | None]:
        """What is sent for ``text`` and ``blocks``: marked with the label, and cut to Slack's
        limits (the one place they are kept, for posts, replies, updates and private replies)."""
        text, blocks = self._labelled(text, blocks)
        fitted = clip(text, MAX_TEXT, CUT_WHERE)
        given = list(blocks or ())
        shown = [_fit_block(block) for block in given]
        if fitted != text or any(new is not old for new, old in zip(shown, given, strict=True)):
            log.warning("a message was cut to Slack's limits (%d characters of text); whole: "
                        "%s %s", len(text), text, json.dumps(given))
        return fitted, None if blocks is None else shown

    @classmethod
    def from_settings(cls, settings: Settings | None = None, **options: Any) -> Notifier:
        settings = settings or Settings()
        return cls(settings.slack_bot_token.get_secret_value(), settings.slack_api_url, **options)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.flush()
        else:
            # Still try to show the last state, but never hide the job's own error.
            with contextlib.suppress(MeshbotError):
                self.flush()

    # -- posting ------------------------------------------------------------------------------

    def post_root(self, channel: str, text: str, blocks: Blocks | None = None, *,
                  key: str | None = None) -> str:
        """Post a channel message (a thread root); returns its ``ts``.

        A root is posted once per ``key`` — by default, per RQ job and its n-th root, the same
        in every attempt of the job. Slack may store a message and still answer 500 or time
        out; the job's retry then looks for the root in ``conversations.history`` by its
        metadata instead of starting a second thread, and a later attempt of a job whose root
        did land (it failed afterwards) goes on in the same thread.
        """
        text, blocks = self._outgoing(text, blocks)
        key = key if key is not None else self._job_root_key(channel)
        if key is None or self._redis is None:
            return self._post(channel, text, blocks, None)
        return self._post_once(self._redis, channel, text, blocks, None, key)

    def _job_root_key(self, channel: str) -> str | None:
        place = self._places.place("root")
        if place is None:  # the ticker's own posts: no attempt to be retried
            return None
        job_id, count = place
        return f"{job_id}:{channel}:{count}"

    def _post_once(self, client: redis.Redis, channel: str, text: str, blocks: Blocks | None,
                   thread_ts: str | None, key: str) -> str:
        """Post a root (``thread_ts`` None) or a reply once per ``key``: a mark in Redis says
        "sent <time>" while Slack's answer is awaited and "ts <ts>" once it came. A mark left
        at "sent" (the answer was lost: a timeout, a 5xx after storing it, a crash) makes the
        next attempt look for the message by its metadata before posting it again."""
        event, prefix = (ROOT_EVENT, ROOT_PREFIX) if thread_ts is None \
            else (REPLY_EVENT, REPLY_PREFIX)
        mark = prefix + key
        try:
            raw = client.get(mark)
        except redis.RedisError as exc:
            log.warning("could not read whether message %s was posted: %s", key, exc)
            return self._post(channel, text, blocks, thread_ts)
        state = raw.decode() if isinstance(raw, bytes) else str(raw or "")
        kind, _, value = state.partition(" ")
        if kind == "ts":
            return value
        if kind == "sent":
            found = (self._find_root(channel, key, since=float(value)) if thread_ts is None
                     else self._find_reply(channel, thread_ts, key, since=float(value)))
            if found is not None:
                self._set_mark(client, mark, f"ts {found}")
                return found
        self._set_mark(client, mark, f"sent {time.time()}")
        metadata = {"event_type": event, "event_payload": {"key": key}}
        ts = self._post(channel, text, blocks, thread_ts, metadata=metadata)
        self._set_mark(client, mark, f"ts {ts}")
        return ts

    @staticmethod
    def _set_mark(client: redis.Redis, mark: str, value: str) -> None:
        try:
            client.set(mark, value, ex=ROOT_TTL_S)
        except redis.RedisError as exc:
            log.warning("could not note root post %s: %s", mark, exc)

    def _find_root(self, channel: str, key: str, *, since: float) -> str | None:
        """The ts of the root posted with ``key`` since ``since``, if Slack has it."""

        def read_page(cursor: str | None) -> SlackResponse:
            return self._client.conversations_history(
                channel=channel, oldest=f"{since - CLOCK_SLACK_S:.6f}", limit=200,
                include_all_metadata=True, cursor=cursor)

        return self._find("conversations.history", read_page, ROOT_EVENT, key, channel)

    def _find_reply(self, channel: str, thread_ts: str, key: str, *,
                    since: float) -> str | None:
        """The ts of the reply posted with ``key`` into ``thread_ts`` since ``since``, if Slack
        has it."""

        def read_page(cursor: str | None) -> SlackResponse:
            return self._client.conversations_replies(
                channel=channel, ts=thread_ts, oldest=f"{since - CLOCK_SLACK_S:.6f}",
                limit=200, include_all_metadata=True, cursor=cursor)

        return self._find("conversations.replies", read_page, REPLY_EVENT, key, channel)

    def _find(self, method: str, read_page: Callable[[str | None], SlackResponse], event: str,
              key: str, channel: str) -> str | None:
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            try:
                page = self._call(method, functools.partial(read_page, cursor))
            except SlackCallFailed as exc:
                # No history scope, say: a second message is better than none.
                log.warning("could not look for message %s in %s (%s: %s); posting it", key,
                            channel, method, exc.error)
                return None
            for message in page.get("messages") or []:
                metadata = message.get("metadata") or {}
                payload = metadata.get("event_payload") or {}
                if metadata.get("event_type") == event and payload.get("key") == key:
                    return str(message["ts"])
            cursor = str((page.get("response_metadata") or {}).get("next_cursor") or "")
            if not page.get("has_more") or not cursor:
                return None
        return None

    def reply(self, channel: str, thread_ts: str, text: str, blocks: Blocks | None = None, *,
              key: str | None = None) -> str:
        """Post into the thread of ``thread_ts``; returns the reply's ``ts``.

        A reply is posted once per ``key`` — by default ``reply_key``'s: per RQ job, thread, the
        shape of its words (their numbers left out) and how many times the attempt said that
        shape there, the same in every attempt. When Slack stored a reply but its answer was
        lost, the retry finds it in ``conversations.replies`` by its metadata instead of saying
        it again; a later attempt saying what an earlier one said — with numbers read anew —
        does not say it twice, and one saying something else says it. Outside a job (the
        ticker's own posts) and without Redis, a reply is posted as it comes.
        """
        key = key if key is not None else self.reply_key(channel, thread_ts, text)
        text, blocks = self._outgoing(text, blocks)
        if key is None or self._redis is None:
            return self._post(channel, text, blocks, thread_ts)
        return self._post_once(self._redis, channel, text, blocks, thread_ts, key)

    def reply_key(self, channel: str, thread_ts: str, text: str) -> str | None:
        """The key the running RQ job's next reply of ``text`` into ``thread_ts`` is posted
        under; None outside a job. It holds the job's id, the thread, the cluster's label, the
        shape of the words (``text`` with its numbers left out) and its place: the n-th time
        this attempt says that shape there. So a retry that renders a report with live numbers,
        or says it from another path, is the same reply; a retry saying something else at that
        point is another reply and is posted (a second message is better than a lost one).
        Each call takes a place: pass the key to ``reply``, or keep it with a report owed."""
        shape = hashlib.sha256(_NUMBERS.sub("#", text).encode()).hexdigest()[:12]
        where = f"{channel}:{thread_ts}" + (f":{self.label}" if self.label else "")
        said = f"{where}:{shape}"
        place = self._places.place(said)
        if place is None:
            return None
        job_id, count = place
        return f"{job_id}:{said}:{count}"

    def _post(self, channel: str, text: str, blocks: Blocks | None, thread_ts: str | None,
              metadata: dict[str, Any] | None = None) -> str:
        response = self._call(
            "chat.postMessage",
            lambda: self._client.chat_postMessage(
                channel=channel, text=text, blocks=blocks, thread_ts=thread_ts,
                metadata=metadata,
            ),
            join=channel,
        )
        ts = _field(response, "chat.postMessage", "ts")
        self._remember(
            str(response.get("channel") or channel), ts, _Shown(fingerprint(text, blocks), None)
        )
        return ts

    def update(
        self, channel: str, ts: str, text: str, blocks: Blocks | None = None
    ) -> UpdateOutcome:
        """Change a message meshbot posted, only when its content changes (see module doc)."""
        text, blocks = self._outgoing(text, blocks)
        new = fingerprint(text, blocks)
        now = self._clock()
        with self._lock:
            shown = self._shown.get((channel, ts))
            if shown is not None and shown.fingerprint == new:
                shown.held = None  # the newest state is already on screen
                return UpdateOutcome.UNCHANGED
            if (
                shown is not None
                and shown.updated_at is not None
                and now - shown.updated_at < self.min_update_interval
            ):
                shown.held = (text, blocks, new)
                return UpdateOutcome.DEFERRED
        try:
            self._send_update(channel, ts, text, blocks, new)
        except TemporaryError:
            # Held as if within the interval: a later ``flush`` (the ticker's, each tick)
            # sends the newest state once Slack takes it, unless another update came first.
            with self._lock:
                shown = self._shown.get((channel, ts))
                if shown is not None:
                    shown.held = (text, blocks, new)
            if shown is None:
                self._remember(channel, ts, _Shown("", None, (text, blocks, new)))
            raise
        return UpdateOutcome.SENT

    def flush(self, *, wait: bool = True) -> int:
        """Send held updates (waiting out their interval if ``wait``); returns how many."""
        sent = 0
        with self._lock:
            held = [(key, s) for key, s in self._shown.items() if s.held is not None]
        for (channel, ts), shown in sorted(held, key=lambda item: item[1].updated_at or 0.0):
            if shown.held is None:
                continue
            due = (shown.updated_at or 0.0) + self.min_update_interval - self._clock()
            if due > 0 and not wait:
                continue
            if due > 0:
                self._sleep(due)  # pacing Slack writes, at most min_update_interval
            with self._lock:  # another thread (the ticker's, a job's) may have sent it meanwhile
                pending = shown.held
            if pending is None:
                continue
            text, blocks, new = pending
            self._send_update(channel, ts, text, blocks, new)
            sent += 1
        return sent

    def _send_update(
        self, channel: str, ts: str, text: str, blocks: Blocks | None, new: str
    ) -> None:
        self._call(
            "chat.update",
            lambda: self._client.chat_update(channel=channel, ts=ts, text=text, blocks=blocks),
        )
        self._remember(channel, ts, _Shown(new, self._clock()))

    def _remember(self, channel: str, ts: str, shown: _Shown) -> None:
        with self._lock:
            self._shown[(channel, ts)] = shown
            self._shown.move_to_end((channel, ts))
            while len(self._shown) > REMEMBERED_MESSAGES:
                self._shown.popitem(last=False)

    def upload(self, channel: str, thread_ts: str | None, filename: str, content: bytes, *,
               title: str, comment: str | None = None, alt_text: str | None = None) -> str:
        """Upload a file into the thread of ``thread_ts`` (``files_upload_v2``: an upload URL,
        the bytes sent to it, then the completion that shares it); returns the file's id."""
        response = self._call(
            "files.upload",
            lambda: self._client.files_upload_v2(
                channel=channel, thread_ts=thread_ts, filename=filename, content=content,
                title=title, initial_comment=comment, alt_txt=alt_text),
            join=channel,
        )
        shared = response.get("file") or {}
        return str(shared.get("id", "")) if isinstance(shared, dict) else ""

    # -- private replies and links ---------------------------------------------------------------

    def ephemeral(
        self,
        text: str,
        *,
        response_url: str | None = None,
        channel: str | None = None,
        user: str | None = None,
        blocks: Blocks | None = None,
    ) -> None:
        """Tell only the caller: through ``response_url`` if given, else ``chat.postEphemeral``.

        A ``response_url`` expires (30 minutes, five uses); when it fails and ``channel`` and
        ``user`` are known, the reply falls back to ``chat.postEphemeral``.
        """
        text, blocks = self._outgoing(text, blocks)
        if response_url:
            try:
                self._respond(response_url, text, blocks)
                return
            except MeshbotError:
                if not (channel and user):
                    raise
        if not (channel and user):
            raise ValueError("ephemeral() needs a response_url, or a channel and a user")
        self._call(
            "chat.postEphemeral",
            lambda: self._client.chat_postEphemeral(
                channel=channel, user=user, text=text, blocks=blocks
            ),
            join=channel,
        )

    def _respond(self, response_url: str, text: str, blocks: Blocks | None) -> None:
        body: dict[str, Any] = {"response_type": "ephemeral", "text": text}
        if blocks:
            body["blocks"] = list(blocks)
        hook = WebhookClient(response_url, timeout=int(self.timeout), retry_handlers=[])
        try:
            answer = hook.send_dict(body)
        except (OSError, http.client.HTTPException) as exc:
            log.warning("Slack's response_url failed: %s: %s", type(exc).__name__, exc)
            raise TemporaryError(f"Slack's response_url {in_words(exc)}") from exc
        if answer.status_code == 429:
            delay = _retry_after(answer.headers)
            raise SlackRateLimited("Slack rate-limited a response_url", delay=delay)
        if answer.status_code >= 500:
            # Slack's body (HTML, a stack) is for the log; people read that Slack failed.
            log.warning("Slack's response_url answered %s: %s", answer.status_code, answer.body)
            raise TemporaryError(f"Slack's response_url failed (HTTP {answer.status_code})")
        if answer.status_code != 200:
            raise PermanentError(
                f"response_url refused the reply: {answer.body or answer.status_code}"
            )

    def permalink(self, channel: str, ts: str) -> str:
        """A link to the message, for the audit log and for cross-links between threads."""
        response = self._call(
            "chat.getPermalink",
            lambda: self._client.chat_getPermalink(channel=channel, message_ts=ts),
        )
        return _field(response, "chat.getPermalink", "permalink")

    def link(self, channel: str, ts: str) -> str | None:
        """``permalink``, or None when Slack gives none now: an audit entry, an approval
        request or a cross-link is still worth having without it."""
        try:
            return self.permalink(channel, ts)
        except MeshbotError as exc:
            log.info("no permalink for %s in %s: %s", ts, channel, exc.message)
            return None

    # -- the one error boundary ------------------------------------------------------------------

    def _call(
        self, method: str, send: Callable[[], SlackResponse], *, join: str | None = None
    ) -> SlackResponse:
        waited = joined = False
        check_window = True
        while True:
            left = self._windows.remaining(method) if check_window and self._windows else 0.0
            if left > 0:
                # Another job (maybe in another worker) was told to wait: sending now would be
                # refused and would only lengthen the window for everyone.
                if waited or left > self.max_inline_wait:
                    raise SlackRateLimited(
                        f"Slack rate-limited {method}; retry in {left:g}s", delay=left)
                waited = True
                self._sleep(left)  # short enough to wait here, as for a 429 of our own
            check_window = True
            try:
                return send()
            except SlackApiError as exc:
                status = exc.response.status_code
                error = str(exc.response.get("error") or f"http_{status}")
                if status == 429 or error in RATE_LIMIT_ERRORS:
                    delay = _retry_after(exc.response.headers)
                    if self._windows is not None:
                        self._windows.open(method, delay)
                    if not waited and delay <= self.max_inline_wait:
                        waited = True
                        self._sleep(delay)  # Slack asked for it; short enough to wait here
                        check_window = False  # that wait was this window's, to its end
                        continue
                    raise SlackRateLimited(
                        f"Slack rate-limited {method}; retry in {delay:g}s", delay=delay
                    ) from exc
                if error == "not_in_channel" and join is not None and not joined:
                    self._join(join)
                    joined = True
                    continue
                if join is not None and error in ("not_in_channel", "channel_not_found"):
                    raise BotNotInChannel(join, error) from exc
                if status >= 500 or error in TRANSIENT_ERRORS:
                    raise TemporaryError(f"Slack {method} failed: {error}") from exc
                raise SlackCallFailed(method, error) from exc
            except SlackClientError as exc:
                log.warning("Slack %s could not be sent: %s: %s", method, type(exc).__name__, exc)
                raise PermanentError(f"Slack {method} could not be sent") from exc
            except (OSError, http.client.HTTPException) as exc:
                # URLError, timeouts, refused and reset connections are all OSErrors.
                log.warning("Slack %s failed: %s: %s", method, type(exc).__name__, exc)
                raise SlackUnreachable(f"Slack ({method}) {in_words(exc)}") from exc

    def _join(self, channel: str) -> None:
        try:
            self._call(
                "conversations.join", lambda: self._client.conversations_join(channel=channel)
            )
        except SlackCallFailed as exc:
            # Private channels need an invitation; archived or unknown ones cannot be joined.
            raise BotNotInChannel(channel, exc.error) from exc
