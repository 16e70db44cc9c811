"""Suite-wide fixtures. Each stand-in's fixtures live in its own plugin module under fixtures/."""

import pytest
from hypothesis import HealthCheck, settings

pytest_plugins = [
    "tests.fixtures.redis_server",
    "tests.fixtures.apiserver",
    "tests.fixtures.kube",
    "tests.fixtures.slack",
    "tests.fixtures.prometheus",
    "tests.fixtures.meshbot",
    "tests.fixtures.live",
    "tests.fixtures.two_clusters",
]

# The suite runs in parallel (pytest-xdist) beside subprocesses of its own: an example's wall time
# says how busy the machine is, not whether the property holds. Hypothesis still checks every
# example; only its timing checks (the per-example deadline, "data generation too slow") are off.
settings.register_profile(
    "meshbot", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("meshbot")


# Under `pytest -n N --dist loadgroup` (`make test`) every worker builds its own session fixtures
# (Redis, Prometheus, the kube-apiserver), each on free ports in its own temporary directory.
# Two kinds of test are kept on one worker each, so what they share is built once, not per worker:
# - the tests of a module with module-scoped fixtures (the playground page's live playground and
#   browser, the rendered chart, ...), which share that fixture's state in order;
# - the tests of the second kube-apiserver (``second_real_cluster``), so one worker starts it.
SECOND_APISERVER_GROUP = "second-kube-apiserver"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("xdist"):
        return  # serial, or pytest-xdist not installed (its xdist_group mark is not registered)
    for item in items:
        if not isinstance(item, pytest.Function):
            continue
        if "second_real_cluster" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group(SECOND_APISERVER_GROUP))
            continue
        defs = item._fixtureinfo.name2fixturedefs.values()
        if any(d.scope == "module" for chain in defs for d in chain):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
