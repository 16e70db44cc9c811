"""The one Prometheus adapter: a constant number of batched queries per analysis tick.

Nothing above this module sees a ``requests`` or ``prometheus_api_client`` exception: every
failure to get an answer becomes ``MetricsUnavailable`` (a ``TemporaryError``), which the
analysis treats as "no data" — never as healthy.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

import requests
import urllib3
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.util.retry import Retry

from jobs.domain.promql import (
    CanaryMetrics,
    RawCounts,
    SeriesKey,
    counts_query,
    duration,
    error_ratio_query,
    latency_query,
    parse_counts,
    parse_vector,
    parse_windowed,
    rate_window,
    request_rate_query,
)
from meshbot.errors import MetricsUnavailable
from meshbot.network_words import in_words

log = logging.getLogger("meshbot.prometheus")
T = TypeVar("T")
# A tick's batched queries go out at once (Prometheus runs them in parallel): the guards' four
# inside ``fetch`` and, beside it, the counters, so 2 + 4 threads at most.
PARALLEL_QUERIES = 6

DEFAULT_SCRAPE_INTERVAL = 15.0  # Prometheus's own default; pass the real one when it differs
DEFAULT_BURN_WINDOWS = (300.0, 3600.0)  # 5m and 1h, the runbook's multi-window burn alert


def _number(value: float | None) -> float | None:
    # NaN is how PromQL says "nothing to divide" (no traffic); callers get None for that.
    return None if value is None or math.isnan(value) else value


class MetricsSource:
    """Reads canary metrics for every watched service at once."""

    def __init__(
        self,
        url: str,
        timeout: float = 5.0,
        *,
        scrape_interval: float = DEFAULT_SCRAPE_INTERVAL,
        burn_windows: Sequence[float] = DEFAULT_BURN_WINDOWS,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.scrape_interval = scrape_interval
        self.burn_windows = tuple(sorted(burn_windows))
        self.queries_made = 0  # cumulative; benchmarks print it to show it does not grow with N
        # No retries here: the analysis tick is the retry loop (MetricsUnavailable carries the
        # delay), and urllib3's default backoff would stall a tick for seconds. read=False makes
        # urllib3 re-raise a read timeout as itself, so requests reports it as a Timeout.
        self._retry = Retry(total=0, read=False)
        self._client = PrometheusConnect(url=self.url, timeout=timeout, retry=self._retry)
        self._local = threading.local()  # one requests.Session per thread that queries
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def close(self) -> None:
        self._client.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(max_retries=self._retry)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def concurrently(self, calls: Sequence[Callable[[], T]]) -> list[T]:
        """Run ``calls`` (each a few queries) at once; the first failure is raised, as
        MetricsUnavailable like any other."""
        if len(calls) <= 1:
            return [call() for call in calls]
        return [future.result() for future in self.started(calls)]

    def started(self, calls: Sequence[Callable[[], T]]) -> list[Future[T]]:
        """``calls`` running at once: each answer may be used as soon as it is there (a
        failure is raised by its ``result()``)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(PARALLEL_QUERIES, thread_name_prefix="prometheus")
        return [self._pool.submit(call) for call in calls]

    def _instant(self, promql: str, params: dict[str, str]) -> Any:
        """POST /api/v1/query (a thousand services' regex does not fit every proxy's URL)."""
        response = self._session().post(f"{self.url}/api/v1/query",
                                        data={"query": promql, **params}, timeout=self.timeout)
        if response.status_code != 200:
            raise PrometheusApiClientException(
                f"HTTP Status Code {response.status_code} ({response.content[:200]!r})")
        body = response.json()
        if body.get("status") != "success":
            raise PrometheusApiClientException(f"status {body.get('status')!r}")
        return body["data"]["result"]

    def __enter__(self) -> MetricsSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        """One instant query; any failure to get an answer → MetricsUnavailable."""
        params = {} if at is None else {"time": f"{at:.3f}"}
        with self._lock:
            self.queries_made += 1
        result = self._guarded("a query", lambda: self._instant(promql, params))
        if not isinstance(result, list):
            raise MetricsUnavailable(f"Prometheus at {self.url} answered something not a vector")
        return result

    def _guarded(self, what: str, send: Any) -> Any:
        """Prometheus's failures in words a person reads in a thread; the library's text goes
        to the log only."""
        try:
            return send()
        except requests.Timeout as exc:
            raise self._unavailable(f"did not answer within {self.timeout:g}s", exc) from exc
        except requests.ConnectionError as exc:
            # Refused, not found (DNS), dropped, timed out connecting: each named as it was.
            raise self._unavailable(in_words(exc), exc) from exc
        except requests.HTTPError as exc:
            code = exc.response.status_code if exc.response is not None else "an error"
            raise self._unavailable(f"answered HTTP {code} to {what}", exc) from exc
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise self._unavailable("could not be reached", exc) from exc
        except PrometheusApiClientException as exc:
            raise self._unavailable(f"answered an error to {what}", exc) from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise self._unavailable(f"answered {what} with something meshbot cannot read",
                                    exc) from exc

    def _unavailable(self, what: str, exc: BaseException) -> MetricsUnavailable:
        log.warning("Prometheus at %s %s: %s: %s", self.url, what, type(exc).__name__, exc)
        return MetricsUnavailable(f"Prometheus at {self.url} {what}")

    def query_range(self, promql: str, start: float, end: float,
                    step: float) -> list[dict[str, Any]]:
        """One range query (a matrix); any failure to get an answer → MetricsUnavailable."""
        with self._lock:
            self.queries_made += 1
        result = self._guarded("a range query", lambda: self._client.custom_query_range(
            promql, start_time=datetime.datetime.fromtimestamp(start, datetime.UTC),
            end_time=datetime.datetime.fromtimestamp(end, datetime.UTC),
            step=f"{max(step, 0.001):.3f}"))
        if not isinstance(result, list):
            raise MetricsUnavailable(f"Prometheus at {self.url} answered something not a matrix")
        return result

    def counts(
        self,
        watched: Sequence[tuple[str, str]],
        bounds_ms: Sequence[float],
        versions: Sequence[str] = (),
        at: float | None = None,
    ) -> dict[SeriesKey, RawCounts]:
        """Raw cumulative request, 5xx and latency-bucket counters of every version of every
        watched (service, namespace) at ``at``, in one query (``promql.counts_query``)."""
        if not watched:
            return {}
        wanted = set(watched)
        answer = parse_counts(self.query(counts_query(watched, bounds_ms, versions), at))
        return {key: value for key, value in answer.items() if (key[0], key[1]) in wanted}

    def fetch(
        self,
        watched: Sequence[tuple[str, str]],
        window: float,
        versions: Sequence[str] = (),
        *,
        p95: bool = True,
        burn_windows: Sequence[float] | None = None,
        at: float | None = None,
        quantile_versions: Sequence[str] | None = None,
    ) -> dict[SeriesKey, CanaryMetrics]:
        """Metrics of every version of every watched (service, namespace), keyed by
        (service, namespace, version). A version absent from the answer had no traffic.

        ``window`` (seconds) is raised to hold at least four scrapes. The number of queries is
        the same for one service or a thousand: request rate, p99, and one query for the error
        ratio over the analysis window and every burn-rate window (the success rate is the
        analysis window's); p95 adds a fourth only when some SLO asks for it. ``versions``
        narrows the series to the versions compared (canaries and stables). ``burn_windows``
        (every window any watched service's SLO names; default: the source's) are told apart by
        their label, the policy's duration, so each service's judgement can keep its own.
        ``quantile_versions`` (default: ``versions``) narrows the p99 and p95 further, to the
        versions whose quantiles are judged (the canaries): ``histogram_quantile`` over every
        bucket of both subsets is the costliest of the queries.
        """
        if not watched:
            return {}
        span = rate_window(window, self.scrape_interval)
        at = time.time() if at is None else at  # one instant: the signals describe one moment
        windows = sorted(set(burn_windows)) if burn_windows else list(self.burn_windows)
        burn_spans = {w: rate_window(w, self.scrape_interval) for w in windows}
        spans = sorted({span, *burn_spans.values()})
        timed = versions if quantile_versions is None or not versions else quantile_versions
        texts = [request_rate_query(watched, span, versions),
                 latency_query(watched, span, 0.99, timed),
                 error_ratio_query(watched, spans, versions)]
        if p95:
            texts.append(latency_query(watched, span, 0.95, timed))
        answers = self.concurrently([functools.partial(self.query, q, at) for q in texts])
        rates, p99 = parse_vector(answers[0]), parse_vector(answers[1])
        ratios = parse_windowed(answers[2])
        p95s = parse_vector(answers[3]) if p95 else {}

        wanted = set(watched)
        metrics: dict[SeriesKey, CanaryMetrics] = {}
        for key, rate in rates.items():
            if (key[0], key[1]) not in wanted:  # the regexes admit cross pairs; drop them
                continue
            by_window = ratios.get(key, {})
            ratio = _number(by_window.get(duration(span)))
            metrics[key] = CanaryMetrics(
                request_rate=_number(rate),
                success_rate=None if ratio is None else 100 * (1 - ratio),
                latency_p99_ms=_number(p99.get(key)),
                latency_p95_ms=_number(p95s.get(key)),
                error_ratios=tuple(
                    (duration(w), by_window.get(duration(s), math.nan))
                    for w, s in burn_spans.items()
                ),
            )
        return metrics
