"""A job's request that this worker cannot read: told to its caller, never run, never retried.

During a rolling upgrade a newer ``meshbot serve`` accepts requests that older workers still
take: a verb or a field this version does not know. Such a request is not run — without the
part it cannot read it could do something other than asked (a ``dry_run`` it cannot see would
write for real) — nor failed in silence (RQ would retry it five times, then drop it, its caller
left on "working on it"). Its caller is told that nothing was done. No retry: an upgrade
outlasts the retries' 31 s.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from jobs.runtime import context
from meshbot.commands import Request
from meshbot.errors import MeshbotError
from rendering import replies

log = logging.getLogger("meshbot.jobs")


def read_request(payload: dict[str, Any]) -> Request | None:
    """The job's request; None when it cannot be read (its caller has then been told)."""
    try:
        return Request.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}"
                             for e in exc.errors()[:3])
    request_id = str(payload.get("id", "?"))
    log.error("request %s cannot be read by this meshbot, not run: %s", request_id, problems)
    command = payload.get("command")
    verb, target = ((_text(command.get("verb")), _text(command.get("target")))
                    if isinstance(command, dict) else (None, None))
    try:
        context.current().notifier.ephemeral(
            replies.unreadable(verb, target), response_url=_text(payload.get("response_url")),
            channel=_text(payload.get("channel")), user=_text(payload.get("user")))
    except (MeshbotError, ValueError) as error:  # ValueError: nowhere to reply to
        log.warning("could not tell the caller of %s that it was not run: %s", request_id, error)
    return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
