"""API keys over HTTP: revoked keys, suspended tenants, and the last-used record."""

from __future__ import annotations

import json

import pytest
import requests

from tests.conftest import wait_for
from tests.security.conftest import assert_no_leak, error_code


def test_a_revoked_key_is_refused_and_its_replacement_works(platform):
    old = platform.post(platform.keys["rotated-old"])
    assert error_code(old, 401) == "unauthenticated"
    assert_no_leak(old, "rotated", "Rotated", "beta")
    assert platform.detect("rotated").status_code == 200


def test_a_suspended_tenant_gets_403_without_its_name(platform):
    response = platform.detect("frozen")
    assert error_code(response, 403) == "forbidden"
    assert "suspended" in response.json()["error"]["message"]
    assert_no_leak(response, "frozen", "Frozen", "beta")
    models = requests.get(
        f"{platform.url}/v1/models",
        headers={"Authorization": f"Bearer {platform.keys['frozen']}"},
        timeout=30,
    )
    assert error_code(models, 403) == "forbidden"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer yk_" + "A" * 43,
        "Bearer " + "yk_" + "a" * 5000,
        "Bearer yk_\u00e4\u00f6",
        "Bearer yk_a\tb",
    ],
    ids=["none", "empty", "scheme-only", "basic", "unknown", "huge", "non-ascii", "tab"],
)
def test_missing_malformed_and_unknown_keys_are_401(platform, header):
    headers = {} if header is None else {"Authorization": header.encode("utf-8")}
    response = requests.post(f"{platform.url}/v1/detect", data=b"x", headers=headers, timeout=30)
    assert error_code(response, 401) == "unauthenticated"
    assert_no_leak(response)


def test_key_list_shows_when_each_key_was_last_used(platform, capsys):
    """`tenantctl key list --cluster` asks the ledger; the unused key says never."""
    from tenant_registry.cli import main

    assert platform.detect("free").status_code == 200
    spare_id = platform.reg.issue_key("free")[0].key_id  # issued, not applied, never used
    db = str(platform.reg.path)

    def listing() -> dict[str, str | None]:
        assert main(["--db", db, "key", "list", "free", "--cluster", "auto", "--json"]) == 0
        return {k["key_id"]: k["last_used_at"] for k in json.loads(capsys.readouterr().out)}

    used = wait_for(
        lambda: (v := listing()) and v[platform.key_ids["free"]] and v,
        30,
        "the ledger to report the key's use",
    )
    assert used[platform.key_ids["free"]].startswith("20")  # an ISO 8601 UTC time
    assert used[spare_id] is None
    assert platform.keys["free"] not in json.dumps(used)
