"""A tenant's own defaults (``PUT /v1/policy``) change that tenant's answers on every
router replica and nobody else's; hostile policy bodies get a 4xx, never a 500.

(Named to run before test_quotas, whose last test removes the platform.)
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests

from tests.conftest import wait_for
from tests.security.conftest import assert_no_leak, error_code

STRICT = 0.95


def _put(platform, tenant: str, body: bytes, content_type: str = "application/json"):
    return requests.put(
        f"{platform.url}/v1/policy",
        data=body,
        headers={"Authorization": f"Bearer {platform.keys[tenant]}", "Content-Type": content_type},
        timeout=30,
    )


def _confidences(response: requests.Response) -> list[float]:
    assert response.status_code == 200, response.text
    return [d["confidence"] for d in response.json()["detections"]]


def _routers_of(folder: Path, request_ids: set[str]) -> set[str]:
    """Which router replicas' audit files hold these requests."""
    found = set()
    for path in folder.glob("api-*.jsonl"):
        for line in path.read_text().splitlines():
            if json.loads(line)["request_id"] in request_ids:
                found.add(path.name)
    return found


def test_defaults_reach_every_router_and_touch_no_other_tenant(platform):
    before = {t: _confidences(platform.detect(t)) for t in ("alpha", "free", "beta")}
    assert min(before["alpha"]) < STRICT < max(before["alpha"]), before["alpha"]
    saved = _put(platform, "alpha", json.dumps({"conf": STRICT}).encode())
    assert saved.status_code == 200 and saved.json()["saved"]["conf"] == STRICT
    try:
        # Every router replica applies it within TENANT_DEFAULTS_TTL_S: wait until both
        # routers (told apart by their audit files) have answered with it. A run of
        # compliant answers alone could all come from the router that took the PUT.
        applied: set[str] = set()

        def both_routers_apply() -> bool:
            for _ in range(4):
                answer = platform.detect("alpha")
                if min(_confidences(answer), default=1) >= STRICT:
                    applied.add(answer.headers["x-request-id"])
            return len(_routers_of(platform.audit_dir, applied)) == 2

        wait_for(both_routers_apply, 30, "alpha's saved default on both routers")
        answers = [platform.detect("alpha") for _ in range(20)]
        ids = {a.headers["x-request-id"] for a in answers}
        for answer in answers:
            assert all(c >= STRICT for c in _confidences(answer))
        wait_for(
            lambda: len(_routers_of(platform.audit_dir, ids)) == 2,
            30,
            "alpha's calls to be audited by both routers",
        )
        # What the operator sees when the customer says "it misses my defects".
        shown = _policy_show("alpha", platform)
        assert shown["tenant_defaults"]["conf"] == STRICT and shown["in_force"]["conf"] == STRICT
        assert _policy_show("free", platform)["tenant_defaults"]["conf"] is None
        for tenant in ("free", "beta"):  # same pool, and a dedicated tenant: unchanged
            assert _confidences(platform.detect(tenant)) == before[tenant]
            view = requests.get(
                f"{platform.url}/v1/policy",
                headers={"Authorization": f"Bearer {platform.keys[tenant]}"},
                timeout=30,
            )
            assert view.json()["saved"] == {"conf": None, "iou": None, "max_det": None}
            assert_no_leak(view, "alpha")
    finally:
        assert _put(platform, "alpha", b"{}").status_code == 200  # back to the operator's
    wait_for(
        lambda: _confidences(platform.detect("alpha")) == before["alpha"],
        15,
        "alpha's defaults reset",
    )


def _policy_show(tenant: str, platform) -> dict:
    import contextlib
    import io

    from tenant_registry.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["--db", str(platform.reg.path), "policy", "show", tenant,
                     "--cluster", "auto", "--json"])  # fmt: skip
    assert code == 0
    return dict(json.loads(out.getvalue()))


HOSTILE = {
    "huge": (b'{"conf": 0.5' + b" " * 200_000 + b"}", "application/json", 413),
    "nested": (b'{"conf": ' + b"[" * 1500 + b"]" * 1500 + b"}", "application/json", 400),
    "nan": (b'{"conf": NaN}', "application/json", 400),
    "infinity": (b'{"conf": 1e400}', "application/json", 400),
    "negative": (b'{"max_det": -1}', "application/json", 400),
    "huge-int": (b'{"max_det": 1' + b"0" * 400 + b"}", "application/json", 400),
    "null": (b"null", "application/json", 400),
    "string": (b'"conf"', "application/json", 400),
    "not-utf8": (b'{"conf": "\xff\xfe"}', "application/json", 400),
    "duplicate-keys": (b'{"conf": 0.5, "conf": 7}', "application/json", 400),
    "form": (b"conf=0.5", "application/x-www-form-urlencoded", 415),
    "no-type": (b'{"conf": 0.5}', "", 415),
    "other-tenant-field": (b'{"tenant": "beta", "conf": 0.5}', "application/json", 400),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_policy_bodies_get_a_clear_4xx(platform, case):
    body, content_type, status = HOSTILE[case]
    response = _put(platform, "free", body, content_type)
    error_code(response, status)
    assert_no_leak(response)
    assert _put(platform, "free", b"{}").status_code == 200  # the router is fine
