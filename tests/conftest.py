"""Suite-wide fixtures. Each stand-in's fixtures live in its own plugin module under fixtures/."""

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
