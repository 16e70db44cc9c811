"""The playground page's web server (aiohttp): the page, its assets, and a small JSON API.

    GET  /                      the page (static/index.html); its script and style beside it
    GET  /api/setup             who you can be, the channel, the services, the policy's emoji
    GET  /api/state?user=U      the channel, what only U saw, every service's routes
    GET  /api/metrics?service=S S's rate, error ratio and p99 per subset (from Prometheus)
    GET  /api/files/F           an uploaded file's bytes (meshbot's rollback chart)
    POST /api/command           {"user", "text"}: a signed slash command to meshbot serve
    POST /api/reaction          {"user", "ts", "name"}: toggle a reaction, signed event
    POST /api/traffic           {"service", "error_rate", "latency_ms"}: the canary's behaviour

It answers loopback peers only (anything else gets 403), checks the Host header against the
loopback names (a page elsewhere cannot rebind a name to it), and takes POST bodies as JSON only
(a cross-site form cannot send one). Every asset is in ``static/``: the page works offline.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from playground.sample_mesh import SERVICES, TIERS, VERSIONS
from playground.slack_model import SlackMethodError
from playground.web import actions, metrics, state
from playground.web.live import CHANNEL_NAME, Playground

STATIC = Path(__file__).with_name("static")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
PLAYGROUND: web.AppKey[Playground] = web.AppKey("playground", Playground)
ASKS: web.AppKey[state.Asks] = web.AppKey("asks", state.Asks)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@web.middleware
async def loopback_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    host = request.host.rsplit(":", 1)[0] if not request.host.endswith("]") else request.host
    if not is_loopback(request.remote) or host not in LOOPBACK_NAMES:
        raise web.HTTPForbidden(text="the meshbot playground answers loopback only")
    response = await handler(request)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    return response


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send JSON")
    try:
        body = await request.json()
    except ValueError:
        raise web.HTTPBadRequest(text="not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="send a JSON object")
    return body


async def _run(fn: Callable[..., Any], *args: Any) -> web.Response:
    """Blocking work (HTTP to meshbot and the stand-ins) off the event loop; a refusal is 400."""
    try:
        return web.json_response(await asyncio.to_thread(fn, *args))
    except (actions.Refused, SlackMethodError) as exc:
        return web.json_response({"error": str(exc)}, status=400)


async def index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC / "index.html")


async def setup(request: web.Request) -> web.Response:
    playground = request.app[PLAYGROUND]
    approvals = playground.policy.approvals
    return web.json_response({
        "channel": {"id": playground.channel, "name": CHANNEL_NAME},
        "people": [p.as_json() for p in playground.people],
        "services": [{"service": s, "tier": t} for t, ss in TIERS.items() for s in ss
                     if s in SERVICES],
        "approve_emoji": approvals.approve_emoji, "reject_emoji": approvals.reject_emoji,
    })


async def page_state(request: web.Request) -> web.Response:
    user = request.query.get("user", "")
    return await _run(state.page_state, request.app[PLAYGROUND], request.app[ASKS], user)


async def service_metrics(request: web.Request) -> web.Response:
    service = request.query.get("service", "")
    if service not in SERVICES:
        raise web.HTTPNotFound(text="no such service")
    playground = request.app[PLAYGROUND]
    try:
        series = await asyncio.to_thread(metrics.service_series, playground.prometheus.url,
                                         service, VERSIONS, playground.started_at)
    except (OSError, KeyError, ValueError) as exc:
        return web.json_response({"error": f"Prometheus: {exc}"}, status=502)
    series["traffic"] = state.traffic_json(playground, service)
    return web.json_response(series)


async def file_bytes(request: web.Request) -> web.Response:
    try:
        file = request.app[PLAYGROUND].slack.file(request.match_info["file_id"])
    except SlackMethodError:
        raise web.HTTPNotFound() from None
    if file.content is None:
        raise web.HTTPNotFound()
    return web.Response(body=file.content, content_type=file.mimetype)


async def command(request: web.Request) -> web.Response:
    body = await _body(request)
    return await _run(actions.slash_command, request.app[PLAYGROUND], request.app[ASKS],
                      str(body.get("user", "")), str(body.get("text", "")))


async def reaction(request: web.Request) -> web.Response:
    body = await _body(request)
    return await _run(actions.toggle_reaction, request.app[PLAYGROUND],
                      str(body.get("user", "")), str(body.get("ts", "")),
                      str(body.get("name", "")))


async def traffic(request: web.Request) -> web.Response:
    body = await _body(request)
    try:
        error_rate, latency = float(body.get("error_rate", 0)), float(body.get("latency_ms", 40))
    except (TypeError, ValueError):
        raise web.HTTPBadRequest(text="numbers, please") from None
    return await _run(actions.set_canary_behaviour, request.app[PLAYGROUND],
                      str(body.get("service", "")), error_rate, latency)


def build_app(playground: Playground) -> web.Application:
    app = web.Application(middlewares=[loopback_only], client_max_size=64 * 1024)
    app[PLAYGROUND] = playground
    app[ASKS] = state.Asks()
    app.router.add_get("/", index)
    app.router.add_static("/static/", STATIC, follow_symlinks=False)
    app.router.add_get("/api/setup", setup)
    app.router.add_get("/api/state", page_state)
    app.router.add_get("/api/metrics", service_metrics)
    app.router.add_get("/api/files/{file_id}", file_bytes)
    app.router.add_post("/api/command", command)
    app.router.add_post("/api/reaction", reaction)
    app.router.add_post("/api/traffic", traffic)
    return app
