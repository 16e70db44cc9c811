"""Who the bot is, for Bolt, without making every first request wait on (or fail with) Slack.

Bolt's default single-workspace authorisation calls ``auth.test`` on the first request of each
process and fails that request if Slack does not answer. meshbot knows its token; the bot's own
user id (to ignore its own reactions) is looked up once and retried later if Slack was away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from slack_bolt.authorization import AuthorizeResult
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError

log = logging.getLogger("meshbot.bot")

Authorize = Callable[..., AuthorizeResult]


def static_authorize(client: WebClient, token: str) -> Authorize:
    identity: dict[str, str | None] = {}
    lock = threading.Lock()

    def who() -> dict[str, str | None]:
        with lock:
            if identity:
                return identity
        try:
            answer = client.auth_test()
        except (SlackApiError, SlackClientError, OSError) as exc:
            log.warning("auth.test failed, bot identity unknown for now: %s", exc)
            return {}
        with lock:
            identity.update(user_id=answer.get("user_id"), bot_id=answer.get("bot_id"))
            return identity

    def authorize(enterprise_id: str | None, team_id: str | None, **_: Any) -> AuthorizeResult:
        me = who()
        return AuthorizeResult(enterprise_id=enterprise_id, team_id=team_id, bot_token=token,
                               bot_user_id=me.get("user_id"), bot_id=me.get("bot_id"))

    return authorize
