"""A field of the API server's answer meshbot cannot do without: missing, it is a meshbot error
that names the field and the object (a stand-in once made meshbot crash with a KeyError)."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.domain.server_fields import resource_version
from meshbot.errors import MeshInvalid


def test_the_resource_version_is_read() -> None:
    assert resource_version({"metadata": {"resourceVersion": "812"}}, "VirtualService a/b") == "812"


@pytest.mark.parametrize("obj", [
    {},
    {"metadata": None},
    {"metadata": {}},
    {"metadata": {"resourceVersion": ""}},
    {"metadata": {"resourceVersion": 812}},
])
def test_a_missing_resource_version_says_what_and_where(obj: dict[str, Any]) -> None:
    with pytest.raises(MeshInvalid) as err:
        resource_version(obj, "VirtualService production/checkout")
    assert err.value.message.startswith(
        "VirtualService production/checkout as the Kubernetes API returned it has no "
        "metadata.resourceVersion")
    assert "changed nothing" in err.value.message
