"""The Web API methods the stand-in serves, with Slack's answers and Slack's error names.

Each handler takes the workspace and the request's parameters (query string and body merged)
and returns the JSON body of a successful answer, or raises ``SlackMethodError``. The HTTP
layer runs each handler inside ``workspace.transaction()``, so check-then-change is atomic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from playground.slack_model import (
    Channel,
    Ephemeral,
    JSONDict,
    Message,
    SlackMethodError,
    freeze_blocks,
)
from playground.slack_workspace import SlackWorkspace

Params = Mapping[str, Any]
Handler = Callable[[SlackWorkspace, Params], JSONDict]


def _arg(params: Params, key: str) -> str:
    value = params.get(key)
    return "" if value is None else str(value)


def _postable(ws: SlackWorkspace, channel_id: str) -> Channel:
    """The channel, if the bot may post in it; otherwise the error Slack gives."""
    if not channel_id:
        raise SlackMethodError("channel_not_found")
    channel = ws.channel(channel_id)
    if channel.is_archived:
        raise SlackMethodError("is_archived")
    if not channel.is_member:
        # A bot cannot even see a private channel it was not invited to.
        raise SlackMethodError("channel_not_found" if channel.is_private else "not_in_channel")
    return channel


def _text_and_blocks(params: Params) -> tuple[str, tuple[JSONDict, ...]]:
    text, blocks = _arg(params, "text"), freeze_blocks(params.get("blocks"))
    if not text and not blocks:
        raise SlackMethodError("no_text")
    return text, blocks


def post_message(ws: SlackWorkspace, params: Params) -> JSONDict:
    channel = _postable(ws, _arg(params, "channel"))
    text, blocks = _text_and_blocks(params)
    thread_ts = _arg(params, "thread_ts") or None
    if thread_ts is not None:
        try:
            ws.message(channel.id, thread_ts)
        except SlackMethodError:
            # Slack itself accepts an unknown thread_ts and hides the reply; the stand-in is
            # stricter so a test catches a reply that nobody would ever see.
            raise SlackMethodError("thread_not_found") from None
    message = ws.post(channel.id, text, blocks=blocks, thread_ts=thread_ts,
                      metadata=_metadata(params.get("metadata")))
    return {"channel": channel.id, "ts": message.ts,
            "message": message.as_slack(ws.bot_id, with_metadata=True)}


def _metadata(raw: Any) -> JSONDict | None:
    """chat.postMessage's ``metadata``: an object (or its JSON) with a string ``event_type``
    and an object ``event_payload``; Slack refuses any other shape."""
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise SlackMethodError("invalid_metadata_format") from None
    if (not isinstance(raw, dict) or not isinstance(raw.get("event_type"), str)
            or not isinstance(raw.get("event_payload"), dict)):
        raise SlackMethodError("invalid_metadata_format")
    return {"event_type": raw["event_type"], "event_payload": raw["event_payload"]}


def _flag(params: Params, key: str) -> bool:
    return str(params.get(key, "")).lower() in ("1", "true")


def history(ws: SlackWorkspace, params: Params) -> JSONDict:
    """conversations.history: the channel's top-level messages, newest first, paginated by an
    opaque cursor; metadata only with ``include_all_metadata``."""
    channel = _member_channel(ws, params)
    window = _Window.of(params, default_limit=100, max_limit=999)
    timeline = [m for m in reversed(ws.messages(channel.id))
                if not m.is_reply and window.holds(m.ts)]
    return {**window.page(ws, params, timeline), "pin_count": 0}


def replies(ws: SlackWorkspace, params: Params) -> JSONDict:
    """conversations.replies: the thread of ``ts`` (its parent first, then its replies, oldest
    first; a reply's ts finds its thread), paginated by an opaque cursor; ``oldest``/``latest``
    bound the messages returned; metadata only with ``include_all_metadata``."""
    channel = _member_channel(ws, params)
    window = _Window.of(params, default_limit=1000, max_limit=1000)
    ts = _arg(params, "ts")
    if not ts:
        raise SlackMethodError("invalid_arguments")
    try:
        thread = ws.thread(channel.id, ts)
    except SlackMethodError:
        raise SlackMethodError("thread_not_found") from None
    return window.page(ws, params, [m for m in thread if window.holds(m.ts)])


def _member_channel(ws: SlackWorkspace, params: Params) -> Channel:
    channel = ws.channel(_arg(params, "channel"))
    if not channel.is_member:
        raise SlackMethodError("channel_not_found" if channel.is_private else "not_in_channel")
    return channel


@dataclass(frozen=True)
class _Window:
    """A history call's bounds and page, as Slack reads its arguments."""

    limit: int
    oldest: float
    latest: float
    start: int
    inclusive: bool

    @classmethod
    def of(cls, params: Params, *, default_limit: int, max_limit: int) -> _Window:
        try:
            return cls(limit=min(max(int(_arg(params, "limit") or default_limit), 1), max_limit),
                       oldest=float(_arg(params, "oldest") or "0"),
                       latest=float(_arg(params, "latest") or "inf"),
                       start=int(_arg(params, "cursor") or "0"),
                       inclusive=_flag(params, "inclusive"))
        except ValueError:
            raise SlackMethodError("invalid_arguments") from None

    def holds(self, ts: str) -> bool:
        at = float(ts)
        if self.inclusive:
            return self.oldest <= at <= self.latest
        return self.oldest < at < self.latest

    def page(self, ws: SlackWorkspace, params: Params, timeline: list[Message]) -> JSONDict:
        page = timeline[self.start:self.start + self.limit]
        more = self.start + self.limit < len(timeline)
        with_metadata = _flag(params, "include_all_metadata")
        return {
            "messages": [m.as_slack(ws.bot_id, with_metadata=with_metadata) for m in page],
            "has_more": more,
            "response_metadata": {"next_cursor": str(self.start + self.limit) if more else ""},
        }


def update(ws: SlackWorkspace, params: Params) -> JSONDict:
    channel = ws.channel(_arg(params, "channel"))
    old = ws.message(channel.id, _arg(params, "ts"))
    if old.user != ws.bot_user_id:
        raise SlackMethodError("cant_update_message")
    text, blocks = _text_and_blocks(params)
    new = ws.edit(channel.id, old.ts, text, blocks)
    return {
        "channel": channel.id,
        "ts": new.ts,
        "text": new.text,
        "message": new.as_slack(ws.bot_id),
    }


def post_ephemeral(ws: SlackWorkspace, params: Params) -> JSONDict:
    channel = _postable(ws, _arg(params, "channel"))
    user = ws.user(_arg(params, "user"))
    text, blocks = _text_and_blocks(params)
    ts = ws.next_ts()
    thread_ts = _arg(params, "thread_ts") or None
    ws.add_ephemeral(Ephemeral(channel.id, user.id, ts, text, blocks, thread_ts))
    return {"message_ts": ts}


def get_permalink(ws: SlackWorkspace, params: Params) -> JSONDict:
    channel = ws.channel(_arg(params, "channel"))
    message = ws.message(channel.id, _arg(params, "message_ts"))
    digits = message.ts.replace(".", "")
    link = f"https://{ws.team_domain}.slack.com/archives/{channel.id}/p{digits}"
    if message.is_reply:
        link += f"?thread_ts={message.thread_ts}&cid={channel.id}"
    return {"channel": channel.id, "permalink": link}


def join(ws: SlackWorkspace, params: Params) -> JSONDict:
    channel = ws.channel(_arg(params, "channel"))
    if channel.is_archived:
        raise SlackMethodError("is_archived")
    if channel.is_member:
        return {
            "channel": channel.as_slack(),
            "warning": "already_in_channel",
            "response_metadata": {"warnings": ["already_in_channel"]},
        }
    if channel.is_private:
        raise SlackMethodError("method_not_supported_for_channel_type")
    return {"channel": ws.join(channel.id).as_slack()}


def conversation_info(ws: SlackWorkspace, params: Params) -> JSONDict:
    channel = ws.channel(_arg(params, "channel"))
    if channel.is_private and not channel.is_member:
        raise SlackMethodError("channel_not_found")
    return {"channel": channel.as_slack()}


def usergroup_users(ws: SlackWorkspace, params: Params) -> JSONDict:
    return {"users": list(ws.usergroup_members(_arg(params, "usergroup")))}


def user_info(ws: SlackWorkspace, params: Params) -> JSONDict:
    return {"user": ws.user(_arg(params, "user")).as_slack(ws.team_id)}


def reactions_get(ws: SlackWorkspace, params: Params) -> JSONDict:
    channel = ws.channel(_arg(params, "channel"))
    message = ws.message(channel.id, _arg(params, "timestamp"))
    return {"type": "message", "channel": channel.id, "message": message.as_slack(ws.bot_id)}


def get_upload_url(ws: SlackWorkspace, params: Params) -> JSONDict:
    filename = _arg(params, "filename")
    try:
        length = int(_arg(params, "length"))
    except ValueError:
        raise SlackMethodError("invalid_arguments") from None
    if not filename or length <= 0:
        raise SlackMethodError("invalid_arguments")
    file = ws.new_file(filename, length, _arg(params, "alt_txt"))
    return {"upload_url": ws.upload_url(file.id), "file_id": file.id}


def complete_upload(ws: SlackWorkspace, params: Params) -> JSONDict:
    try:
        listed = json.loads(_arg(params, "files") or "[]")
    except ValueError:
        raise SlackMethodError("invalid_arguments") from None
    if not isinstance(listed, list) or not listed:
        raise SlackMethodError("invalid_arguments")
    wanted: list[tuple[str, str]] = []
    for item in listed:
        file = ws.file(str(item.get("id", "")) if isinstance(item, dict) else "")
        if file.content is None:
            raise SlackMethodError("file_not_found")  # Slack: the bytes never arrived
        if len(file.content) != file.length:
            raise SlackMethodError("invalid_file_length")  # the stand-in's name for it
        wanted.append((file.id, str(item.get("title") or "")))
    channel_id = _arg(params, "channel_id")
    shared: list[JSONDict] = []
    if channel_id:
        channel = _postable(ws, channel_id)
        thread_ts = _arg(params, "thread_ts") or None
        if thread_ts is not None:
            try:
                ws.message(channel.id, thread_ts)
            except SlackMethodError:
                raise SlackMethodError("thread_not_found") from None
        ws.share_files(channel.id, wanted, _arg(params, "initial_comment"), thread_ts)
    shared = [ws.file(file_id).as_slack() for file_id, _ in wanted]
    return {"files": shared}


def auth_test(ws: SlackWorkspace, params: Params) -> JSONDict:
    return {
        "url": f"https://{ws.team_domain}.slack.com/",
        "team": ws.team_domain,
        "user": ws.bot_name,
        "team_id": ws.team_id,
        "user_id": ws.bot_user_id,
        "bot_id": ws.bot_id,
        "is_enterprise_install": False,
    }


METHODS: Mapping[str, Handler] = {
    "chat.postMessage": post_message,
    "chat.update": update,
    "chat.postEphemeral": post_ephemeral,
    "chat.getPermalink": get_permalink,
    "conversations.join": join,
    "conversations.info": conversation_info,
    "conversations.history": history,
    "conversations.replies": replies,
    "usergroups.users.list": usergroup_users,
    "users.info": user_info,
    "reactions.get": reactions_get,
    "auth.test": auth_test,
    "files.getUploadURLExternal": get_upload_url,
    "files.completeUploadExternal": complete_upload,
}
