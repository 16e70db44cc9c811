"""Values the Slack stand-in keeps and hands to tests: frozen snapshots, never live state.

Tests read these while the server thread keeps mutating the workspace, so every query returns
immutable copies; a message that is edited is replaced by a new ``Message``, never changed.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

JSONDict = dict[str, Any]


class SlackMethodError(Exception):
    """A Web API method answers ``{"ok": false, "error": <error>}`` (HTTP 200, as Slack does)."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass(frozen=True)
class Call:
    """One request the stand-in received, with what it answered."""

    method: str
    params: Mapping[str, Any]
    headers: Mapping[str, str]  # keys lower-cased, so tests need not guess the spelling
    at: float  # wall-clock time the request arrived
    status: int
    response: Mapping[str, Any]

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))


@dataclass(frozen=True)
class Channel:
    id: str
    name: str
    is_private: bool = False
    is_member: bool = True
    is_archived: bool = False

    def as_slack(self) -> JSONDict:
        return {
            "id": self.id,
            "name": self.name,
            "is_channel": not self.is_private,
            "is_group": self.is_private,
            "is_private": self.is_private,
            "is_member": self.is_member,
            "is_archived": self.is_archived,
        }


@dataclass(frozen=True)
class User:
    id: str
    name: str
    real_name: str = ""
    is_bot: bool = False

    def as_slack(self, team_id: str) -> JSONDict:
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "real_name": self.real_name or self.name,
            "is_bot": self.is_bot,
            "deleted": False,
            "profile": {"real_name": self.real_name or self.name, "display_name": self.name},
        }


@dataclass(frozen=True)
class Message:
    """A message as it stands now; ``history`` keeps the texts it had before each edit."""

    channel: str
    ts: str
    text: str
    user: str
    blocks: tuple[JSONDict, ...] = ()
    thread_ts: str | None = None  # set on replies only (Slack also sets it on a root with replies)
    history: tuple[str, ...] = ()
    reactions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    files: tuple[str, ...] = ()  # ids of the files shared with this message
    # chat.postMessage's ``metadata`` ({event_type, event_payload}); conversations.history
    # returns it only when asked (include_all_metadata), as Slack does.
    metadata: JSONDict | None = None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def edits(self) -> int:
        return len(self.history)

    def as_slack(self, bot_id: str, *, with_metadata: bool = False) -> JSONDict:
        body: JSONDict = {
            "type": "message",
            "user": self.user,
            "bot_id": bot_id,
            "text": self.text,
            "ts": self.ts,
        }
        if with_metadata and self.metadata is not None:
            body["metadata"] = copy.deepcopy(self.metadata)
        if self.blocks:
            body["blocks"] = [copy.deepcopy(b) for b in self.blocks]
        if self.thread_ts is not None:
            body["thread_ts"] = self.thread_ts
        if self.files:
            body["files"] = [{"id": file_id} for file_id in self.files]
        if self.reactions:
            body["reactions"] = [
                {"name": name, "users": list(users), "count": len(users)}
                for name, users in self.reactions.items()
            ]
        return body


@dataclass(frozen=True)
class File:
    """A file uploaded through files.getUploadURLExternal; shared once completed."""

    id: str
    filename: str
    length: int  # what getUploadURLExternal was told
    alt_txt: str = ""
    title: str = ""
    content: bytes | None = None  # None until the bytes reach the upload URL
    shared_in: tuple[tuple[str, str], ...] = ()  # (channel, message ts)

    @property
    def mimetype(self) -> str:
        if self.content is not None and self.content.startswith(b"\x89PNG\r\n\x1a\n"):
            return "image/png"
        return "application/octet-stream"

    def as_slack(self) -> JSONDict:
        return {"id": self.id, "name": self.filename, "title": self.title or self.filename,
                "mimetype": self.mimetype, "size": len(self.content or b""),
                "alt_txt": self.alt_txt}


@dataclass(frozen=True)
class Ephemeral:
    """A message only ``user`` saw (``chat.postEphemeral``); Slack keeps no history of these."""

    channel: str
    user: str
    ts: str
    text: str
    blocks: tuple[JSONDict, ...] = ()
    thread_ts: str | None = None


@dataclass(frozen=True)
class ResponsePost:
    """One POST to a ``response_url`` (how a slash command's caller gets a private reply)."""

    token: str
    url: str
    body: Mapping[str, Any]
    at: float
    channel: str | None
    user: str | None

    @property
    def text(self) -> str:
        return str(self.body.get("text", ""))

    @property
    def ephemeral(self) -> bool:
        # Slack treats a response without response_type as ephemeral.
        return bool(self.body.get("response_type", "ephemeral") != "in_channel")


def freeze_blocks(blocks: Any) -> tuple[JSONDict, ...]:
    """Blocks arrive as a list (JSON body) or a JSON string (form body); keep private copies."""
    if blocks is None or blocks == "":
        return ()
    if isinstance(blocks, str):
        try:
            blocks = json.loads(blocks)
        except ValueError as exc:
            raise SlackMethodError("invalid_blocks_format") from exc
    if not isinstance(blocks, Sequence) or not all(isinstance(b, Mapping) for b in blocks):
        raise SlackMethodError("invalid_blocks_format")
    return tuple(copy.deepcopy(dict(b)) for b in blocks)
