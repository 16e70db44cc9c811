"""A lean stand-in for a big mesh's Istio metrics: what meshbot's queries read, and no more.

playground/traffic.py models both reporters and every label: at 1,000 services that is a 23 MB
exposition taking 1.7 to 3.4 s to render, longer than the 1 s scrape interval. This server
renders only the destination reporter's ``istio_requests_total`` and
``istio_request_duration_milliseconds`` buckets (Istio's own bounds) per (service, version):
about 10 MB, rendered in under 0.2 s, for 1,000 services. Counters grow at a constant rate, so
``rate()`` is exact and every canary is healthy unless it is listed as failing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from playground.traffic_model import ISTIO_BUCKETS_MS, latency_segments

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds_bucket"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _cumulative_shares(p99_ms: float) -> list[float]:
    """Share of requests at or below each bucket bound, for a distribution whose p99 (as
    histogram_quantile interpolates it) is ``p99_ms``."""
    segments = latency_segments(p99_ms)
    return [sum(share * min(max((le - lo) / (hi - lo), 0.0), 1.0) for lo, hi, share in segments)
            for le in ISTIO_BUCKETS_MS]


class StaticMesh:
    """Series for ``services`` in ``namespace``, versions v1 (stable) and v2 (canary), split by
    ``canary_share``; the ``failing`` services' canary answers 503 to ``error_rate``."""

    def __init__(self, services: Iterable[str], namespace: str, *, rps: float = 20.0,
                 canary_share: float = 0.1, p99_ms: float = 40.0,
                 failing: Iterable[str] = (), error_rate: float = 0.5) -> None:
        self.started = time.time()
        shares = _cumulative_shares(p99_ms)
        failing = set(failing)
        # (line prefix, requests per second that line counts): rendering is one multiply each.
        self.lines: list[tuple[str, float]] = []
        for service in services:
            for version, share in (("v1", 1 - canary_share), ("v2", canary_share)):
                base = (f'reporter="destination",destination_service_name="{service}",'
                        f'destination_workload="{service}-{version}",'
                        f'destination_workload_namespace="{namespace}",'
                        f'destination_version="{version}"')
                errors = error_rate if version == "v2" and service in failing else 0.0
                ok = rps * share * (1 - errors)
                self.lines.append((f'{REQUESTS}{{{base},response_code="200"}} ', ok))
                if errors:
                    self.lines.append((f'{REQUESTS}{{{base},response_code="503"}} ',
                                       rps * share * errors))
                bucketed = f'{DURATION}{{{base},response_code="200",le="'
                for le, below in zip(ISTIO_BUCKETS_MS, shares, strict=True):
                    self.lines.append((f'{bucketed}{le:g}"}} ', ok * below))
                self.lines.append((f'{bucketed}+Inf"}} ', ok))
        self.series = len(self.lines)

    def exposition(self) -> bytes:
        elapsed = time.time() - self.started
        head = (f"# TYPE {REQUESTS} counter\n"
                f"# TYPE istio_request_duration_milliseconds histogram\n")
        return (head + "".join(f"{prefix}{rate * elapsed:.3f}\n"
                               for prefix, rate in self.lines)).encode()


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one scrape a second

    def do_GET(self) -> None:
        body = self.server.mesh.exposition()
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, mesh: StaticMesh) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.mesh = mesh


class StaticMetricsServer:
    """Serves a StaticMesh on a free loopback port; a context manager."""

    def __init__(self, mesh: StaticMesh) -> None:
        self.mesh = mesh
        self._server = _Server(mesh)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="static-metrics")

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> StaticMetricsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
