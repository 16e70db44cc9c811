"""A loopback TCP proxy that can cut a connection at a chosen moment: faults at the wire.

It forwards bytes both ways between a client and a real server. Armed with a marker, it drops
the client's connection (forwarding nothing of that chunk) the first time a chunk from the
client contains the marker — e.g. a Redis ``MULTI`` or ``RPUSH`` — as a network fault or a dying
server would, half-way through whatever the client was doing. Armed with ``cut_after``, it
forwards that chunk and then drops the connection before the server's answer comes back: the
server did the work, the client cannot know.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import Self


class CuttingProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._marker: bytes | None = None
        self._forward_marked = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, name="cutting-proxy", daemon=True)
        self.cuts = 0

    def cut_on(self, marker: bytes) -> None:
        """Drop the next client chunk containing ``marker`` (and its connection), once."""
        with self._lock:
            self._marker, self._forward_marked = marker, False

    def cut_after(self, marker: bytes) -> None:
        """Forward the next client chunk containing ``marker``, then drop the connection before
        any answer reaches the client, once."""
        with self._lock:
            self._marker, self._forward_marked = marker, True

    def _take_cut(self, chunk: bytes) -> tuple[bool, bool]:
        """(cut now, forward the chunk first)."""
        with self._lock:
            if self._marker is not None and self._marker in chunk:
                self._marker = None
                self.cuts += 1
                return True, self._forward_marked
        return False, False

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            server = socket.create_connection(self.target, timeout=5)
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        try:
            while chunk := source.recv(65536):
                cut, forward = self._take_cut(chunk) if from_client else (False, False)
                if cut and forward:
                    # The client's end goes first, so the answer cannot get through; the
                    # server's end stays open until it answers (the other pump then fails to
                    # pass the answer on and closes both), so it surely did the work.
                    with contextlib.suppress(OSError):
                        source.shutdown(socket.SHUT_RDWR)
                    sink.sendall(chunk)
                    return
                if cut:
                    break
                sink.sendall(chunk)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        for sock in self._sockets:
            sock.close()
