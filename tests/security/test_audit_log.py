"""The audit log over real HTTP: one parseable line per call with the fields an auditor
needs, matching the X-Request-Id the client got, and no secret anywhere in any log."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt

from tests.conftest import wait_for
from tests.platform_app import IMAGE
from tests.security.conftest import ALPHA_ISSUER, AUDIENCE

FIELDS = {
    "ts", "request_id", "tenant", "credential", "source_ip", "action", "model", "version",
    "outcome", "status", "latency_ms",
}  # fmt: skip


def audit_lines(folder: Path) -> dict[str, dict]:
    out = {}
    for path in folder.glob("api-*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)  # every line parses
            assert set(record) == FIELDS, record
            out[record["request_id"]] = record
    return out


def test_every_call_has_an_audit_line_and_no_secret_is_logged(platform, idp_keys):
    now = int(time.time())
    token = jwt.encode(
        {"iss": ALPHA_ISSUER, "aud": AUDIENCE, "sub": "nightly", "iat": now, "exp": now + 300},
        idp_keys["alpha"],
        algorithm="RS256",
    )
    calls = {
        "good key": platform.detect("free"),
        "bad key": platform.post("yk_" + "Z" * 43),
        "jwt": platform.post(token),
        "garbage": platform.detect("free", data=b"\x00" * 100),
        "crafted request id": platform.detect(
            "free", headers={"X-Request-Id": 'evil","tenant":"beta","x":"'}
        ),
    }
    rated = [platform.detect("rated") for _ in range(6)]
    calls["quota hit"] = next(r for r in rated if r.status_code == 429)
    ids = {name: r.headers["x-request-id"] for name, r in calls.items()}
    wait_for(lambda: set(ids.values()) <= set(audit_lines(platform.audit_dir)), 30, "audit lines")
    lines = audit_lines(platform.audit_dir)

    good = lines[ids["good key"]]
    assert (good["tenant"], good["credential"]) == ("free", platform.key_ids["free"])
    assert (good["action"], good["outcome"], good["status"]) == ("POST /v1/detect", "ok", 200)
    assert (good["model"], good["version"]) == ("shapes", "1")
    assert good["source_ip"] == "127.0.0.1" and good["latency_ms"] > 0
    assert good["ts"].endswith("Z")
    bad = lines[ids["bad key"]]
    assert (bad["tenant"], bad["credential"], bad["status"]) == ("-", "-", 401)
    assert bad["outcome"] == "unauthenticated"
    by_token = lines[ids["jwt"]]
    assert (by_token["tenant"], by_token["credential"]) == ("alpha", "jwt:nightly")
    assert lines[ids["garbage"]]["outcome"] == "unsupported_media_type"
    quota = lines[ids["quota hit"]]
    assert (quota["tenant"], quota["status"], quota["outcome"]) == ("rated", 429, "quota_exceeded")
    assert lines[ids["crafted request id"]]["tenant"] == "free"

    # No key, token or image byte in any file this run's platform wrote.
    secrets = [*platform.keys.values(), token, "yk_" + "Z" * 43]
    chunk = IMAGE[300:340]
    logs = [*platform.audit_dir.glob("*"), *Path("/tmp/ray/session_latest/logs").rglob("*")]
    for path in logs:
        if not path.is_file():
            continue
        data = path.read_bytes()
        for secret in secrets:
            assert secret.encode() not in data, (path, secret[:8])
        assert chunk not in data and chunk.hex().encode() not in data, path
