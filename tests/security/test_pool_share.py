"""One shared-tier tenant pinning its old versions one after another cannot keep loading
them into the shared pool: past its share it gets a 429 that says when a slot frees and
what to do instead (inference/pool_share.py). The share is kept per router replica: with
two routers, five distinct pinned versions mean at least one router saw three."""

from __future__ import annotations

from serve_app.constants import SHARED_PINNED_VERSIONS
from tests.platform_app import IMAGE
from tests.security.conftest import assert_no_leak, error_code


def test_a_tenant_cycling_its_versions_gets_its_share_and_no_more(platform):
    assert SHARED_PINNED_VERSIONS == 2
    answers = [platform.detect("cycler", data=IMAGE, params={"version": v}) for v in range(2, 7)]
    statuses = [r.status_code for r in answers]
    assert set(statuses) == {200, 429} and statuses[:2] == [200, 200], statuses
    for refused in (r for r in answers if r.status_code == 429):
        assert error_code(refused, 429) == "quota_exceeded"
        assert "dedicated deployment" in refused.json()["error"]["message"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert_no_leak(refused)
    answered = [r.json()["model"] for r in answers if r.status_code == 200]
    assert answered[:2] == ["shapes@2", "shapes@3"]
    # its active version still answers, and another tenant on the same pool is untouched
    assert platform.detect("cycler", data=IMAGE).status_code == 200
    assert [platform.detect("free", data=IMAGE).status_code for _ in range(3)] == [200] * 3
