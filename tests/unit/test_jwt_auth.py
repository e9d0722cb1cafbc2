"""Adversarial cases for JWT verification (pure: no Ray, no HTTP)."""

from __future__ import annotations

import asyncio
import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from serve_app.auth.tokens import JwtVerifier, looks_like_jwt
from serve_app.errors import Unauthenticated
from serve_app.wire import JwtSettings

NOW = int(time.time())


def _pem(public_key) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


@pytest.fixture(scope="module")
def keys():
    return {
        "acme": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "globex": ec.generate_private_key(ec.SECP256R1()),
        "initech": ed25519.Ed25519PrivateKey.generate(),
    }


@pytest.fixture(scope="module")
def verifier(keys):
    return JwtVerifier(
        {
            "acme": JwtSettings(
                issuer="https://idp.acme.test",
                audience="yolo",
                algorithms=("RS256",),
                public_keys_pem=(_pem(keys["acme"].public_key()),),
            ),
            "globex": JwtSettings(
                issuer="https://idp.globex.test",
                audience="yolo",
                algorithms=("ES256",),
                public_keys_pem=(_pem(keys["globex"].public_key()),),
            ),
            "initech": JwtSettings(
                issuer="https://idp.initech.test",
                audience="yolo",
                algorithms=("EdDSA",),
                public_keys_pem=(_pem(keys["initech"].public_key()),),
            ),
        }
    )


def _claims(**overrides):
    claims = {
        "iss": "https://idp.acme.test",
        "aud": "yolo",
        "sub": "batch-job",
        "iat": NOW,
        "exp": NOW + 300,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _verify(verifier: JwtVerifier, token: str) -> tuple[str, dict]:
    return asyncio.run(verifier.verify(token))


def _token(key, alg="RS256", **claims) -> str:
    return jwt.encode(_claims(**claims), key, algorithm=alg)


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_each_algorithm_of_the_allowlist_verifies(verifier, keys):
    assert _verify(verifier, _token(keys["acme"]))[0] == "acme"
    assert (
        _verify(verifier, _token(keys["globex"], "ES256", iss="https://idp.globex.test"))[0]
        == "globex"
    )
    assert (
        _verify(verifier, _token(keys["initech"], "EdDSA", iss="https://idp.initech.test"))[0]
        == "initech"
    )


def _refused(verifier, token: str) -> str:
    with pytest.raises(Unauthenticated) as err:
        _verify(verifier, token)
    return err.value.message


def test_alg_none_is_refused(verifier):
    token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}."
    _refused(verifier, token)


def test_hs256_signed_with_the_public_key_is_refused(verifier, keys):
    public_pem = _pem(keys["acme"].public_key()).encode()
    header = _b64({"alg": "HS256", "typ": "JWT"})
    payload = _b64(_claims())
    import hashlib
    import hmac

    sig = hmac.new(public_pem, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    token = f"{header}.{payload}.{base64.urlsafe_b64encode(sig).rstrip(b'=').decode()}"
    _refused(verifier, token)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": NOW - 3600},  # expired
        {"nbf": NOW + 3600},  # not yet valid
        {"aud": "someone-else"},
        {"iss": "https://evil.test"},
        {"exp": None},  # missing exp
        {"sub": None},
        {"iat": None},
    ],
    ids=["expired", "not-yet-valid", "wrong-aud", "wrong-iss", "no-exp", "no-sub", "no-iat"],
)
def test_bad_claims_are_refused_with_one_message(verifier, keys, claims):
    message = _refused(verifier, _token(keys["acme"], **claims))
    assert message == _refused(verifier, "garbage.garbage.garbage")


def test_another_tenants_issuer_without_its_key_gets_nothing(verifier, keys):
    # acme signs a token claiming globex's issuer (and even globex's algorithm family)
    _refused(verifier, _token(keys["acme"], "RS256", iss="https://idp.globex.test"))
    forged = ec.generate_private_key(ec.SECP256R1())
    _refused(verifier, _token(forged, "ES256", iss="https://idp.globex.test"))


def test_algorithm_comes_from_config_not_the_token(verifier, keys):
    # a valid ES256 signature by globex's key, presented under acme (RS256 only)
    _refused(verifier, _token(keys["globex"], "ES256", iss="https://idp.acme.test"))


def test_oversized_and_non_jwt_tokens(verifier):
    _refused(verifier, "a" * 10_000)
    assert looks_like_jwt("x.y.z") and not looks_like_jwt("yk_abc") and not looks_like_jwt("a.b")


def test_config_refuses_symmetric_algorithms_and_shared_issuers(keys):
    pem = _pem(keys["acme"].public_key())
    with pytest.raises(ValueError, match="algorithms"):
        JwtSettings(issuer="i", audience="a", algorithms=("HS256",), public_keys_pem=(pem,))
    with pytest.raises(ValueError, match="algorithms"):
        JwtSettings(issuer="i", audience="a", algorithms=("none",), public_keys_pem=(pem,))
    with pytest.raises(ValueError, match="PEM public key"):
        JwtSettings(issuer="i", audience="a", public_keys_pem=("-----BEGIN nonsense",))
    settings = JwtSettings(issuer="https://same", audience="a", public_keys_pem=(pem,))
    with pytest.raises(ValueError, match="two tenants"):
        JwtVerifier({"a": settings, "b": settings})


def test_tenant_table_accepts_jwts_and_api_keys_alike(keys):
    from serve_app.auth.keys import hash_api_key
    from serve_app.auth.tenants import TenantTable
    from serve_app.config import RouterConfig
    from serve_app.errors import Forbidden

    def entry(tid, status="active", issuer="https://idp.acme.test"):
        return {
            "id": tid,
            "name": tid,
            "status": status,
            "api_keys": [{"id": f"key_{tid}", "sha256": hash_api_key(f"yk_{tid}")}],
            "models": [{"name": "m", "versions": [1], "active_version": 1}],
            "default_model": "m",
            "jwt": {
                "issuer": issuer,
                "audience": "yolo",
                "public_keys_pem": [_pem(keys["acme"].public_key())],
            },
        }

    table = TenantTable(RouterConfig.model_validate({"tenants": [entry("acme")]}))
    by_token = asyncio.run(table.authenticate(_token(keys["acme"])))
    assert (by_token.tenant.id, by_token.credential) == ("acme", "jwt:batch-job")
    by_key = asyncio.run(table.authenticate("yk_acme"))
    assert (by_key.tenant.id, by_key.credential) == ("acme", "key_acme")
    with pytest.raises(Unauthenticated):
        asyncio.run(table.authenticate(_token(keys["acme"], exp=NOW - 3600)))
    suspended = TenantTable(RouterConfig.model_validate({"tenants": [entry("acme", "suspended")]}))
    with pytest.raises(Forbidden):
        asyncio.run(suspended.authenticate(_token(keys["acme"])))
    with pytest.raises(ValueError, match="one tenant only"):
        RouterConfig.model_validate({"tenants": [entry("acme"), entry("bob")]})
