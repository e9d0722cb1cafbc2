"""JWKS caching and its bounds (pure: a fake clock and an in-memory document source).

The HTTP side (a real JWKS server, a real router) is in tests/security.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from serve_app.auth.jwks import JwksCache, JwksError, JwksPool, http_fetch, parse_jwks
from serve_app.auth.tokens import JwtVerifier
from serve_app.constants import (
    JWKS_CACHE_TTL_S,
    JWKS_MAX_BYTES,
    JWKS_MAX_STALE_S,
    JWKS_MIN_REFETCH_S,
)
from serve_app.errors import Unauthenticated
from serve_app.wire import JwtSettings, check_jwks_url

RS = frozenset({"RS256"})
ISSUER = "https://idp.acme.test"


def rsa_jwk(private_key, kid: str | None, **extra) -> dict:
    jwk = json.loads(RSAAlgorithm.to_jwk(private_key.public_key()))
    if kid is not None:
        jwk["kid"] = kid
    return {**jwk, **extra}


class Source:
    """A JWKS document that can change, fail, or be slow; counts what it served."""

    def __init__(self, keys: list[dict]) -> None:
        self.keys = keys
        self.calls = 0
        self.fail = False
        self.delay_s = 0.0

    async def __call__(self, url: str) -> bytes:
        self.calls += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fail:
            raise JwksError("connection refused")
        return json.dumps({"keys": self.keys}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def rsa_keys():
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def _cache(source: Source, clock: Clock) -> JwksCache:
    return JwksCache("https://idp.acme.test/jwks", RS, fetch=source, clock=clock)


def test_only_asymmetric_signing_keys_are_taken(rsa_keys):
    ec_key = json.loads(ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key()))
    document = {
        "keys": [
            rsa_jwk(rsa_keys[0], "good"),
            rsa_jwk(rsa_keys[1], "enc", use="enc"),
            rsa_jwk(rsa_keys[1], "hs", alg="HS256"),
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            "not a key",
            {**ec_key, "kid": "ec"},
        ]
    }
    keys = parse_jwks(json.dumps(document).encode(), frozenset({"RS256", "ES256"}))
    assert sorted(k for k in keys if k is not None) == ["ec", "good"]


@pytest.mark.parametrize("document", [b"", b"<html>", b"[]", b'{"keys": 3}', b"\xff\xfe"])
def test_a_document_that_is_not_a_jwks_is_refused(document):
    with pytest.raises(JwksError):
        parse_jwks(document, RS)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://idp.acme.test/.well-known/jwks.json", True),
        ("http://127.0.0.1:8123/jwks", True),
        ("http://localhost/jwks", True),
        ("http://idp.acme.test/jwks", False),
        ("file:///etc/passwd", False),
        ("https:///nohost", False),
        ("ftp://idp.acme.test/jwks", False),
    ],
)
def test_jwks_urls_must_be_https_except_loopback(url, ok):
    if ok:
        assert check_jwks_url(url) == url
    else:
        with pytest.raises(ValueError, match="https"):
            check_jwks_url(url)


def test_known_kids_are_served_from_the_cache_until_the_ttl(rsa_keys):
    source, clock = Source([rsa_jwk(rsa_keys[0], "k1")]), Clock()
    cache = _cache(source, clock)
    for _ in range(50):
        assert len(asyncio.run(cache.keys_for("k1"))) == 1
    assert source.calls == 1
    clock.now += JWKS_CACHE_TTL_S
    asyncio.run(cache.keys_for("k1"))
    assert source.calls == 2


def test_a_flood_of_unknown_kids_refetches_at_most_once_per_interval(rsa_keys):
    source, clock = Source([rsa_jwk(rsa_keys[0], "k1")]), Clock()
    cache = _cache(source, clock)
    asyncio.run(cache.keys_for("k1"))
    for i in range(500):
        assert asyncio.run(cache.keys_for(f"made-up-{i}")) == []
        clock.now += 0.01  # 5 s of flood in all, under the refetch interval
    assert source.calls == 1  # the load itself was under the interval ago: no refetch
    clock.now += JWKS_MIN_REFETCH_S
    for i in range(500):
        asyncio.run(cache.keys_for(f"made-up-again-{i}"))
    assert source.calls == 2  # one refetch for the first unknown kid, none for the rest


def test_a_rotated_key_is_picked_up_on_first_sight(rsa_keys):
    source, clock = Source([rsa_jwk(rsa_keys[0], "k1")]), Clock()
    cache = _cache(source, clock)
    asyncio.run(cache.keys_for("k1"))
    clock.now += JWKS_MIN_REFETCH_S
    source.keys = [rsa_jwk(rsa_keys[0], "k1"), rsa_jwk(rsa_keys[1], "k2")]
    assert len(asyncio.run(cache.keys_for("k2"))) == 1
    assert source.calls == 2


def test_concurrent_callers_share_one_fetch(rsa_keys):
    source, clock = Source([rsa_jwk(rsa_keys[0], "k1")]), Clock()
    source.delay_s = 0.05
    cache = _cache(source, clock)

    async def many():
        return await asyncio.gather(*(cache.keys_for("k1") for _ in range(20)))

    assert all(len(keys) == 1 for keys in asyncio.run(many()))
    assert source.calls == 1


def test_an_unreachable_idp_keeps_last_keys_for_a_bounded_time(rsa_keys):
    source, clock = Source([rsa_jwk(rsa_keys[0], "k1")]), Clock()
    cache = _cache(source, clock)
    asyncio.run(cache.keys_for("k1"))
    source.fail = True
    clock.now += JWKS_CACHE_TTL_S
    assert len(asyncio.run(cache.keys_for("k1"))) == 1  # stale but usable
    clock.now += JWKS_MAX_STALE_S
    assert asyncio.run(cache.keys_for("k1")) == []
    calls = source.calls
    for _ in range(100):  # an IdP that is down is not hammered either
        asyncio.run(cache.keys_for("k1"))
    assert source.calls == calls


def test_settings_need_pem_keys_or_a_jwks_url():
    with pytest.raises(ValueError, match="public_keys_pem, jwks_url"):
        JwtSettings(issuer=ISSUER, audience="yolo")
    with pytest.raises(ValueError, match="https"):
        JwtSettings(issuer=ISSUER, audience="yolo", jwks_url="http://idp.acme.test/jwks")
    assert JwtSettings(issuer=ISSUER, audience="yolo", jwks_url="https://idp.acme.test/j").jwks_url


def _claims() -> dict:
    now = int(time.time())
    return {"iss": ISSUER, "aud": "yolo", "sub": "job", "iat": now, "exp": now + 300}


def test_verifier_uses_the_jwks_and_refuses_hmac_tricks(rsa_keys):
    source = Source(
        [
            rsa_jwk(rsa_keys[0], "k1"),
            {"kty": "oct", "kid": "hs", "k": "c3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3Nzc3M"},
        ]
    )
    pool = JwksPool(fetch=source, clock=Clock())
    settings = JwtSettings(issuer=ISSUER, audience="yolo", jwks_url="https://idp.acme.test/jwks")
    verifier = JwtVerifier({"acme": settings}, jwks=pool)
    good = jwt.encode(_claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k1"})
    assert asyncio.run(verifier.verify(good))[0] == "acme"
    no_kid = jwt.encode(_claims(), rsa_keys[0], algorithm="RS256")
    assert asyncio.run(verifier.verify(no_kid))[0] == "acme"
    hmac_token = jwt.encode(_claims(), b"s" * 32, algorithm="HS256", headers={"kid": "hs"})
    wrong_key = jwt.encode(_claims(), rsa_keys[1], algorithm="RS256", headers={"kid": "k1"})
    huge_kid = jwt.encode(_claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k" * 500})
    for token in (hmac_token, wrong_key, huge_kid):
        with pytest.raises(Unauthenticated):
            asyncio.run(verifier.verify(token))


def test_a_known_key_is_not_held_up_by_the_refresh_after_the_ttl(rsa_keys):
    source, clock = Source([rsa_jwk(rsa_keys[0], "k1")]), Clock()
    cache = _cache(source, clock)

    async def scenario() -> None:
        assert len(await cache.keys_for("k1")) == 1
        source.delay_s = 5.0  # a slow IdP
        clock.now += JWKS_CACHE_TTL_S
        started = time.perf_counter()
        assert len(await cache.keys_for("k1")) == 1  # at once, from the cache
        assert time.perf_counter() - started < 0.5
        await asyncio.sleep(0)
        assert source.calls == 2  # the refresh runs meanwhile

    asyncio.run(scenario())


def test_the_whole_fetch_has_a_deadline(rsa_keys, monkeypatch, caplog):
    """An IdP that never finishes its document: the token waiting on it gets no keys after
    the deadline, and the URL's query string (it may hold a secret) is not logged."""
    monkeypatch.setattr("serve_app.auth.jwks.JWKS_FETCH_TIMEOUT_S", 0.2)
    source, clock = Source([rsa_jwk(rsa_keys[0], "k1")]), Clock()
    source.delay_s = 60.0
    cache = JwksCache("https://idp.acme.test/jwks?api_key=SECRET", RS, fetch=source, clock=clock)
    started = time.perf_counter()
    assert asyncio.run(cache.keys_for("k1")) == []
    assert time.perf_counter() - started < 2
    assert "https://idp.acme.test/jwks" in caplog.text and "SECRET" not in caplog.text


