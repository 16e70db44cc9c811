"""The Socket Mode stand-in speaks enough RFC 6455 for slack_sdk's own client, and refuses what
Slack would refuse (reused tickets, unmasked client frames)."""

from __future__ import annotations

import base64
import json
import os
import socket
import struct
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from slack_sdk import WebClient
from slack_sdk.socket_mode.builtin import SocketModeClient
from slack_sdk.socket_mode.client import BaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse

from playground.slack_api import SlackApiStandIn
from playground.socket_mode_server import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    SocketModeServer,
    accept_key,
)
from tests.fixtures.live import eventually

APP_TOKEN = "xapp-1-A0MESHBOT-1-test"


@pytest.fixture
def sockets(slack_api: SlackApiStandIn) -> Iterator[SocketModeServer]:
    with SocketModeServer() as server:
        slack_api.attach_socket_mode(server.issue_url)
        yield server


def test_accept_key_is_rfc_6455s_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_slack_sdks_client_connects_gets_pongs_and_acks(slack_api: SlackApiStandIn,
                                                        sockets: SocketModeServer) -> None:
    client = SocketModeClient(app_token=APP_TOKEN,
                              web_client=WebClient(token="xoxb-t", base_url=slack_api.base_url))

    def ack(client: BaseSocketModeClient, req: SocketModeRequest) -> None:
        reply = {"text": f"got {req.payload['text']}"}
        client.send_socket_mode_response(SocketModeResponse(req.envelope_id, payload=reply))

    client.socket_mode_request_listeners.append(ack)
    try:
        client.connect()
        sockets.wait_until_connected(5)
        session = client.current_session
        assert session is not None
        # The client pings as soon as it connects; a pong it did not get would make it reconnect.
        eventually(lambda: session.last_ping_pong_time, 5, "the client saw a pong")
        envelope_id = sockets.send_envelope("slash_commands", {"text": "status"})
        assert sockets.wait_for_ack(envelope_id, 5).payload == {"text": "got status"}
        assert sockets.received[0].get("envelope_id") == envelope_id
    finally:
        client.close()
    assert sockets.connections_opened == 1


def _handshake(url: str) -> tuple[socket.socket, bytes]:
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "", parts.port or 80), timeout=5)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall((f"GET {parts.path}?{parts.query} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
                  "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                  f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            break
        head += chunk
    if head.startswith(b"HTTP/1.1 101"):
        assert f"Sec-WebSocket-Accept: {accept_key(key)}".encode() in head
    return sock, head


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    file = sock.makefile("rb")
    b1, b2 = file.read(2)
    assert not b2 & 0x80, "a server must not mask"
    length = b2 & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", file.read(2))
    return b1 & 0x0F, file.read(length)


def _client_frame(opcode: int, data: bytes, *, masked: bool = True) -> bytes:
    mask = os.urandom(4) if masked else b""
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(data)) if masked else data
    return bytes([0x80 | opcode, (0x80 if masked else 0) | len(data)]) + mask + body


def test_a_ticket_opens_one_connection_only(sockets: SocketModeServer) -> None:
    url = sockets.issue_url()
    first, head = _handshake(url)
    with first:
        assert head.startswith(b"HTTP/1.1 101")
        opcode, hello = _read_frame(first)
        assert opcode == OP_TEXT and json.loads(hello)["type"] == "hello"
        again, refused = _handshake(url)
        again.close()
        assert refused.startswith(b"HTTP/1.1 401")
        bare, no_ticket = _handshake(url.split("?")[0])
        bare.close()
        assert no_ticket.startswith(b"HTTP/1.1 401")


def test_ping_is_answered_and_close_is_echoed(sockets: SocketModeServer) -> None:
    sock, _ = _handshake(sockets.issue_url())
    with sock:
        _read_frame(sock)  # hello
        sock.sendall(_client_frame(OP_PING, b"are you there"))
        assert _read_frame(sock) == (OP_PONG, b"are you there")
        sock.sendall(_client_frame(OP_CLOSE, struct.pack("!H", 1000)))
        assert _read_frame(sock) == (OP_CLOSE, struct.pack("!H", 1000))
    eventually(lambda: not sockets.connected, 5, "the server dropped the closed connection")


def test_unmasked_client_frame_is_a_protocol_error(sockets: SocketModeServer) -> None:
    sock, _ = _handshake(sockets.issue_url())
    with sock:
        _read_frame(sock)  # hello
        sock.sendall(_client_frame(OP_TEXT, b'{"envelope_id": "x"}', masked=False))
        opcode, data = _read_frame(sock)
    assert opcode == OP_CLOSE and struct.unpack("!H", data[:2]) == (1002,)
    assert sockets.received == []
