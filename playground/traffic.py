"""The mesh traffic generator: Istio's standard metrics for a mesh that is not there.

It serves, on one loopback HTTP server:
- ``GET /metrics``  Prometheus exposition of ``istio_requests_total`` and
  ``istio_request_duration_milliseconds`` (both reporters, as Istio does);
- ``GET /control``  every service's split, rate and per-version behaviour, as JSON;
- ``POST /control`` ``{"service", "namespace"?, "subset" | "version", "error_rate"?,
  "latency_ms"?, "rps"?, "callers"?}`` changes them at run time (``rps`` is the service's
  total). ``callers`` replaces who calls the service: a list of principals
  (``"cluster.local/ns/frontend/sa/web"``: mTLS calls, labelled ``source_principal=
  "spiffe://cluster.local/ns/frontend/sa/web"``, ``source_workload_namespace="frontend"``) and
  namespaces (``"jobs"``: plain-text calls, ``source_principal="unknown"``), the service's
  requests split evenly among them; ``[]`` (the start) is a source Istio cannot name
  (``unknown`` in both labels). No ``subset``/``version`` is needed for ``rps`` or ``callers``.

Traffic is split by a weight source polled every ``poll_interval`` (see ``mesh_weights``).

    python -m playground.traffic --kubeconfig ~/.kube/config --namespace production --port 9901
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from playground.mesh_weights import VirtualServiceWeights, WeightSource
from playground.traffic_model import Clock, MeshTraffic, Profile, ServiceKey

log = logging.getLogger(__name__)


class TrafficGenerator:
    """A thread serving the metrics and control API; a context manager."""

    def __init__(
        self,
        source: WeightSource,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        poll_interval: float = 0.5,
        default_rps: float = 20.0,
        default_profile: Profile | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.source = source
        self.poll_interval = poll_interval
        self.model = MeshTraffic(default_rps, default_profile or Profile(), clock)
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self.model)
        self._bind = (host, port)
        self._server: _Server | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the traffic generator is not running")
        return int(self._server.server_address[1])

    @property
    def target(self) -> str:
        """host:port, as a Prometheus scrape target."""
        return f"{self._bind[0]}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.target}"

    def start(self) -> None:
        self.refresh()  # traffic flows from the first instant, not after the first poll
        self._stopping.clear()
        self._server = _Server(self._bind, _Handler, self)
        self._threads = [
            threading.Thread(target=self._server.serve_forever, name="traffic-http", daemon=True),
            threading.Thread(target=self._poll, name="traffic-weights", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads = []

    def __enter__(self) -> TrafficGenerator:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- weights ------------------------------------------------------------------------------

    def refresh(self) -> None:
        """Read the weight source now; on failure keep the last split (a mesh keeps routing
        by its last config when the control plane is unreachable)."""
        try:
            splits = self.source()
        except Exception:
            log.warning("reading traffic weights failed; keeping the last ones", exc_info=True)
            return
        if splits != self.model.splits():
            self.model.set_splits(splits)

    def _poll(self) -> None:
        while not self._stopping.wait(self.poll_interval):
            self.refresh()

    # --- control ------------------------------------------------------------------------------

    def _resolve(self, service: str, namespace: str | None) -> ServiceKey:
        keys = [k for k in self.model.splits() if k[0] == service]
        if namespace is not None:
            keys = [k for k in keys if k[1] == namespace]
        if len(keys) != 1:
            where = f" in namespace {namespace}" if namespace else ""
            found = "no" if not keys else "several (give namespace)"
            raise ValueError(f"{found} service {service!r}{where} in the traffic's weight source")
        return keys[0]

    def control(self, change: dict[str, Any]) -> dict[str, Any]:
        """Apply one change (the POST /control body); answer the new state of that service."""
        service = change.get("service")
        if not isinstance(service, str):
            raise ValueError('"service" is required')
        key = self._resolve(service, change.get("namespace"))
        if "callers" in change:
            callers = change["callers"]
            if not isinstance(callers, list) or not all(isinstance(c, str) for c in callers):
                raise ValueError('"callers" must be a list of principals or namespaces')
            self.model.set_callers(key, callers)
        if "rps" in change:
            self.model.set_rps(key, float(change["rps"]))
        if "error_rate" in change or "latency_ms" in change:
            version = change.get("version")
            if version is None:
                subset = change.get("subset")
                versions = self.model.splits()[key].versions
                if not isinstance(subset, str) or subset not in versions:
                    raise ValueError(f"give a version, or a subset among {sorted(versions)}")
                version = versions[subset]
            current = self.model.profile(key, str(version))
            self.model.set_profile(
                key,
                str(version),
                Profile(
                    error_rate=float(change.get("error_rate", current.error_rate)),
                    latency_ms=float(change.get("latency_ms", current.latency_ms)),
                ),
            )
        return self._describe(key)

    def set_profile(
        self,
        service: str,
        *,
        version: str | None = None,
        subset: str | None = None,
        namespace: str | None = None,
        error_rate: float | None = None,
        latency_ms: float | None = None,
    ) -> None:
        change: dict[str, Any] = {"service": service, "namespace": namespace}
        change.update({"version": version, "subset": subset})
        if error_rate is not None:
            change["error_rate"] = error_rate
        if latency_ms is not None:
            change["latency_ms"] = latency_ms
        self.control(change)

    def set_callers(
        self, service: str, callers: list[str], *, namespace: str | None = None
    ) -> None:
        """Who calls ``service`` from now on (see ``POST /control``'s ``callers``)."""
        self.control({"service": service, "namespace": namespace, "callers": callers})

    def reset(self) -> None:
        self.model.reset()
        self.refresh()

    def _describe(self, key: ServiceKey) -> dict[str, Any]:
        split = self.model.splits()[key]
        return {
            "service": key[0],
            "namespace": key[1],
            "rps": self.model.rps(key),
            "callers": list(self.model.callers(key)),
            "subsets": {
                subset: {"weight": weight, "version": split.versions.get(subset, subset)}
                for subset, weight in split.weights.items()
            },
            "versions": {
                version: vars(self.model.profile(key, version))
                for version in split.version_fractions()
            },
        }

    def state(self) -> dict[str, Any]:
        return {"services": [self._describe(key) for key in sorted(self.model.splits())]}

    def exposition(self) -> bytes:
        return generate_latest(self._registry)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a scrape in flight must not hold up stop()

    def __init__(
        self, address: tuple[str, int], handler: type[_Handler], generator: TrafficGenerator
    ) -> None:
        super().__init__(address, handler)
        self.generator = generator


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("traffic: " + format, *args)  # one scrape a second would flood stderr

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            # The scraper hung up mid-answer (a Prometheus stopped on purpose): nothing to
            # report, and socketserver would print a traceback for it.
            log.debug("traffic: the client left before the answer was written")

    def _json(self, status: int, payload: Any) -> None:
        self._reply(status, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:
        generator = self.server.generator
        if self.path.split("?")[0] == "/metrics":
            self._reply(HTTPStatus.OK, generator.exposition(), CONTENT_TYPE_LATEST)
        elif self.path == "/control":
            self._json(HTTPStatus.OK, generator.state())
        else:
            self._json(HTTPStatus.NOT_FOUND, {"error": "GET /metrics or /control"})

    def do_POST(self) -> None:
        if self.path != "/control":
            self._json(HTTPStatus.NOT_FOUND, {"error": "POST /control"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
            change = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(change, dict):
                raise ValueError("the body must be a JSON object")
            self._json(HTTPStatus.OK, self.server.generator.control(change))
        except (ValueError, TypeError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": str(exc)})


def main(argv: list[str] | None = None) -> None:
    from kubernetes import client, config

    parser = argparse.ArgumentParser(
        prog="python -m playground.traffic",
        description="Serve Istio's standard metrics split by the live VirtualService weights.",
    )
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: the standard lookup)")
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument("--namespace", action="append", help="namespace to watch (repeatable)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    parser.add_argument("--rps", type=float, default=20.0, help="requests/s per service")
    parser.add_argument("--poll-interval", type=float, default=0.5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    # The kubernetes package ships no annotations for its config helpers.
    api_client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=args.kubeconfig, context=args.context
    )
    source = VirtualServiceWeights(
        client.CustomObjectsApi(api_client), args.namespace or ["production"]
    )
    done = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    generator = TrafficGenerator(
        source,
        host=args.host,
        port=args.port,
        poll_interval=args.poll_interval,
        default_rps=args.rps,
    )
    with generator, api_client:
        print(
            f"Istio metrics on {generator.url}/metrics, control on {generator.url}/control",
            flush=True,
        )
        done.wait()


if __name__ == "__main__":
    main()