def test_a_token_without_kid_is_tried_against_a_few_keys_only(rsa_keys):
    """Each key tried is a signature check: a kid-less token is checked against at most
    JWT_MAX_KEYS_WITHOUT_KID keys, in the document's order."""
    signer = rsa_keys[1]
    others = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(5)]
    source = Source([rsa_jwk(k, f"o{i}") for i, k in enumerate(others)] + [rsa_jwk(signer, "s")])
    settings = JwtSettings(issuer=ISSUER, audience="yolo", jwks_url="https://idp.acme.test/jwks")
    verifier = JwtVerifier({"acme": settings}, jwks=JwksPool(fetch=source, clock=Clock()))
    with pytest.raises(Unauthenticated):  # the sixth key is never tried without a kid
        asyncio.run(verifier.verify(jwt.encode(_claims(), signer, algorithm="RS256")))
    with_kid = jwt.encode(_claims(), signer, algorithm="RS256", headers={"kid": "s"})
    assert asyncio.run(verifier.verify(with_kid))[0] == "acme"


def test_the_pool_keeps_caches_across_table_rebuilds(rsa_keys):
    source = Source([rsa_jwk(rsa_keys[0], "k1")])
    pool = JwksPool(fetch=source, clock=Clock())
    settings = JwtSettings(issuer=ISSUER, audience="yolo", jwks_url="https://idp.acme.test/jwks")
    token = jwt.encode(_claims(), rsa_keys[0], algorithm="RS256", headers={"kid": "k1"})
    for _ in range(3):  # three reconfigures
        asyncio.run(JwtVerifier({"acme": settings}, jwks=pool).verify(token))
    assert source.calls == 1


class _IdP(http.server.BaseHTTPRequestHandler):
    """A loopback identity provider with one well-behaved and three hostile paths."""

    def do_GET(self) -> None:
        if self.path == "/jwks":
            body = b'{"keys": []}'
            self.send_response(200)
        elif self.path == "/huge":
            body = b" " * (JWKS_MAX_BYTES + 10)
            self.send_response(200)
        elif self.path == "/moved":
            body = b""
            self.send_response(302)
            self.send_header("Location", "http://example.invalid/jwks")
        else:
            body = b"no"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def idp():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _IdP)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_the_real_fetch_reads_a_document_and_refuses_errors_giants_and_redirects(idp):
    assert asyncio.run(http_fetch(f"{idp}/jwks")) == b'{"keys": []}'
    for path, reason in (("/gone", "HTTP 404"), ("/huge", "larger than"), ("/moved", "HTTP 302")):
        with pytest.raises(JwksError, match=reason):
            asyncio.run(http_fetch(idp + path))
    with pytest.raises(JwksError, match="fetch failed"):
        asyncio.run(http_fetch("http://127.0.0.1:9/jwks"))  # nothing listens on the discard port
