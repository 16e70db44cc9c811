"""Observability links in the policy: templates with known placeholders only, filled per
service and time range."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshbot.errors import PolicyError
from policies.links import expand
from policies.loader import load_policy_text

BASE = (Path(__file__).resolve().parents[1] / "data" / "contract-policy.yaml").read_text()
GRAFANA = ("https://grafana.example/d/istio-service?var-service={service}"
           "&var-namespace={namespace}&from={start_ms}&to={end_ms}")


def test_templates_are_filled_for_the_service_and_the_range() -> None:
    policy = load_policy_text(BASE + f'\nlinks: {{grafana: "{GRAFANA}", '
                              'loki: "https://loki.example/explore?q={service}"}\n')
    links = expand(policy.links.model_dump(), service="payment-service",
                   namespace="production", start=1_700_000_000.0, end=1_700_003_600.5)
    assert links == {
        "grafana": "https://grafana.example/d/istio-service?var-service=payment-service"
                   "&var-namespace=production&from=1700000000000&to=1700003600500",
        "loki": "https://loki.example/explore?q=payment-service",
    }


@pytest.mark.parametrize(("template", "said"), [
    ("https://kiali.example/{servce}", "unknown placeholder {servce}"),
    ("https://kiali.example/{service", "unbalanced brace"),
    ("kiali.example/{service}", "not an http(s) URL"),
])
def test_policy_check_names_the_path_and_the_known_placeholders(template: str,
                                                                said: str) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy_text(BASE + f'\nlinks: {{kiali: "{template}"}}\n')
    [problem] = caught.value.problems
    assert problem.path == "links.kiali"
    assert said in problem.problem
    if "placeholder" in said or "brace" in said:
        assert "{service}, {namespace}, {cluster}, {start_ms}, {end_ms}" in problem.fix
