from __future__ import annotations

import copy

import pytest
import yaml

from serve_app.auth.keys import hash_api_key
from tenant_registry.errors import InvalidInput
from tenant_registry.records import ModelVersion
from tenant_registry.render import render_config, render_registry, to_yaml, validate_config
from tenant_registry.store import Registry

V1 = ModelVersion(
    version=1,
    uri="file://models/demo/shapes/1",
    architecture="yolov8n",
    sha256="ab" * 32,
    created_at="t",
)
SOURCE = {"uri": V1.uri, "sha256": V1.sha256}


@pytest.fixture
def reg(tmp_path):
    """A registry rendered the way tenants are listed in the config (the directory off:
    what a cluster without a shared store runs); the directory's render is tested below."""
    with Registry(tmp_path / "r.db") as registry:
        off = registry.platform().model_copy(update={"tenant_directory": False})
        registry.set_platform(off)
        yield registry


def _render(reg):
    return render_config(reg.tenants(), reg.platform())


def _app(config):
    return config["applications"][0]


def _user_config(config, name):
    return next(d for d in _app(config)["deployments"] if d["name"] == name)["user_config"]


def test_empty_registry_renders_a_valid_app_with_router_and_pool(reg):
    config = _render(reg)
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)
    validate_config(config)
    assert _app(config)["args"]["tenants"] == []
    assert [d["name"] for d in _app(config)["deployments"]] == ["router", "shared-pool"]
    assert _user_config(config, "router") == {"tenants": [], "audit_dir": "var/audit"}


def test_tiers_keys_and_catalogs(reg):
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    reg.create_tenant("bigco", "BigCo", "dedicated", ("shapes", V1))
    reg.set_resources("bigco", num_gpus=0.5)
    old, _ = reg.issue_key("acme")
    _, new_key = reg.issue_key("acme")
    reg.revoke_key(old.key_id)
    reg.set_status("bigco", "suspended")
    config = _render(reg)
    args = _app(config)["args"]
    assert [t["id"] for t in args["tenants"]] == ["bigco"]
    assert args["tenants"][0]["resources"]["num_gpus"] == 0.5
    router = {t["id"]: t for t in _user_config(config, "router")["tenants"]}
    assert router["acme"]["tier"] == "shared" and router["bigco"]["status"] == "suspended"
    assert [k["sha256"] for k in router["acme"]["api_keys"]] == [hash_api_key(new_key)]
    # the registry's digest travels with each URI: the detector checks the bytes against it
    assert _user_config(config, "shared-pool")["models"] == {"acme/shapes@1": SOURCE}
    assert _user_config(config, "tenant-bigco")["models"] == {"bigco/shapes@1": SOURCE}


def test_shared_tier_changes_leave_args_alone_so_nothing_restarts(reg):
    reg.create_tenant("bigco", "BigCo", "dedicated", ("shapes", V1))
    before = copy.deepcopy(_app(_render(reg))["args"])
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    reg.issue_key("acme")
    reg.set_quota("acme", requests_per_s=3)
    reg.set_policy("acme", conf=0.5)
    reg.set_status("acme", "suspended")
    reg.issue_key("bigco")
    reg.add_model_version(
        "bigco", "shapes", ModelVersion(**{**V1.__dict__, "version": 2}), activate=True
    )
    after = _render(reg)
    assert _app(after)["args"] == before
    reg.create_tenant("newco", "NewCo", "dedicated", ("shapes", V1))
    assert _app(_render(reg))["args"] != before  # a dedicated tenant is an args change


def test_rendering_is_deterministic_and_round_trips_through_yaml(reg):
    reg.create_tenant("zeta", 'Zeta: {"x": [1]} # not a comment', "shared", ("shapes", V1))
    reg.create_tenant("alpha", "Alpha", "dedicated", ("shapes", V1))
    text = to_yaml(_render(reg))
    assert text == to_yaml(_render(reg))
    loaded = yaml.safe_load(text)
    names = [t["name"] for t in _user_config(loaded, "router")["tenants"]]
    assert names == ["Alpha", 'Zeta: {"x": [1]} # not a comment']
    validate_config(loaded)


