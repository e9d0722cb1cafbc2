"""A router's tenant table following the tenant directory (``auth.followed_table``) and
a detector's model sources (``inference.model_sources``): real registry, real file
store, the router's asyncio task."""

from __future__ import annotations

import asyncio

import pytest

from serve_app.auth.followed_table import FollowedTable
from serve_app.auth.jwks import JwksPool
from serve_app.config import DetectorConfig, DirectorySpec, RouterConfig
from serve_app.errors import Forbidden, Unauthenticated
from serve_app.inference.model_sources import ModelSources
from tenant_registry.publish import publish
from tenant_registry.store import Registry
from tests.unit.test_directory import V1


@pytest.fixture
def reg(tmp_path):
    with Registry(tmp_path / "r.db") as registry:
        yield registry


def _store(tmp_path):
    from serve_app.blobs import FileStore

    (tmp_path / "dir").mkdir(exist_ok=True)
    return FileStore(tmp_path / "dir")


async def _until(condition, timeout_s: float = 5.0) -> None:
    """Wait for ``condition`` while the follower's task runs on this loop."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "the follower did not apply it"
        await asyncio.sleep(POLL_S)


POLL_S = 0.02


def test_the_table_follows_publishes_and_listed_tenants_win(reg, tmp_path):
    store = _store(tmp_path)
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    _, acme_key = reg.issue_key("acme")
    publish(reg, store)
    spec = DirectorySpec(uri=f"file://{tmp_path}/dir", poll_s=0.05)

    async def scenario() -> None:
        followed = FollowedTable(JwksPool())
        await followed.configure(RouterConfig(directory=spec))
        assert (await followed.table.authenticate(acme_key)).tenant.id == "acme"
        _, beta_key = reg.issue_key(reg.create_tenant("beta", "Beta", "shared", ("shapes", V1)).id)
        reg.set_status("acme", "suspended")
        publish(reg, store)
        await _until(lambda: "beta" in {t.id for t in followed.table.tenants()})
        assert (await followed.table.authenticate(beta_key)).tenant.id == "beta"
        with pytest.raises(Forbidden):
            await followed.table.authenticate(acme_key)
        # a tenant listed in the user_config wins over the directory's record
        listed = followed.table.tenants()[0].model_copy(update={"id": "beta", "status": "active"})
        await followed.configure(RouterConfig(tenants=[listed], directory=spec))
        assert {t.id: t.status for t in followed.table.tenants()}["beta"] == "active"
        with pytest.raises(Unauthenticated):  # the listed beta has acme's old key list
            await followed.table.authenticate(beta_key)
        await followed.configure(RouterConfig())  # no directory: the task stops
        assert len(followed.table) == 0
        await followed.close()

    asyncio.run(scenario())


def test_a_detector_finds_new_versions_in_the_directory(reg, tmp_path):
    store = _store(tmp_path)
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    publish(reg, store)
    sources = ModelSources()
    sources.configure(DetectorConfig(directory=DirectorySpec(uri=f"file://{tmp_path}/dir")))
    assert sources.source("acme/shapes@1").uri == V1.uri
    assert sources.active() == {"acme/shapes@1"}
    reg.create_tenant("beta", "Beta", "shared", ("shapes", V1))
    assert sources.source("beta/shapes@1") is None  # not published yet
    publish(reg, store)
    assert sources.source("beta/shapes@1").sha256 == V1.sha256  # read on the miss
    assert sources.active() == {"acme/shapes@1", "beta/shapes@1"}
    assert ModelSources().source("acme/shapes@1") is None  # no directory: its config only
