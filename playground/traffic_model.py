"""The mesh traffic model: Istio's standard metrics advanced deterministically from elapsed time.

Nothing here sleeps or draws random numbers. Between two instants the model adds exactly
``rps * weight * elapsed`` requests to each version, ``error_rate`` of them answered 503, so
``rate()`` over any window is exactly what was configured (no sampling noise in tests).

Latency: ``histogram_quantile`` interpolates linearly inside the bucket that holds the quantile,
as if that bucket's requests were spread evenly across it. The model spreads them exactly so
(``latency_segments``), which makes Prometheus report p99 = the configured ``latency_ms``
whatever the buckets, and p95 = ``quantile(latency_segments(p99), 0.95)``.

Callers: a service's requests are split evenly among its callers (``set_callers``), each named
as an AuthorizationPolicy names it: a principal ``cluster.local/ns/<ns>/sa/<sa>`` (an mTLS call:
``source_principal="spiffe://cluster.local/ns/<ns>/sa/<sa>"``, ``source_workload_namespace=
"<ns>"``), or a bare namespace (a plain-text call: Istio knows no principal, only where it came
from). A service without callers is called by a source Istio cannot name: both labels
``unknown``, as Istio reports them then.
"""

from __future__ import annotations

import functools
import itertools
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

ServiceKey = tuple[str, str]
"""(service, namespace)."""
Clock = Callable[[], float]

# Istio's default buckets for istio_request_duration_milliseconds.
ISTIO_BUCKETS_MS = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip
REPORTERS = ("destination", "source")
# The client side sees the server's latency plus the network: a query that forgets
# reporter="destination" gets visibly wrong latency (and double the request rate).
SOURCE_LATENCY_FACTOR = 1.5
# The labels meshbot's queries and alerts use (the source ones: who calls a service, for authz);
# Istio has more, but every extra label costs exposition bytes on each 1 s scrape (50 services
# ≈ 4,800 series).
LABELS = (
    "reporter",
    "destination_service_name",
    "destination_workload",
    "destination_workload_namespace",
    "destination_version",
    "response_code",
    "source_principal",
    "source_workload_namespace",
)
UNKNOWN = "unknown"  # Istio's value for a source label it could not fill in
SPIFFE = "spiffe://"
_NAMESPACE = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_PRINCIPAL = re.compile(rf"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/ns/(?P<ns>{_NAMESPACE})/sa/"
                        r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
Source = tuple[str, str]
"""(source_principal, source_workload_namespace), as the labels carry them."""
UNKNOWN_SOURCE: Source = (UNKNOWN, UNKNOWN)


def caller_source(caller: str) -> Source:
    """The source labels of a caller named as an AuthorizationPolicy names it: a principal
    (``cluster.local/ns/<ns>/sa/<sa>``; a leading ``spiffe://`` is accepted) or a namespace."""
    principal = caller.removeprefix(SPIFFE)
    if found := _PRINCIPAL.fullmatch(principal):
        return SPIFFE + principal, found["ns"]
    if re.fullmatch(_NAMESPACE, caller):
        return UNKNOWN, caller
    raise ValueError(f"a caller is a principal (cluster.local/ns/<namespace>/sa/<service "
                     f"account>) or a namespace, got {caller!r}")


MAX_LATENCY_MS = 600000.0  # leaves a finite bucket above it for latency_segments' spill-over
# Below the first bucket's bound nothing can sit under the p99 to pull it down: the lowest p99
# histogram_quantile can report from these buckets is the first bound itself.
MIN_LATENCY_MS = ISTIO_BUCKETS_MS[0]

Segment = tuple[float, float, float]
"""(low, high, share): ``share`` of the requests spread evenly over (low, high] milliseconds."""


@functools.lru_cache(maxsize=256)
def latency_segments(p99_ms: float) -> tuple[Segment, ...]:
    """A latency distribution whose interpolated p99 is exactly ``p99_ms``.

    With L in bucket (lo, hi] and r = (L - lo) / (hi - lo): a share a spread over [0, lo] and
    1 - a over (lo, hi] gives p99 = L when a + (1 - a) * r = 0.99. When r > 0.99 that would
    need a < 0, so instead 0.99 / r goes to (lo, hi] and the rest to the bucket above.
    """
    if not MIN_LATENCY_MS <= p99_ms <= MAX_LATENCY_MS:
        raise ValueError(f"p99 must be within {MIN_LATENCY_MS:g}..{MAX_LATENCY_MS:g} ms")
    edges = (0.0, *ISTIO_BUCKETS_MS)
    i = next(i for i in range(1, len(edges)) if p99_ms <= edges[i])
    lo, hi = edges[i - 1], edges[i]
    r = (p99_ms - lo) / (hi - lo)
    if r <= 0.99:
        below = (0.99 - r) / (1 - r)
        segments = [(0.0, lo, below), (lo, hi, 1 - below)]
    else:
        inside = 0.99 / r
        segments = [(lo, hi, inside), (hi, edges[i + 1], 1 - inside)]
    return tuple(s for s in segments if s[2] > 0 and s[1] > s[0])


def quantile(segments: tuple[Segment, ...], q: float) -> float:
    """The q-quantile (ms) of a distribution made of ``latency_segments``."""
    seen = 0.0
    for lo, hi, share in segments:
        if seen + share >= q:
            return lo + (q - seen) / share * (hi - lo)
        seen += share
    return segments[-1][1]


@dataclass(frozen=True)
class Split:
    """A service's routing: subset → weight (summing to 100) and subset → version label."""

    weights: Mapping[str, int]
    versions: Mapping[str, str]

    def version_fractions(self) -> dict[str, float]:
        total = sum(self.weights.values())
        fractions: dict[str, float] = {}
        if total <= 0:
            return fractions
        for subset, weight in self.weights.items():
            version = self.versions.get(subset, subset)
            fractions[version] = fractions.get(version, 0.0) + weight / total
        return fractions


@dataclass(frozen=True)
class Profile:
    """How one version of a service behaves."""

    error_rate: float = 0.0  # fraction of requests answered 503
    latency_ms: float = 40.0  # server-side p99

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"error_rate must be within 0..1, got {self.error_rate}")
        if not 0 < self.latency_ms <= MAX_LATENCY_MS:
            raise ValueError(
                f"latency_ms must be within 0..{MAX_LATENCY_MS:g}, got {self.latency_ms}"
            )


