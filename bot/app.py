"""The Bolt app: thin listeners that gate, audit, submit and ack.

The work is in Redis before the ack (``jobs.api.submit``), so an acked command is never lost, and
a Slack retry of the same ``trigger_id`` is recognised and not run twice.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis
from redis import Redis, RedisError
from slack_bolt import Ack, App, BoltResponse
from slack_sdk import WebClient

from bot.auth import static_authorize
from bot.gate import gate, policy_groups
from bot.groups import GroupResolver, UserGroups
from jobs.runtime import api
from meshbot import cluster_scope, metrics
from meshbot.commands import Command, Request, Verb
from meshbot.errors import QueueUnavailable, TemporaryError
from meshbot.settings import Settings
from policies.policy import Policy
from rendering import replies

log = logging.getLogger("meshbot.bot")

MESH_COMMAND = "/mesh"


@dataclass
class BotContext:
    settings: Settings
    policy: Policy
    redis: redis.Redis
    groups: GroupResolver
    _threads: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def __post_init__(self) -> None:
        self.policy_groups = policy_groups(self.policy)  # asked on every command

    def redis_here(self) -> Redis:
        """``redis``, holding one connection of its pool for the calling thread: a command's
        round trip then skips the pool's lock, its check for stale replies and its connection
        bookkeeping, about a third of the round trip's CPU on the ack's path. While Redis does
        not answer, the shared client, whose failure the caller reports."""
        client: Redis | None = getattr(self._threads, "client", None)
        if client is None:
            try:  # a single-connection client connects as it is built
                client = Redis(connection_pool=self.redis.connection_pool,
                               single_connection_client=True)
            except RedisError:
                return self.redis
            self._threads.client = client
        return client


def web_client(settings: Settings) -> WebClient:
    return WebClient(token=settings.slack_bot_token.get_secret_value() or None,
                     base_url=settings.slack_api_url, timeout=10)


def create_app(ctx: BotContext) -> App:
    client = web_client(ctx.settings)
    app = App(
        signing_secret=ctx.settings.slack_signing_secret.get_secret_value(),
        client=client,
        authorize=static_authorize(client, ctx.settings.slack_bot_token.get_secret_value()),
        token_verification_enabled=False,
        # The listener enqueues (milliseconds) and returns; running it on the request thread
        # avoids Bolt's small listener pool and its 10 ms ack polling.
        process_before_response=True,
        raise_error_for_unhandled_request=False,
    )

    # Over HTTP, ``meshbot serve`` answers /mesh before Bolt's dispatch (``bot.slash_ack``);
    # this listener serves Socket Mode, and HTTP requests the fast path hands on.
    @app.command(MESH_COMMAND)
    def on_mesh(ack: Ack, body: dict[str, Any]) -> None:
        ack(response_type="ephemeral", text=answer_command(ctx, body))

    # Events: the listener counts (Redis only, fast) before Bolt answers, over HTTP and over
    # Socket Mode alike (``process_before_response``). Redis failing, the listener's answer is
    # a 503: Slack delivers the event again, and its event_id counts it once.
    @app.event("reaction_added")
    def on_reaction_added(body: dict[str, Any]) -> BoltResponse | None:
        return _count_reaction(ctx, body)

    @app.event("reaction_removed")
    def on_reaction_removed(body: dict[str, Any]) -> BoltResponse | None:
        return _count_reaction(ctx, body)

    return app


def _count_reaction(ctx: BotContext, body: dict[str, Any]) -> BoltResponse | None:
    """Count a reaction; None lets Bolt answer 200. Redis failing, or anything else that may
    pass (a ``TemporaryError``), a 503 instead (a listener
    may return Bolt's response): over HTTP Slack retries an event not answered 2xx, and over
    Socket Mode Bolt then leaves the envelope unacknowledged, which Slack retries too. Raising
    would do the same with a traceback in the log; a custom ``@app.error`` handler cannot be
    used: Bolt builds its arguments from the request, which fails on some malformed payloads
    that Bolt's default handler answers with a 500."""
    try:
        handle_reaction(ctx, body)
    except TemporaryError as exc:  # Redis failing; an approval a newer meshbot stored
        log.warning("reaction not counted, Slack will deliver it again: %s", exc.message)
        error = "queue unavailable" if isinstance(exc, QueueUnavailable) else "try again"
        return BoltResponse(status=503, body={"error": error})
    return None


def handle_reaction(ctx: BotContext, body: dict[str, Any]) -> str:
    """Count a reaction on an approval request; what it did (``jobs.api.Verdict``)."""
    event = body.get("event")
    item = event.get("item") if isinstance(event, dict) else None
    if not isinstance(event, dict) or not isinstance(item, dict) or item.get("type") != "message":
        return api.Verdict.NOT_A_REQUEST.value  # reactions on files and the like
    reaction = api.Reaction(
        # Slack re-delivers an event with the same event_id (X-Slack-Retry-Num): counted once.
        event_id=str(body.get("event_id") or ""),
        added=event.get("type") == "reaction_added",
        user=str(event.get("user", "")),
        emoji=str(event.get("reaction", "")),
        channel=str(item.get("channel", "")),
        ts=str(item.get("ts", "")),
    )
    verdict = api.react(ctx.redis, reaction, policy=ctx.policy, groups_of=ctx.groups.groups_of,
                        queue=ctx.settings.queue_name)
    if verdict is api.Verdict.NOT_A_REQUEST:
        handle_alert_reaction(ctx, reaction)  # maybe a rollback emoji on an alert thread
    log.info("reaction :%s: by %s on %s/%s: %s", reaction.emoji, reaction.user,
             reaction.channel, reaction.ts, verdict.value)
    metrics.approval(verdict.value)
    return verdict.value


def handle_alert_reaction(ctx: BotContext, reaction: api.Reaction) -> str:
    """A rollback emoji on an alert thread's root: ``/mesh rollback <service>`` for a permitted
    user (the policy judges it as the typed command); anything else is ignored."""
    outcome = api.alert_reaction(ctx.redis, reaction, policy=ctx.policy,
                                 groups_of=ctx.groups.groups_of, queue=ctx.settings.queue_name)
    if outcome != "not_an_alert":
        log.info("alert reaction :%s: by %s: %s", reaction.emoji, reaction.user, outcome)
    return outcome


def answer_command(ctx: BotContext, body: dict[str, Any]) -> str:
    """The ack text for one ``/mesh`` command, whichever way it came (Bolt's listener or
    ``bot.slash_ack``): ``handle_command``'s, or — Redis failing — that nothing was done."""
    try:
        return handle_command(ctx, body)
    except QueueUnavailable as exc:
        # Within Slack's 3 s and with HTTP 200: the caller learns nothing was done.
        log.warning("command not taken: %s", exc.message)
        metrics.command("unknown", "queue_unavailable")
        return replies.queue_unavailable()


def handle_command(ctx: BotContext, body: dict[str, Any]) -> str:
    """Gate one slash command, submit it if allowed; the text to ack the caller with."""
    user = str(body.get("user_id", ""))
    channel = str(body.get("channel_id", ""))
    groups = ctx.policy_groups
    user_groups = ctx.groups.groups_of(user, groups) if groups else UserGroups()
    outcome = gate(ctx.policy, str(body.get("text", "")), user=user, channel=channel,
                   user_groups=user_groups)
    request = Request(
        id=str(body.get("trigger_id") or f"{user}:{time.time_ns()}"),
        command=outcome.command or Command(verb=Verb.HELP),
        user=user,
        channel=channel,
        response_url=body.get("response_url"),
        received_at=time.time(),
        approvals_required=outcome.approvals_required,
        eligible_approvers=outcome.approvers,
    )
    verb = outcome.command.verb.value if outcome.command else "invalid"  # for the metrics
    if outcome.refusal is not None:
        log.info("refused %s from %s: %s", body.get("text"), user, outcome.refusal)
        with cluster_scope.scope(request.command.cluster):  # audited with its cluster
            api.record_refusal(ctx.redis_here(), request, outcome.refusal)
        metrics.command(verb, "refused")
        return outcome.reply
    if not outcome.submit or outcome.command is None:
        metrics.command(verb, "done")  # answered here (help)
        return outcome.reply
    with cluster_scope.scope(request.command.cluster):
        accepted = api.submit(ctx.redis_here(), request, queue=ctx.settings.queue_name)
    if not accepted:
        metrics.command(verb, "duplicate")
        return replies.duplicate(outcome.command)
    metrics.command(verb, "accepted")
    return outcome.reply