def test_tenant_without_an_active_model_is_left_out(reg):
    reg.create_tenant("bare", "Bare", "dedicated")
    config = _render(reg)
    assert _user_config(config, "router")["tenants"] == [] and _app(config)["args"]["tenants"] == []


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda c: c["applications"][0]["deployments"][1].update(num_replica=3), "num_replica"),
        (lambda c: c["applications"][0].update(import_path="evil:app"), "import_path"),
        (lambda c: c.update(http_option={}), "http_option"),
        (
            lambda c: c["applications"][0]["deployments"][0]["user_config"]["tenants"][0].update(
                tier="gold"
            ),
            "tier",
        ),
    ],
)
def test_hand_written_mistakes_are_named(reg, mutate, needle):
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    config = _render(reg)
    mutate(config)
    with pytest.raises(InvalidInput) as err:
        validate_config(config)
    assert needle in str(err.value)


def test_set_tier_moves_the_catalog_and_changes_args(reg):
    reg.create_tenant("acme", "Acme", "shared", ("shapes", V1))
    shared = _render(reg)
    assert _user_config(shared, "shared-pool")["models"] == {"acme/shapes@1": SOURCE}
    reg.set_tier("acme", "dedicated")
    dedicated = _render(reg)
    assert [t["id"] for t in _app(dedicated)["args"]["tenants"]] == ["acme"]
    assert _user_config(dedicated, "shared-pool")["models"] == {}
    moved = _user_config(dedicated, "tenant-acme")
    assert (moved["models"], moved["preload"]) == ({"acme/shapes@1": SOURCE}, ["acme/shapes@1"])


def test_batching_reaches_every_detector_with_room_for_a_batch(tmp_path):
    from serve_app.config import BatchSettings

    reg = Registry(tmp_path / "r.db")
    reg.set_platform(
        reg.platform().model_copy(
            update={"batching": BatchSettings(max_batch_size=32, batch_wait_timeout_s=0.02)}
        )
    )
    reg.create_tenant("bigco", "BigCo", "dedicated", ("shapes", V1))
    config = render_config(reg.tenants(), reg.platform())
    detectors = [d for d in _app(config)["deployments"] if d["name"] != "router"]
    assert {d["name"] for d in detectors} == {"shared-pool", "tenant-bigco"}
    for deployment in detectors:
        assert deployment["user_config"]["batching"] == {
            "max_batch_size": 32,
            "batch_wait_timeout_s": 0.02,
        }
        assert deployment["max_ongoing_requests"] >= 32


def test_batch_settings_are_bounded():
    import pytest

    from serve_app.config import BatchSettings

    for bad in ({"max_batch_size": 0}, {"max_batch_size": 65}, {"batch_wait_timeout_s": -1}):
        with pytest.raises(ValueError):
            BatchSettings(**bad)


def test_with_the_directory_the_config_names_only_dedicated_tenants(tmp_path, monkeypatch):
    """The default: shared tenants reach the routers and the pool through the directory,
    so none of them is read, rendered or pushed; a dedicated tenant keeps its deployment
    (Ray needs it) and its own catalog."""
    with Registry(tmp_path / "r.db") as reg:
        assert reg.platform().tenant_directory
        for i in range(20):
            reg.create_tenant(f"s{i:02d}", "Shared", "shared", ("shapes", V1))
            reg.issue_key(f"s{i:02d}")
        reg.create_tenant("bigco", "BigCo", "dedicated", ("shapes", V1))
        read = []
        tenants = reg.tenants
        monkeypatch.setattr(reg, "tenants", lambda tier=None: read.append(tier) or tenants(tier))
        config = render_registry(reg)
        before = to_yaml(config)
        reg.create_tenant("newco", "NewCo", "shared", ("shapes", V1))
        reg.issue_key("s03")
        reg.set_status("s07", "suspended")
        assert to_yaml(render_registry(reg)) == before  # nothing Ray needs changed
    assert read and set(read) == {"dedicated"}
    router = _user_config(config, "router")
    assert router["tenants"] == [] and router["directory"]["uri"].endswith("/_directory")
    pool = _user_config(config, "shared-pool")
    assert (pool["models"], pool["preload"], pool["active"]) == ({}, [], [])
    assert _user_config(config, "tenant-bigco")["models"] == {"bigco/shapes@1": SOURCE}
    assert [t["id"] for t in _app(config)["args"]["tenants"]] == ["bigco"]
