"""The tenant directory on a real cluster (issue 18): the Serve config lists no tenant;
onboarding, revocation and suspension are a publish (one file), seen by both router
replicas without a redeploy; the data plane keeps serving known tenants when the
directory is gone, and never lets an unknown credential in."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import delete_yolo_app, wait_for
from tests.platform_app import Platform

ROUNDS = 12  # requests per check: both router replicas answer some of them


@pytest.fixture(scope="module")
def app(ray_cluster, tmp_path_factory, http_port):
    delete_yolo_app()
    folder = tmp_path_factory.mktemp("directory")
    # the package's port: Serve keeps the HTTP port it started with
    platform = Platform(ray_cluster, folder / "registry.db", http_port)
    assert platform.reg.platform().tenant_directory  # the default
    platform.directory = folder / "models" / "_directory"
    platform.onboard("first")
    platform.apply()
    wait_for(lambda: platform.detect("first").status_code == 200, 300, "first to be served")
    yield platform
    delete_yolo_app()
    platform.reg.close()


def _statuses(app, tenant: str) -> set[int]:
    return {app.detect(tenant).status_code for _ in range(ROUNDS)}


def test_the_config_lists_no_tenant(app):
    from tenant_registry.render import render_registry

    config = render_registry(app.reg)
    deployments = {d["name"]: d["user_config"] for d in config["applications"][0]["deployments"]}
    assert deployments["router"]["tenants"] == []
    assert deployments["router"]["directory"]["uri"].endswith("/_directory")
    assert deployments["shared-pool"]["models"] == {}


def test_onboarding_is_a_publish_seen_by_every_router(app):
    app.onboard("second")
    assert app.detect("second").status_code == 401  # not published yet: unknown
    app.publish()  # no Serve deploy: the routers follow the directory
    wait_for(lambda: app.detect("second").status_code == 200, 10, "second to be served")
    assert _statuses(app, "second") == {200}
    assert app.detect("second").json()["model"] == "shapes@1"


def test_a_revoked_key_and_a_suspension_are_refused_on_every_router(app):
    app.onboard("third")
    app.publish()
    wait_for(lambda: _statuses(app, "third") == {200}, 10, "third to be served")
    app.reg.revoke_key(app.key_ids["third"])
    app.publish()
    # every router: a round of requests reaches both replicas
    wait_for(lambda: _statuses(app, "third") == {401}, 10, "the revocation on every router")
    app.reg.set_status("second", "suspended")
    app.publish()
    wait_for(lambda: _statuses(app, "second") == {403}, 10, "the suspension on every router")
    assert _statuses(app, "first") == {200}


def test_known_tenants_are_served_while_the_directory_is_gone(app, tmp_path):
    moved = tmp_path / "gone"
    shutil.move(app.directory, moved)
    try:
        assert _statuses(app, "first") == {200}  # fail static
        assert app.post("yk_" + "Q" * 43).status_code == 401  # never open
    finally:
        shutil.move(moved, app.directory)
    app.onboard("fourth")
    app.publish()
    wait_for(lambda: app.detect("fourth").status_code == 200, 10, "the directory to be back")
