"""RQ job functions: module-level, JSON-safe arguments (RQ's JSON serializer, never pickle).

``handle_request`` is the one entry point for commands; it maps meshbot's errors onto what the
caller is told and onto RQ's retries (the one place that mapping lives).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Callable
from typing import Any, cast

import redis
from rq import get_current_job

from jobs.runtime import api, context
from jobs.runtime.context import JobContext
from jobs.runtime.handlers import approvals, traffic
from jobs.runtime.handlers.common import end_overtaken, plans_dry_run, record, thread_of
from jobs.runtime.retry import next_wait
from jobs.runtime.unreadable import read_request
from jobs.runtime.weights import Abandoned
from meshbot import cluster_scope, metrics
from meshbot.commands import Request, Verb
from meshbot.errors import (
    GitOpsOwned,
    MeshbotError,
    MeshInvalid,
    MeshNotFound,
    PermanentError,
    Refused,
    TemporaryError,
    UserError,
)
from meshbot.redis_client import translate
from meshbot.verbs import REGISTRY
from rendering import approvals as approval_text
from rendering import common as words
from rendering import replies

log = logging.getLogger("meshbot.jobs")

Handler = Callable[[JobContext, Request], str]



def _resolve(path: str) -> Handler:
    module, _, name = path.partition(":")
    return cast(Handler, getattr(importlib.import_module(module), name))


# Derived from the verb registry; approvals and handler modules are imported here, eagerly.
HANDLERS: dict[Verb, Handler] = {s.verb: _resolve(s.handler) for s in REGISTRY if s.handler}


@metrics.counts_job  # commands by verb and outcome (done, failed, ...), job failures
def handle_request(payload: dict[str, Any]) -> str:
    request = read_request(payload)
    if request is None:
        return "unreadable"
    # Every key, client and message of the job is the cluster's the command named.
    with cluster_scope.scope(request.command.cluster):
        return _handle(request, context.current().for_cluster(request.command.cluster))


def _handle(request: Request, ctx: JobContext) -> str:
    handler = HANDLERS.get(request.command.verb)
    extra = {"request_id": request.id, "service": request.command.target}
    if handler is None:
        _tell(ctx, request, replies.refused(
            f"`/mesh {request.command.verb.value}` is not available in this version"))
        return "unsupported"
    ended = ctx.audit.ended(request.id)
    if ended is not None:  # its first run ended it (then its worker died): as it was
        log.info("%s already ended (%s): not run again", request.id, ended, extra=extra)
        return ended
    if not request.command.dry_run and api.overtaken(ctx.redis, request):
        traffic.undo_unchecked_routes(ctx, request)  # raises to be retried if it cannot
        text = replies.overtaken(request.command)
        if request.approved_by:  # its request closes, saying the approvals were not used
            approvals.not_used(ctx, request, approval_text.overtaken(request.command.target))
        # Its thread (opened by an earlier run, or its rollout's) says so too, once.
        return end_overtaken(ctx, request, *thread_of(ctx, request), text=text)
    try:
        # Freeze, lock and approvals: a request still lacking approvals is posted for
        # approval here and never reaches its handler.
        if request.command.dry_run:
            # A plan writes nothing: no freeze, lock or approval applies.
            if not plans_dry_run(handler):
                raise Refused(replies.no_dry_run(request.command))
            result = handler(ctx, request)
        else:
            result = approvals.run_gated(ctx, request, handler)
        log.info("done %s", words.describe(request.command), extra=extra)
        return result
    except Abandoned:
        # A rollback won meanwhile: nothing was applied, and that is the right outcome.
        text = replies.stopped_by_rollback(request.command.target or "")
        _tell(ctx, request, text)
        record(ctx, request, "abandoned", detail=text)
        return "abandoned"
    # What the cluster's state refuses (a missing VirtualService, a GitOps owner) is told
    # as a refusal, like the policy's, not as a failure.
    except (UserError, MeshNotFound, MeshInvalid, GitOpsOwned) as exc:
        _tell(ctx, request, replies.refused(exc.message))
        record(ctx, request, "refused", detail=exc.message)
        return "refused"
    except TemporaryError as exc:
        job = get_current_job()
        if job is not None and (job.retries_left or 0) > 0:
            wait = next_wait(job, exc)  # the worker stretches the retry to it
            log.warning("will retry %s in %gs: %s", request.id, wait, exc.message, extra=extra)
            raise
        _tell(ctx, request, replies.gave_up(request.command, exc.message, _attempts(job)))
        record(ctx, request, "failed", detail=exc.message)
        return "failed"
    except (PermanentError, MeshbotError) as exc:
        _tell(ctx, request, replies.failed(request.command, exc.message))
        record(ctx, request, "failed", detail=exc.message)
        return "failed"
    except redis.RedisError as exc:
        error = translate(exc, "Redis failed during the job")
        if isinstance(error, TemporaryError):
            # Redis went away mid-job (a restart): nothing can be recorded or told now. Raised
            # as a TemporaryError, RQ retries it; a worker that RQ gives up on is replaced and
            # its job taken over (``jobs.runtime.worker``). Handlers are safe to run again.
            log.warning("Redis failed during %s (%s); it runs again", request.id,
                        type(exc).__name__, extra=extra)
            raise error from exc
        # Redis answered, and refused the command (WRONGTYPE, NOSCRIPT...): a bug that no
        # retry mends. Said once, as a failure.
        log.error("Redis refused a command of %s: %s", request.id, error.message, extra=extra)
        with contextlib.suppress(MeshbotError, redis.RedisError):
            _tell(ctx, request, replies.failed(request.command, "internal error (Redis)"))
            record(ctx, request, "failed", detail=error.message)
        return "failed"
    except Exception as exc:
        # A bug, not a state of the world: say so rather than leave the caller waiting.
        log.exception("unexpected error in %s", request.id, extra=extra)
        reason = f"internal error ({type(exc).__name__})"
        _tell(ctx, request, replies.failed(request.command, reason))
        record(ctx, request, "failed", detail=repr(exc))
        return "failed"


def _attempts(job: Any) -> int:
    return 1 + len(getattr(job, "retry_intervals", None) or []) if job is not None else 1


def _tell(ctx: JobContext, request: Request, text: str) -> None:
    """Tell the caller only (ephemeral)."""
    try:
        ctx.notifier.ephemeral(text, response_url=request.response_url,
                               channel=request.channel, user=request.user)
    except MeshbotError as exc:
        log.warning("could not tell %s: %s", request.user, exc.message)
