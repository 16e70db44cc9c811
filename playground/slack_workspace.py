"""The state of the stand-in Slack workspace, and the thread-safe way tests read it.

The HTTP server (``playground.slack_api``) mutates this from its request threads; tests read it
from the test thread. One re-entrant condition guards everything: every change notifies it, so
``wait_for`` wakes exactly when something happened instead of polling or sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TypeVar

from playground.slack_model import (
    Call,
    Channel,
    Ephemeral,
    File,
    JSONDict,
    Message,
    ResponsePost,
    SlackMethodError,
    User,
)
from playground.slack_render import render_thread

T = TypeVar("T")


@dataclass(frozen=True)
class Fault:
    """How the next call(s) of a method fail instead of being served."""

    status: int
    error: str
    retry_after: float | None = None
    # Slack did the work, then answered with the error (a 500 after the message was stored,
    # a timeout on the way back): the caller cannot tell whether it landed.
    after_serving: bool = False


class SlackWorkspace:
    """Channels, users, user groups, messages and the record of every call."""

    def __init__(
        self,
        *,
        team_id: str = "T0MESH",
        team_domain: str = "meshbot-playground",
        bot_user_id: str = "U0MESHBOT",
        bot_id: str = "B0MESHBOT",
        bot_name: str = "meshbot",
        auto_create: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.team_id = team_id
        self.team_domain = team_domain
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.bot_name = bot_name
        # Unknown channel/user ids are created on first use (public, bot a member) so most
        # tests need no set-up; turn off to see channel_not_found / user_not_found.
        self.auto_create = auto_create
        self._clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._last_ts_us = 0
        self._channels: dict[str, Channel] = {}
        self._users: dict[str, User] = {bot_user_id: User(bot_user_id, bot_name, is_bot=True)}
        self._usergroups: dict[str, tuple[str, ...]] = {}
        self._messages: dict[str, list[Message]] = {}
        self._ephemerals: list[Ephemeral] = []
        self._responses: list[ResponsePost] = []
        self._calls: list[Call] = []
        self._faults: dict[str, list[Fault]] = {}
        self._files: dict[str, File] = {}

    # -- locking ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock for a check-then-change, and wake every waiter afterwards."""
        with self._cond:
            try:
                yield
            finally:
                self._cond.notify_all()

    # -- set-up by tests -------------------------------------------------------------------

    def add_channel(
        self,
        channel_id: str,
        name: str | None = None,
        *,
        private: bool = False,
        member: bool = True,
        archived: bool = False,
    ) -> Channel:
        channel = Channel(channel_id, name or channel_id.lower(), private, member, archived)
        with self.transaction():
            self._channels[channel_id] = channel
        return channel

    def add_user(
        self, user_id: str, name: str, *, real_name: str = "", is_bot: bool = False
    ) -> User:
        user = User(user_id, name, real_name, is_bot)
        with self.transaction():
            self._users[user_id] = user
        return user

    def set_usergroup(self, group_id: str, members: list[str] | tuple[str, ...]) -> None:
        with self.transaction():
            self._usergroups[group_id] = tuple(members)

    def rate_limit(self, method: str, times: int = 1, retry_after: float = 1.0) -> None:
        """Answer the next ``times`` calls of ``method`` with HTTP 429 and ``Retry-After``."""
        self._add_fault(method, times, Fault(429, "ratelimited", retry_after))

    def fail(self, method: str, error: str, times: int = 1, status: int = 200) -> None:
        """Answer the next ``times`` calls of ``method`` with ``error`` (e.g. 500 fatal_error)."""
        self._add_fault(method, times, Fault(status, error))

    def fail_after_serving(self, method: str, error: str = "fatal_error", times: int = 1,
                           status: int = 500) -> None:
        """Serve the next ``times`` calls of ``method``, then answer them with ``error``."""
        self._add_fault(method, times, Fault(status, error, after_serving=True))

    def _add_fault(self, method: str, times: int, fault: Fault) -> None:
        with self.transaction():
            self._faults.setdefault(method, []).extend([fault] * times)

    def take_fault(self, method: str) -> Fault | None:
        with self.transaction():
            queue = self._faults.get(method)
            return queue.pop(0) if queue else None

    # -- lookups used by the method handlers (they raise Slack's own errors) ----------------

    def channel(self, channel_id: str) -> Channel:
        with self._cond:
            if channel_id not in self._channels:
                if not (self.auto_create and channel_id[:1] in ("C", "G")):
                    raise SlackMethodError("channel_not_found")
                self._channels[channel_id] = Channel(channel_id, channel_id.lower())
            return self._channels[channel_id]

    def user(self, user_id: str) -> User:
        with self._cond:
            if user_id not in self._users:
                if not (self.auto_create and user_id[:1] in ("U", "W")):
                    raise SlackMethodError("user_not_found")
                self._users[user_id] = User(user_id, user_id.lower())
            return self._users[user_id]

    def usergroup_members(self, group_id: str) -> tuple[str, ...]:
        with self._cond:
            if group_id not in self._usergroups:
                raise SlackMethodError("no_such_subteam")
            return self._usergroups[group_id]

    # -- changes (handlers call these inside ``transaction``; tests may too) ----------------

    def next_ts(self) -> str:
        with self._cond:
            # Slack's ts is unique per channel and increasing; microseconds make it sortable.
            self._last_ts_us = max(int(self._clock() * 1_000_000), self._last_ts_us + 1)
            seconds, micros = divmod(self._last_ts_us, 1_000_000)
            return f"{seconds}.{micros:06d}"

    def join(self, channel_id: str) -> Channel:
        with self.transaction():
            joined = replace(self.channel(channel_id), is_member=True)
            self._channels[channel_id] = joined
            return joined

    def post(
        self,
        channel: str,
        text: str,
        *,
        user: str | None = None,
        blocks: tuple[JSONDict, ...] = (),
        thread_ts: str | None = None,
        metadata: JSONDict | None = None,
    ) -> Message:
        """Add a message (from the bot unless ``user`` is given, e.g. a person in the demo)."""
        with self.transaction():
            self.channel(channel)
            if thread_ts is not None:
                # A reply to a reply lands in the root's thread, as in Slack.
                thread_ts = self.message(channel, thread_ts).thread_ts or thread_ts
            message = Message(
                channel, self.next_ts(), text, user or self.bot_user_id, blocks, thread_ts,
                metadata=metadata,
            )
            self._messages.setdefault(channel, []).append(message)
            return message

    def upload_url(self, file_id: str) -> str:
        """Where a file's bytes go (the HTTP stand-in serves it on its own port)."""
        return f"https://files.slack.invalid/upload/v1/{file_id}"

    def new_file(self, filename: str, length: int, alt_txt: str = "") -> File:
        with self.transaction():
            file = File(f"F{len(self._files) + 1:08d}", filename, length, alt_txt)
            self._files[file.id] = file
            return file

    def receive_file(self, file_id: str, content: bytes) -> bool:
        """The bytes POSTed to a file's upload URL; False for an unknown or used URL."""
        with self.transaction():
            file = self._files.get(file_id)
            if file is None or file.content is not None:
                return False
            self._files[file_id] = replace(file, content=content)
            return True

    def share_files(self, channel: str, file_ids: list[tuple[str, str]], comment: str,
                    thread_ts: str | None) -> Message:
        """Complete uploads: one message (in the thread, if given) carrying the files."""
        with self.transaction():
            message = self.post(channel, comment, thread_ts=thread_ts)
            message = replace(message, files=tuple(file_id for file_id, _ in file_ids))
            self._replace(message)
            for file_id, title in file_ids:
                file = self._files[file_id]
                self._files[file_id] = replace(file, title=title or file.title, shared_in=(
                    *file.shared_in, (channel, message.ts)))
            return message

    def file(self, file_id: str) -> File:
        with self.transaction():
            if file_id not in self._files:
                raise SlackMethodError("file_not_found")
            return self._files[file_id]

    def files(self) -> list[File]:
        with self.transaction():
            return list(self._files.values())

    def edit(self, channel: str, ts: str, text: str, blocks: tuple[JSONDict, ...]) -> Message:
        with self.transaction():
            old = self.message(channel, ts)
            new = replace(old, text=text, blocks=blocks, history=(*old.history, old.text))
            self._replace(new)
            return new

    def add_reaction(self, channel: str, ts: str, name: str, user: str) -> Message:
        with self.transaction():
            old = self.message(channel, ts)
            users = old.reactions.get(name, ())
            reactions = {**old.reactions, name: users if user in users else (*users, user)}
            new = replace(old, reactions=reactions)
            self._replace(new)
            return new

    def remove_reaction(self, channel: str, ts: str, name: str, user: str) -> Message:
        with self.transaction():
            old = self.message(channel, ts)
            left = tuple(u for u in old.reactions.get(name, ()) if u != user)
            reactions = {k: v for k, v in old.reactions.items() if k != name}
            if left:
                reactions[name] = left
            new = replace(old, reactions=reactions)
            self._replace(new)
            return new

    def _replace(self, message: Message) -> None:
        box = self._messages[message.channel]
        box[[m.ts for m in box].index(message.ts)] = message

    def add_ephemeral(self, ephemeral: Ephemeral) -> None:
        with self.transaction():
            self._ephemerals.append(ephemeral)

    def add_response(self, response: ResponsePost) -> None:
        with self.transaction():
            self._responses.append(response)

    def record(self, call: Call) -> None:
        with self.transaction():
            self._calls.append(call)

    # -- queries (snapshots; safe while the server runs) ------------------------------------

    def calls(self, method: str | None = None) -> list[Call]:
        with self._cond:
            return [c for c in self._calls if method is None or c.method == method]

    def channels(self) -> list[Channel]:
        with self._cond:
            return list(self._channels.values())

    def messages(self, channel: str) -> list[Message]:
        """Every message in ``channel`` (roots and replies), oldest first."""
        with self._cond:
            return list(self._messages.get(channel, []))

    def roots(self, channel: str) -> list[Message]:
        return [m for m in self.messages(channel) if not m.is_reply]

    def message(self, channel: str, ts: str) -> Message:
        with self._cond:
            for message in self._messages.get(channel, []):
                if message.ts == ts:
                    return message
        raise SlackMethodError("message_not_found")

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The root ``ts`` followed by its replies in order (a reply's ts finds its thread)."""
        root_ts = self.message(channel, ts).thread_ts or ts
        return [m for m in self.messages(channel) if m.ts == root_ts or m.thread_ts == root_ts]

    def ephemerals(self, *, channel: str | None = None, user: str | None = None) -> list[Ephemeral]:
        with self._cond:
            return [
                e
                for e in self._ephemerals
                if (channel is None or e.channel == channel) and (user is None or e.user == user)
            ]

    def responses(self, token: str | None = None) -> list[ResponsePost]:
        with self._cond:
            return [r for r in self._responses if token is None or r.token == token]

    def users(self) -> Mapping[str, User]:
        with self._cond:
            return dict(self._users)

    # -- waiting -----------------------------------------------------------------------------

    def wait_for(
        self,
        predicate: Callable[[], T | None],
        timeout: float = 5.0,
        *,
        what: str = "condition",
    ) -> T:
        """Return ``predicate()``'s first truthy value; re-checked after every change.

        Raises ``TimeoutError`` naming ``what`` (and the calls seen) when the deadline passes.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = ", ".join(c.method for c in self._calls) or "no calls"
                    raise TimeoutError(f"timed out after {timeout}s waiting for {what} ({seen})")
                self._cond.wait(remaining)

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        def enough() -> list[Call]:
            found = self.calls(method)
            return found if len(found) >= count else []

        return self.wait_for(enough, timeout, what=f"{count} x {method}")

    def wait_for_message(
        self,
        channel: str,
        predicate: Callable[[Message], bool] = lambda m: True,
        timeout: float = 5.0,
    ) -> Message:
        def found() -> Message | None:
            return next((m for m in self.messages(channel) if predicate(m)), None)

        return self.wait_for(found, timeout, what=f"a message in {channel}")

    def wait_for_responses(self, count: int = 1, timeout: float = 5.0) -> list[ResponsePost]:
        def enough() -> list[ResponsePost]:
            found = self.responses()
            return found if len(found) >= count else []

        return self.wait_for(enough, timeout, what=f"{count} response_url post(s)")

    # -- reading as a person would ------------------------------------------------------------

    def render_thread(self, channel: str, ts: str) -> str:
        with self._cond:
            return render_thread(
                self.thread(channel, ts),
                users={u.id: u.name for u in self._users.values()},
                channels={c.id: c.name for c in self._channels.values()},
            )

    def render_channel(self, channel: str) -> str:
        """Every thread in ``channel``, oldest first, separated by blank lines."""
        with self._cond:
            return "\n\n".join(self.render_thread(channel, m.ts) for m in self.roots(channel))
