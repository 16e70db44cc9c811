"""The playground page's server pieces that need no browser: loopback only, its policy, its cast."""

from __future__ import annotations

from pathlib import Path

import pytest

from playground.web.app import is_loopback
from playground.web.live import CHECK_INTERVAL_S, OUTSIDER, people_of, write_playground_policy
from playground.web.server import PageServer
from policies.loader import load_policy_file


@pytest.mark.parametrize(("address", "loopback"), [
    ("127.0.0.1", True), ("127.3.4.5", True), ("::1", True), ("10.0.0.1", False),
    ("192.168.1.2", False), ("0.0.0.0", False), ("localhost", False), ("", False), (None, False),
])
def test_only_loopback_addresses_are_loopback(address: str | None, loopback: bool) -> None:
    assert is_loopback(address) is loopback


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.2"])
def test_the_page_refuses_to_listen_beyond_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback only"):
        PageServer(None, host=host)  # type: ignore[arg-type]


def test_the_playground_policy_is_the_packaged_one_checked_every_few_seconds(
        tmp_path: Path) -> None:
    policy = load_policy_file(write_playground_policy(tmp_path / "policy.yaml"))
    view = policy.service("payment-service")
    assert view is not None
    assert view.analysis.interval == CHECK_INTERVAL_S
    assert view.approvals.promote == 2  # critical, as packaged
    people = people_of(policy)
    roles = {p.role for p in people}
    assert roles == {"operator", "approver", "outsider"}
    outsider = next(p for p in people if p.role == "outsider")
    assert outsider.id == OUTSIDER and OUTSIDER not in policy.members(policy.roles)
    assert len({p.name for p in people}) == len(people)
