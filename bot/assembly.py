"""One assembly of the Bolt app for both ways Slack reaches meshbot: HTTP (``meshbot serve``)
and Socket Mode (``meshbot socket``) run the same listeners with the same context."""

from __future__ import annotations

from slack_bolt import App
from slack_bolt.adapter.wsgi import SlackRequestHandler

from bot.alertmanager import AlertmanagerWebhook
from bot.app import BotContext, create_app, web_client
from bot.groups import GroupResolver
from bot.http import MeshbotWSGI
from bot.slash_ack import SlashAck
from meshbot.redis_client import connect
from meshbot.settings import Settings
from policies.loader import load_policy_file


def build_app(settings: Settings) -> tuple[App, BotContext]:
    policy = load_policy_file(settings.policy_path)
    # Short timeouts: a hung Redis must still let the listener answer within Slack's 3 s.
    client = connect(settings.redis_url, "serve")
    ctx = BotContext(settings=settings, policy=policy, redis=client,
                     groups=GroupResolver(web_client(settings)))
    return create_app(ctx), ctx


def build_wsgi(settings: Settings) -> MeshbotWSGI:
    app, ctx = build_app(settings)
    # Alertmanager's webhook: validated here, posted by a job.
    alerts = AlertmanagerWebhook(settings, ctx.redis)
    # /mesh commands skip Bolt's dispatch (the ack's hot path); Bolt handles the rest.
    commands = SlashAck(ctx, settings.slack_signing_secret.get_secret_value())
    return MeshbotWSGI(SlackRequestHandler(app), ctx.redis, queue=settings.queue_name,
                       extra={("POST", "/alertmanager"): alerts}, commands=commands)
