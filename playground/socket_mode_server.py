"""Slack's side of Socket Mode on loopback: a small WebSocket server (RFC 6455, stdlib only).

    with SocketModeServer() as sockets, SlackApiStandIn() as slack:
        slack.attach_socket_mode(sockets.issue_url)   # apps.connections.open hands out its URLs
        ...start `meshbot socket` with SLACK_APP_TOKEN=xapp-…
        sockets.wait_until_connected(10)
        envelope_id = sockets.send_envelope("slash_commands", {...})
        ack = sockets.wait_for_ack(envelope_id, 5)

Like Slack it greets each connection with ``hello``, pushes envelopes as text frames, answers
pings with pongs and records the acks (``{"envelope_id", "payload"?}``) the app sends back.
URLs carry a single-use ticket, as Slack's do, so a client that skips
``apps.connections.open`` is refused at the handshake.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import socket
import socketserver
import struct
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

JSONDict = dict[str, Any]
ENVELOPE_TYPES = ("slash_commands", "events_api", "interactive")
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MAX_FRAME = 1 << 20  # Slack's payloads are small; a huge length means a framing bug


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key``."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame: servers never mask (RFC 6455 §5.1)."""
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        head += bytes([len(payload)])
    elif len(payload) < 1 << 16:
        head += struct.pack("!BH", 126, len(payload))
    else:
        head += struct.pack("!BQ", 127, len(payload))
    return head + payload


@dataclass(frozen=True)
class Ack:
    """What the app sent back for one envelope; ``payload`` is None for a bare ack."""

    envelope_id: str
    payload: JSONDict | None
    received_at: float