@dataclass
class _Histogram:
    buckets: list[float] = field(default_factory=lambda: [0.0] * len(ISTIO_BUCKETS_MS))
    total: float = 0.0  # sum of latencies, ms
    count: float = 0.0

    def add(self, requests: float, p99_ms: float) -> None:
        for lo, hi, share in latency_segments(p99_ms):
            n = requests * share
            for i, le in enumerate(ISTIO_BUCKETS_MS):
                # cumulative buckets: the part of (lo, hi] at or below le
                self.buckets[i] += n * min(max((le - lo) / (hi - lo), 0.0), 1.0)
            self.total += n * (lo + hi) / 2
        self.count += requests


class MeshTraffic(Collector):
    """Counters for every (reporter, service, version, code); thread-safe; a prometheus Collector.

    Every change (weights, profiles, rates) first advances the counters to "now" under the old
    settings, so a change takes effect exactly when it is made.
    """

    def __init__(self, default_rps: float, default_profile: Profile, clock: Clock) -> None:
        self.default_rps = default_rps
        self.default_profile = default_profile
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()
        self._splits: dict[ServiceKey, Split] = {}
        self._rps: dict[ServiceKey, float] = {}
        self._profiles: dict[tuple[str, str, str], Profile] = {}
        self._callers: dict[ServiceKey, dict[str, Source]] = {}  # caller → its labels
        self._requests: dict[tuple[str, ...], float] = {}
        self._histograms: dict[tuple[str, ...], _Histogram] = {}

    # --- settings -----------------------------------------------------------------------------

    def set_splits(self, splits: Mapping[ServiceKey, Split]) -> None:
        with self._lock:
            self._advance()
            self._splits = dict(splits)

    def set_rps(self, key: ServiceKey, rps: float) -> None:
        if rps < 0:
            raise ValueError(f"rps must not be negative, got {rps}")
        with self._lock:
            self._advance()
            self._rps[key] = rps

    def set_profile(self, key: ServiceKey, version: str, profile: Profile) -> None:
        with self._lock:
            self._advance()
            self._profiles[(key[0], key[1], version)] = profile

    def set_callers(self, key: ServiceKey, callers: Sequence[str]) -> None:
        """Who calls the service from now on (none: a source Istio cannot name)."""
        sources = {caller: caller_source(caller) for caller in callers}  # refused up front
        with self._lock:
            self._advance()
            if sources:
                self._callers[key] = sources
            else:
                self._callers.pop(key, None)

    def reset(self) -> None:
        """Back to default rates, profiles and callers (counters keep counting, as real ones
        do)."""
        with self._lock:
            self._advance()
            self._rps.clear()
            self._profiles.clear()
            self._callers.clear()

    def splits(self) -> dict[ServiceKey, Split]:
        with self._lock:
            return dict(self._splits)

    def rps(self, key: ServiceKey) -> float:
        with self._lock:
            return self._rps.get(key, self.default_rps)

    def profile(self, key: ServiceKey, version: str) -> Profile:
        with self._lock:
            return self._profiles.get((key[0], key[1], version), self.default_profile)

    def callers(self, key: ServiceKey) -> tuple[str, ...]:
        with self._lock:
            return tuple(self._callers.get(key, {}))

    # --- counting -----------------------------------------------------------------------------

    def _advance(self) -> None:
        now = self._clock()
        elapsed, self._last = now - self._last, now
        if elapsed <= 0:
            return
        for (service, namespace), split in self._splits.items():
            rps = self._rps.get((service, namespace), self.default_rps)
            callers = self._callers.get((service, namespace))
            sources = list(callers.values()) if callers else [UNKNOWN_SOURCE]
            for version, fraction in split.version_fractions().items():
                requests = rps * fraction * elapsed
                if requests <= 0:
                    continue
                profile = self._profiles.get((service, namespace, version), self.default_profile)
                by_code = (("200", 1 - profile.error_rate), ("503", profile.error_rate))
                for (code, share), source, reporter in itertools.product(
                    by_code, sources, REPORTERS
                ):
                    if share <= 0:
                        continue  # Istio creates a code's series only when it first happens
                    labels = _labels(reporter, service, namespace, version, code, source)
                    counted = requests * share / len(sources)
                    self._requests[labels] = self._requests.get(labels, 0.0) + counted
                    latency = profile.latency_ms
                    if reporter == "source":
                        latency *= SOURCE_LATENCY_FACTOR
                    self._histograms.setdefault(labels, _Histogram()).add(counted, latency)

    def advance(self) -> None:
        with self._lock:
            self._advance()

    def request_count(self, reporter: str, key: ServiceKey, version: str, code: str,
                      caller: str | None = None) -> float:
        """Requests so far, from ``caller`` (as ``set_callers`` names it) or from everyone."""
        wanted = _labels(reporter, key[0], key[1], version, code, UNKNOWN_SOURCE)[:-2]
        source = None if caller is None else caller_source(caller)
        with self._lock:
            self._advance()
            return sum(value for labels, value in self._requests.items()
                       if labels[:-2] == wanted and source in (None, labels[-2:]))

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            self._advance()
            requests = CounterMetricFamily(
                "istio_requests", "Requests, as Istio's standard metrics count them.", labels=LABELS
            )
            for labels, value in self._requests.items():
                requests.add_metric(list(labels), value)
            durations = HistogramMetricFamily(
                "istio_request_duration_milliseconds",
                "Request duration in milliseconds, as Istio's standard metrics record it.",
                labels=LABELS,
            )
            for labels, hist in self._histograms.items():
                buckets = [
                    (str(le), v) for le, v in zip(ISTIO_BUCKETS_MS, hist.buckets, strict=True)
                ]
                buckets.append(("+Inf", hist.count))
                durations.add_metric(list(labels), buckets, hist.total)
        yield requests
        yield durations


def _labels(
    reporter: str, service: str, namespace: str, version: str, code: str, source: Source
) -> tuple[str, ...]:
    return (reporter, service, f"{service}-{version}", namespace, version, code, *source)
