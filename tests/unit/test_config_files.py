"""The checked-in Serve config files are valid for Serve and for this application."""

from __future__ import annotations

import copy

import pytest
import yaml
from pydantic import ValidationError

from serve_app.auth.keys import hash_api_key
from serve_app.config_file import ServeConfigFile, load_serve_config
from tests.conftest import DEMO_KEYS, ROOT

CONFIGS = [
    ROOT / "configs" / name for name in ("serve.local.yaml", "serve.gpu.yaml", "serve.tls.yaml")
]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_is_accepted_by_serves_own_schema_and_ours(path):
    from ray.serve.schema import ServeDeploySchema

    raw = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(raw)
    parsed = load_serve_config(path)
    assert parsed.app().import_path == "serve_app.app:build_app"


def test_local_config_serves_three_demo_tenants_with_only_the_hashes_of_their_keys():
    text = (ROOT / "configs" / "serve.local.yaml").read_text()
    app = load_serve_config(ROOT / "configs" / "serve.local.yaml").app()
    assert [t.id for t in app.args.tenants] == ["demo"]  # the one dedicated deployment
    router = next(d for d in app.deployments if d.name == "router")
    tenants = {t["id"]: t for t in router.user_config["tenants"]}
    assert {t: tenants[t]["tier"] for t in tenants} == {
        "demo": "dedicated", "acme": "shared", "globex": "shared"
    }  # fmt: skip
    for tenant, key in DEMO_KEYS.items():
        assert key not in text.replace(f"`{key}`", "")
        assert tenants[tenant]["api_keys"] == [{"id": f"key_{tenant}", "sha256": hash_api_key(key)}]
    # different models on the pool, and a tight quota on one tenant
    pool = next(d for d in app.deployments if d.name == "shared-pool").user_config
    assert pool["models"] == {
        "acme/parts@1": "file://models/demo/triangles/1",
        "globex/shapes@1": "file://models/demo/shapes/1",
    }
    assert tenants["globex"]["quota"]["requests_per_s"] == 1
    assert tenants["globex"]["quota"]["burst"] == 2


def test_only_the_local_config_accepts_the_public_demo_keys():
    """The demo keys are printed in the README and the tour: a config that faces a network
    (TLS, GPU, the RayService) must not accept them."""
    for key in DEMO_KEYS.values():
        digest = hash_api_key(key)
        for path in [*CONFIGS, ROOT / "kuberay-cluster.yaml"]:
            assert (digest in path.read_text()) == (path.name == "serve.local.yaml"), path.name


def test_gpu_config_has_three_fractional_tenants_and_one_whole_gpu():
    app = load_serve_config(ROOT / "configs" / "serve.gpu.yaml").app()
    gpus = {t.id: t.resources.num_gpus for t in app.args.tenants}
    assert sorted(gpus.values()) == [0.25, 0.25, 0.5, 1.0]


def _raw():
    return yaml.safe_load((ROOT / "configs" / "serve.local.yaml").read_text())


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda r: r["applications"][0]["deployments"][0].update(num_replica=2), "num_replica"),
        (
            lambda r: r["applications"][0]["args"]["tenants"][0]["autoscaling"].update(
                target_ongoing_request=3
            ),
            "target_ongoing_request",
        ),
        (
            lambda r: r["applications"][0]["deployments"].append({"name": "tenant-ghost"}),
            "tenant-ghost",
        ),
        (
            lambda r: r["applications"][0]["deployments"][1]["user_config"]["models"].clear(),
            "demo/shapes@1",
        ),
        (lambda r: r["applications"][0]["args"]["tenants"][0].update(id="Bad Id"), "id"),
        (
            lambda r: r["applications"][0]["args"]["tenants"][0]["resources"].update(num_gpus=1.5),
            "whole number",
        ),
        (
            lambda r: r["applications"][0]["runtime_env"].update(env_var={"A": "1"}),
            "runtime_env.env_var",
        ),
        (lambda r: r["http_options"].update(prot=8001), "http_options.prot"),
        (
            lambda r: r["applications"][0]["deployments"][0]["user_config"].update(tenantz=[]),
            "tenantz",
        ),
    ],
)
def test_typos_and_inconsistencies_fail_loudly(mutate, needle):
    raw = copy.deepcopy(_raw())
    mutate(raw)
    with pytest.raises(ValidationError) as err:
        ServeConfigFile.model_validate(raw)
    assert needle in str(err.value)
