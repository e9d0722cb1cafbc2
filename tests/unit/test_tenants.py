from __future__ import annotations

import asyncio

import pytest

from serve_app.auth.keys import hash_api_key
from serve_app.auth.tenants import TenantTable
from serve_app.config import RouterConfig, TenantEntry
from serve_app.errors import BadParameter, Forbidden, Unauthenticated, UnknownModel
from serve_app.inference.catalog import catalog, select_model


def _config(**acme_overrides) -> RouterConfig:
    acme = {
        "id": "acme",
        "name": "Acme",
        "api_keys": [{"id": "key_acme", "sha256": hash_api_key("yk_acme")}],
        "models": [
            {"name": "pcb", "versions": [1, 2, 3], "active_version": 2},
            {"name": "shapes", "versions": [1], "active_version": 1},
        ],
        "default_model": "pcb",
    }
    acme.update(acme_overrides)
    globex = {
        "id": "globex",
        "name": "Globex",
        "api_keys": [{"id": "key_globex", "sha256": hash_api_key("yk_globex")}],
        "models": [{"name": "secret", "versions": [9], "active_version": 9}],
        "default_model": "secret",
    }
    return RouterConfig.model_validate({"tenants": [acme, globex]})


def authenticate(table: TenantTable, credential: str) -> TenantEntry:
    return asyncio.run(table.authenticate(credential)).tenant


def test_key_selects_the_tenant():
    table = TenantTable(_config())
    assert authenticate(table, "yk_acme").id == "acme"
    assert authenticate(table, "yk_globex").id == "globex"
    with pytest.raises(Unauthenticated):
        authenticate(table, "yk_nobody")


def test_suspended_tenant_is_403():
    table = TenantTable(_config(status="suspended"))
    with pytest.raises(Forbidden, match="suspended"):
        authenticate(table, "yk_acme")


def test_model_selection_defaults_to_active_version():
    acme = authenticate(TenantTable(_config()), "yk_acme")
    assert select_model(acme, {}).id_for("acme") == "acme/pcb@2"
    assert select_model(acme, {"version": "3"}).id_for("acme") == "acme/pcb@3"
    assert select_model(acme, {"model": "shapes"}).id_for("acme") == "acme/shapes@1"


def test_other_tenants_model_is_indistinguishable_from_a_missing_one():
    acme = authenticate(TenantTable(_config()), "yk_acme")
    with pytest.raises(UnknownModel) as theirs:
        select_model(acme, {"model": "secret"})
    with pytest.raises(UnknownModel) as missing:
        select_model(acme, {"model": "nothere"})
    with pytest.raises(UnknownModel) as their_version:
        select_model(acme, {"model": "secret", "version": "9"})
    assert theirs.value.message == missing.value.message == their_version.value.message
    assert "secret" not in theirs.value.message


def test_unknown_version_is_404_and_malformed_version_400():
    acme = authenticate(TenantTable(_config()), "yk_acme")
    with pytest.raises(UnknownModel):
        select_model(acme, {"version": "4"})
    with pytest.raises(BadParameter):
        select_model(acme, {"version": "latest"})


def test_catalog_lists_only_the_callers_models():
    acme = authenticate(TenantTable(_config()), "yk_acme")
    body = catalog(acme)
    assert [m["name"] for m in body["models"]] == ["pcb", "shapes"]
    assert body["models"][0] == {
        "name": "pcb",
        "versions": [1, 2, 3],
        "active_version": 2,
        "default": True,
    }
    assert "secret" not in str(body)


def test_a_key_hash_may_not_belong_to_two_tenants():
    raw = _config().model_dump()
    raw["tenants"][1]["api_keys"] = [
        {"id": "key_other", "sha256": raw["tenants"][0]["api_keys"][0]["sha256"]}
    ]
    with pytest.raises(ValueError, match="one tenant"):
        RouterConfig.model_validate(raw)


def _entry(tenant: str, *keys: str, **overrides) -> TenantEntry:
    return TenantEntry.model_validate(
        {
            "id": tenant,
            "name": tenant.title(),
            "api_keys": [{"id": f"key_{k}", "sha256": hash_api_key(k)} for k in keys],
            "models": [{"name": "shapes", "versions": [1], "active_version": 1}],
            "default_model": "shapes",
            **overrides,
        }
    )


def test_one_tenant_changes_in_place_and_the_others_are_untouched():
    """The tenant directory's changes: put and remove one tenant at a time."""
    table = TenantTable(_config())
    table.put(_entry("newco", "yk_new1"))
    assert authenticate(table, "yk_new1").id == "newco" and len(table) == 3
    table.put(_entry("newco", "yk_new2"))  # yk_new1 revoked, yk_new2 issued
    with pytest.raises(Unauthenticated):
        authenticate(table, "yk_new1")
    assert authenticate(table, "yk_new2").id == "newco"
    table.put(_entry("acme", "yk_acme", status="suspended"))
    with pytest.raises(Forbidden):
        authenticate(table, "yk_acme")
    table.remove("newco")
    with pytest.raises(Unauthenticated):
        authenticate(table, "yk_new2")
    assert authenticate(table, "yk_globex").id == "globex" and len(table) == 2
    table.remove("nobody")  # removing what is not there changes nothing
    assert len(table) == 2


def test_a_jwt_issuer_taken_by_another_tenant_leaves_the_table_unchanged():
    jwt = {"issuer": "https://idp.test", "audience": "yolo", "jwks_url": "https://idp.test/jwks"}
    table = TenantTable(_config())
    table.put(_entry("first", "yk_first", jwt=jwt))
    with pytest.raises(ValueError, match="two tenants"):
        table.put(_entry("second", "yk_second", jwt=jwt))
    assert {t.id for t in table.tenants()} == {"acme", "globex", "first"}
    with pytest.raises(Unauthenticated):
        authenticate(table, "yk_second")
