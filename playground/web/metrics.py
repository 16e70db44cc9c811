"""The mesh panel's small charts: one service's request rate, error ratio and p99 per version,
over the last few minutes, from the playground's real Prometheus (three range queries).

The same Istio series meshbot's analysis reads (``reporter="destination"``), over a short rate
window so that a change on the traffic panel shows within seconds.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from typing import Any

from playground.sample_mesh import NAMESPACE

WINDOW = "5s"
SPAN_S = 180.0
STEP_S = 2.0


def queries(service: str) -> dict[str, str]:
    where = (f'reporter="destination",destination_service_name="{service}",'
             f'destination_workload_namespace="{NAMESPACE}"')
    by = "destination_version"
    total = f"sum by ({by}) (rate(istio_requests_total{{{where}}}[{WINDOW}]))"
    errors = (f'sum by ({by}) (rate(istio_requests_total{{{where},response_code=~"5.."}}'
              f"[{WINDOW}]))")
    return {
        "rps": total,
        "error_ratio": f"({errors} or ({total} * 0)) / {total}",
        "p99_ms": (f"histogram_quantile(0.99, sum by ({by}, le) "
                   f"(rate(istio_request_duration_milliseconds_bucket{{{where}}}[{WINDOW}])))"),
    }


def _range(base_url: str, query: str, start: float, end: float) -> list[Any]:
    params = urllib.parse.urlencode({"query": query, "start": f"{start:.3f}",
                                     "end": f"{end:.3f}", "step": f"{STEP_S:g}"})
    request = urllib.request.Request(f"{base_url}/api/v1/query_range", data=params.encode(),
                                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(request, timeout=5) as response:
        body = json.load(response)
    result: list[Any] = body["data"]["result"]
    return result


def service_series(base_url: str, service: str, versions: dict[str, str],
                   since: float = 0.0) -> dict[str, Any]:
    """{metric: {subset: [[t, value], ...]}} for ``service``; ``versions`` maps subset → version.

    The span is the last few minutes, or since ``since`` (the playground's start) when that is
    later, so a fresh playground's charts are not squeezed into their right edge. NaN (no
    requests in the window) becomes null, so the chart shows a gap.
    """
    end = time.time()
    start = max(end - SPAN_S, min(since, end - 30.0))
    subset_of = {version: subset for subset, version in versions.items()}
    shown: dict[str, Any] = {"start": start, "end": end, "series": {}}
    for metric, query in queries(service).items():
        per_subset: dict[str, list[list[float | None]]] = {}
        for series in _range(base_url, query, start, end):
            version = series["metric"].get("destination_version", "")
            points: list[list[float | None]] = []
            for t, value in series["values"]:
                number = float(value)
                points.append([float(t), None if number != number else number])
            per_subset[subset_of.get(version, version)] = points
        shown["series"][metric] = per_subset
    return shown