class _ProtocolError(Exception):
    """The client broke RFC 6455; the connection is closed with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = False  # joined by server_close(); stop() shuts their sockets first
    allow_reuse_address = True

    def __init__(self, owner: SocketModeServer) -> None:
        super().__init__(("127.0.0.1", 0), _Connection)
        self.owner = owner


class _Connection(socketserver.StreamRequestHandler):
    server: _Server
    disable_nagle_algorithm = True

    def handle(self) -> None:
        owner = self.server.owner
        if not self._handshake():
            return
        self._send_lock = threading.Lock()
        owner._opened(self)
        try:
            self.send_text(json.dumps(owner.hello()))
            self._serve_frames()
        except _ProtocolError as exc:
            self.send_close(exc.code, str(exc))
        except OSError:
            pass  # the peer vanished, or stop() shut the socket
        finally:
            owner._closed(self)

    def _handshake(self) -> bool:
        request_line = self.rfile.readline(8192).decode("latin-1").strip()
        headers: dict[str, str] = {}
        while (line := self.rfile.readline(8192).decode("latin-1").strip()):
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        method, _, rest = request_line.partition(" ")
        target = rest.rpartition(" ")[0]
        ticket = parse_qs(urlsplit(target).query).get("ticket", [""])[0]
        key = headers.get("sec-websocket-key", "")
        if (method != "GET" or headers.get("upgrade", "").lower() != "websocket"
                or headers.get("sec-websocket-version") != "13" or not key):
            self._refuse("400 Bad Request", "not a WebSocket handshake")
            return False
        if not self.server.owner._redeem(ticket):
            self._refuse("401 Unauthorized", "unknown or used ticket")
            return False
        self.wfile.write((
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode())
        return True

    def _refuse(self, status: str, why: str) -> None:
        body = why.encode()
        self.wfile.write(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n"
                         f"Connection: close\r\n\r\n".encode() + body)

    def _read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise OSError("connection closed mid-frame")
        return data

    def _read_frame(self) -> tuple[bool, int, bytes]:
        b1, b2 = self._read_exact(2)
        if b1 & 0x70:
            raise _ProtocolError(1002, "reserved bits set without an extension")
        if not b2 & 0x80:
            raise _ProtocolError(1002, "client frames must be masked")
        length = b2 & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exact(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exact(8))
        if length > MAX_FRAME:
            raise _ProtocolError(1009, "frame too large")
        mask = self._read_exact(4)
        data = bytes(b ^ mask[i % 4] for i, b in enumerate(self._read_exact(length)))
        return bool(b1 & 0x80), b1 & 0x0F, data

    def _serve_frames(self) -> None:
        message: bytearray | None = None  # a fragmented text message being assembled
        while True:
            fin, opcode, data = self._read_frame()
            if opcode == OP_PING:
                self._send(OP_PONG, data)
            elif opcode == OP_PONG:
                continue
            elif opcode == OP_CLOSE:
                self._send(OP_CLOSE, data[:2])  # echo the code, as §5.5.1 asks
                return
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                if opcode != OP_CONT:
                    message = bytearray()
                if message is None:
                    raise _ProtocolError(1002, "continuation without a first frame")
                message += data
                if fin:
                    if opcode == OP_BINARY:
                        raise _ProtocolError(1003, "Slack's protocol is text only")
                    self.server.owner._received(bytes(message).decode())
                    message = None
            else:
                raise _ProtocolError(1002, f"unknown opcode {opcode}")

    def _send(self, opcode: int, payload: bytes) -> None:
        with self._send_lock:  # the test thread and this handler both write
            self.connection.sendall(encode_frame(opcode, payload))

    def send_text(self, text: str) -> None:
        self._send(OP_TEXT, text.encode())

    def send_close(self, code: int, reason: str) -> None:
        with contextlib.suppress(OSError):
            self._send(OP_CLOSE, struct.pack("!H", code) + reason.encode()[:120])


class SocketModeServer:
    """Slack's Socket Mode endpoint on a free loopback port; a context manager."""

    def __init__(self, *, app_id: str = "A0MESHBOT") -> None:
        self.app_id = app_id
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._cond = threading.Condition()
        self._tickets: set[str] = set()
        self._connections: list[_Connection] = []
        self._acks: dict[str, Ack] = {}
        self.received: list[JSONDict] = []  # every message the app sent, in order
        self.connections_opened = 0

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is None:
            self._server = _Server(self)
            self._thread = threading.Thread(target=self._server.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name="socket-mode-server", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        with self._cond:
            live = list(self._connections)
        for conn in live:  # wake handler threads blocked in recv so server_close() can join
            with contextlib.suppress(OSError):
                conn.connection.shutdown(socket.SHUT_RDWR)
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- what apps.connections.open hands out --------------------------------------------

    def issue_url(self) -> str:
        """A fresh ``ws://`` URL with a single-use ticket, as ``apps.connections.open`` gives."""
        if self._server is None:
            raise RuntimeError("the Socket Mode server is not running; use it as a context manager")
        ticket = secrets.token_hex(16)
        with self._cond:
            self._tickets.add(ticket)
        port = self._server.server_address[1]
        return f"ws://127.0.0.1:{port}/link/?ticket={ticket}&app_id={self.app_id}"

    def hello(self) -> JSONDict:
        with self._cond:
            count = len(self._connections)
        return {"type": "hello", "num_connections": count,
                "debug_info": {"host": "playground-socket-mode",
                               "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id}}

    # -- state -------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        with self._cond:
            return bool(self._connections)

    def wait_until_connected(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._connections:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no Socket Mode client connected within {timeout}s")
                self._cond.wait(left)

    def send_envelope(self, type: str, payload: JSONDict, *,
                      accepts_response_payload: bool = True) -> str:
        """Push one envelope to the newest connection, as Slack does; returns its id."""
        if type not in ENVELOPE_TYPES:
            raise ValueError(f"not a Socket Mode envelope type: {type}")
        envelope_id = secrets.token_hex(8)
        envelope = {"envelope_id": envelope_id, "type": type, "payload": payload,
                    "accepts_response_payload": accepts_response_payload}
        with self._cond:
            if not self._connections:
                raise RuntimeError("no Socket Mode client is connected")
            conn = self._connections[-1]
        conn.send_text(json.dumps(envelope))
        return envelope_id

    def wait_for_ack(self, envelope_id: str, timeout: float) -> Ack:
        deadline = time.monotonic() + timeout
        with self._cond:
            while envelope_id not in self._acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no ack for envelope {envelope_id} within {timeout}s; "
                                       f"received: {self.received}")
                self._cond.wait(left)
            return self._acks[envelope_id]

    # -- called by connection threads -------------------------------------------------------

    def _redeem(self, ticket: str) -> bool:
        with self._cond:
            if ticket not in self._tickets:
                return False
            self._tickets.discard(ticket)
            return True

    def _opened(self, conn: _Connection) -> None:
        with self._cond:
            self._connections.append(conn)
            self.connections_opened += 1
            self._cond.notify_all()

    def _closed(self, conn: _Connection) -> None:
        with self._cond:
            if conn in self._connections:
                self._connections.remove(conn)
            self._cond.notify_all()

    def _received(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = {"unparsed": text}
        if not isinstance(message, dict):
            message = {"unparsed": text}
        with self._cond:
            self.received.append(message)
            envelope_id = message.get("envelope_id")
            if isinstance(envelope_id, str):
                payload = message.get("payload")
                self._acks[envelope_id] = Ack(envelope_id,
                                              payload if isinstance(payload, dict) else None,
                                              time.time())
            self._cond.notify_all()
