"""JWT bearer tokens over HTTP: every way a token is commonly forged or misused.

Every refusal is the same 401 with the same body, so a caller cannot tell which
check failed, and nothing in it names a tenant.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import jwt
import pytest
import requests

from serve_app.constants import JWKS_MIN_REFETCH_S
from tests.conftest import wait_for
from tests.security.conftest import (
    ALPHA_ISSUER,
    AUDIENCE,
    GAMMA_ISSUER,
    assert_no_leak,
    error_code,
    public_jwk,
    public_pem,
)


def claims(issuer: str = ALPHA_ISSUER, **overrides) -> dict:
    now = int(time.time())
    out = {"iss": issuer, "aud": AUDIENCE, "sub": "nightly", "iat": now, "exp": now + 300}
    out.update(overrides)
    return {k: v for k, v in out.items() if v is not None}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(payload: dict, alg: str = "none") -> str:
    header = _b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(payload).encode())}."


def hs256_with_public_key(private_key) -> str:
    """The classic key-confusion forgery: HMAC "signed" with the RS public key (PEM bytes).

    PyJWT refuses to *create* this (it knows a PEM is not an HMAC secret), so it is
    assembled by hand, exactly as an attacker would.
    """
    import hashlib
    import hmac

    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims()).encode())
    mac = hmac.new(public_pem(private_key).encode(), f"{header}.{body}".encode(), hashlib.sha256)
    return f"{header}.{body}.{_b64(mac.digest())}"


def test_a_valid_token_of_the_tenants_idp_is_accepted(platform, idp_keys):
    token = jwt.encode(claims(), idp_keys["alpha"], algorithm="RS256")
    assert platform.post(token).status_code == 200
    models = requests.get(
        f"{platform.url}/v1/models", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )
    assert [m["name"] for m in models.json()["models"]] == ["shapes"]


FORGERIES = {
    "alg-none": lambda k: unsigned(claims()),
    "alg-None-capitalised": lambda k: unsigned(claims(), alg="None"),
    "hs256-with-the-public-key": lambda k: hs256_with_public_key(k["alpha"]),
    "expired": lambda k: jwt.encode(
        claims(exp=int(time.time()) - 600), k["alpha"], algorithm="RS256"
    ),
    "not-yet-valid": lambda k: jwt.encode(
        claims(nbf=int(time.time()) + 600), k["alpha"], algorithm="RS256"
    ),
    "wrong-audience": lambda k: jwt.encode(claims(aud="other"), k["alpha"], algorithm="RS256"),
    "wrong-issuer": lambda k: jwt.encode(
        claims(issuer="https://idp.evil.test"), k["alpha"], algorithm="RS256"
    ),
    "missing-exp": lambda k: jwt.encode(claims(exp=None), k["alpha"], algorithm="RS256"),
    "missing-sub": lambda k: jwt.encode(claims(sub=None), k["alpha"], algorithm="RS256"),
    "missing-iat": lambda k: jwt.encode(claims(iat=None), k["alpha"], algorithm="RS256"),
    # the tenant is bound to the issuer's keys: naming alpha's issuer needs alpha's key
    "alpha-issuer-attacker-key": lambda k: jwt.encode(claims(), k["attacker"], algorithm="RS256"),
    "alpha-issuer-gamma-key": lambda k: jwt.encode(claims(), k["gamma"], algorithm="RS256"),
    "gamma-issuer-alpha-key": lambda k: jwt.encode(
        claims(GAMMA_ISSUER), k["alpha"], algorithm="RS256", headers={"kid": "g1"}
    ),
    "signature-stripped": lambda k: (
        jwt.encode(claims(), k["alpha"], algorithm="RS256").rsplit(".", 1)[0] + "."
    ),
    "payload-swapped": lambda k: ".".join(
        [
            jwt.encode(claims(), k["alpha"], algorithm="RS256").split(".")[0],
            _b64(json.dumps(claims(sub="admin", exp=int(time.time()) + 10**6)).encode()),
            jwt.encode(claims(), k["alpha"], algorithm="RS256").split(".")[2],
        ]
    ),
    "garbage-three-parts": lambda k: "a.b.c",
    "huge": lambda k: "x" * 9000 + ".a.b",
}


@pytest.mark.parametrize("case", sorted(FORGERIES))
def test_forged_and_invalid_tokens_get_one_401(platform, idp_keys, case):
    reference = platform.post("yk_not_a_real_key").json()  # for the body comparison
    token = FORGERIES[case](idp_keys)
    response = platform.post(token)
    assert error_code(response, 401) == "unauthenticated"
    body = response.json()
    assert body["error"]["message"].startswith("invalid token")
    assert reference["error"]["code"] == body["error"]["code"]
    assert_no_leak(response, "alpha", "Alpha", "gamma", "Gamma", "beta", "widgets")


def test_a_valid_token_cannot_reach_another_tenants_model(platform, idp_keys):
    token = jwt.encode(claims(), idp_keys["alpha"], algorithm="RS256")
    theirs = platform.post(token, params={"model": "widgets"})
    missing = platform.post(token, params={"model": "nonexistent"})
    assert error_code(theirs, 404) == "unknown_model"
    assert theirs.content == missing.content
    assert_no_leak(theirs)


def test_a_jwks_key_verifies_and_a_kid_flood_stays_bounded(platform, idp_keys, jwks_server):
    good = jwt.encode(
        claims(GAMMA_ISSUER), idp_keys["gamma"], algorithm="RS256", headers={"kid": "g1"}
    )
    # A router replica fetches the document on its first gamma token.
    wait_for(lambda: platform.post(good).status_code == 200, 60, "gamma's JWKS to be fetched")
    started, before = time.monotonic(), jwks_server.fetches

    def forged(_: int) -> int:
        token = jwt.encode(
            claims(GAMMA_ISSUER),
            idp_keys["attacker"],
            algorithm="RS256",
            headers={"kid": f"made-up-{uuid.uuid4().hex}"},
        )
        return platform.post(token).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(forged, range(200)))
    elapsed = time.monotonic() - started
    assert codes == [401] * 200
    # Per router replica: its first fetch (if the flood is its first gamma traffic), then
    # at most one refetch per JWKS_MIN_REFETCH_S, whatever the flood.
    allowed = 2 * (1 + int(elapsed // JWKS_MIN_REFETCH_S))
    assert jwks_server.fetches - before <= allowed, (jwks_server.fetches - before, elapsed)
    assert platform.post(good).status_code == 200  # the real key still works


def test_a_rotated_jwks_key_is_accepted_after_the_refetch_interval(platform, idp_keys, jwks_server):
    from cryptography.hazmat.primitives.asymmetric import rsa

    new_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwks_server.keys = [public_jwk(idp_keys["gamma"], "g1"), public_jwk(new_key, "g2")]
    token = jwt.encode(claims(GAMMA_ISSUER), new_key, algorithm="RS256", headers={"kid": "g2"})
    # Both routers must pick g2 up; a request lands on either, so ask until several
    # answers in a row are 200 (the wait is bounded by the refetch interval).
    streak = {"n": 0}

    def accepted_everywhere() -> bool:
        streak["n"] = streak["n"] + 1 if platform.post(token).status_code == 200 else 0
        return streak["n"] >= 8

    wait_for(accepted_everywhere, JWKS_MIN_REFETCH_S * 2 + 30, "the rotated key to be accepted")
