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


def test_the_pool_itself_keeps_the_share_whatever_the_number_of_routers(platform):
    """Routers count per replica; the pool makes it exact: pinned versions loaded through
    any number of routers (here: handle calls straight to the pool, as a third and
    fourth router would send them) displace the same tenant's own older pins, never
    another tenant's warm model."""
    from ray import serve

    from serve_app.constants import APP_NAME, SHARED_POOL_DEPLOYMENT
    from serve_app.inference.policy import InferenceParams

    pool = serve.get_deployment_handle(SHARED_POOL_DEPLOYMENT, APP_NAME)
    params = InferenceParams(0.25, 0.7, 300, None, 1280, None, None)
    assert platform.detect("free", data=IMAGE).status_code == 200  # free's model is warm
    free_model = "free/shapes@1"
    assert free_model in pool.loaded_models.remote().result()["models"]
    for version in (2, 3, 4, 5, 6):
        call = pool.options(multiplexed_model_id=f"cycler/shapes@{version}")
        answer = call.detect.remote(IMAGE, params).result()
        assert not isinstance(answer, Exception), answer
        assert answer.model == f"shapes@{version}"
        held = pool.loaded_models.remote().result()
        pinned = [m for m in held["models"] if m.startswith("cycler/") and m != "cycler/shapes@1"]
        assert len(pinned) <= SHARED_PINNED_VERSIONS, held
        assert free_model in held["models"], held  # never evicted for cycler's pins
        assert len(held["models"]) <= held["max_models"]
    assert sorted(pinned) == ["cycler/shapes@5", "cycler/shapes@6"]
    assert platform.detect("free", data=IMAGE).status_code == 200
