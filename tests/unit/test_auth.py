from __future__ import annotations

import hashlib

import pytest

from serve_app.auth.keys import KeyTable, bearer_token, generate_api_key, hash_api_key
from serve_app.errors import Unauthenticated


def test_hash_is_sha256_hex_of_the_key():
    assert hash_api_key("yk_demo_localonly") == hashlib.sha256(b"yk_demo_localonly").hexdigest()


def test_generated_keys_are_prefixed_random_and_authenticate():
    a, b = generate_api_key(), generate_api_key()
    assert a.startswith("yk_") and b.startswith("yk_") and a != b
    assert len(a) >= 40
    table = KeyTable({"acme": [("key_a", hash_api_key(a))]})
    assert table.authenticate(a) == ("acme", "key_a")


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer yk_abc", "yk_abc"), ("bearer   yk_abc ", "yk_abc"), ("BEARER yk_x", "yk_x")],
)
def test_bearer_token_parsing(header, token):
    assert bearer_token([header]) == token


@pytest.mark.parametrize(
    "header",
    [
        "", "Basic dXNlcjpwYXNz", "Bearer", "Bearer   ", "yk_abc", "Bearer\tyk_abc",
        "Bearer yk_abc\u00a0", "\u00a0Bearer yk_abc", "Bearer yk_\u00e4", "Bearer yk_a b",
        "Bearer yk_\u017fx",  # a long s: case-folds to "s" outside ASCII mode
        "Bearer yk_abc\x00", "Bearer yk_abc\r\n", "Bearer yk_a=b",
    ],
)  # fmt: skip
def test_malformed_header_is_401_naming_the_grammar(header):
    with pytest.raises(Unauthenticated) as err:
        bearer_token([header])
    assert "'Bearer <api key>'" in err.value.message
    assert 'error="invalid_request"' in err.value.headers["WWW-Authenticate"]


def test_missing_and_duplicate_headers_are_refused():
    with pytest.raises(Unauthenticated, match="missing credential"):
        bearer_token([])
    with pytest.raises(Unauthenticated, match="exactly one") as err:
        bearer_token(["Bearer yk_abc", "Bearer yk_abc"])  # even the same key twice
    assert 'error="invalid_request"' in err.value.headers["WWW-Authenticate"]


def test_key_maps_to_its_own_tenant_only():
    table = KeyTable(
        {
            "acme": [("key_a1", hash_api_key("yk_acme_1")), ("key_a2", hash_api_key("yk_acme_2"))],
            "globex": [("key_g", hash_api_key("yk_globex"))],
        }
    )
    assert len(table) == 3
    assert table.authenticate("yk_acme_1") == ("acme", "key_a1")
    assert table.authenticate("yk_acme_2") == ("acme", "key_a2")
    assert table.authenticate("yk_globex") == ("globex", "key_g")


@pytest.mark.parametrize(
    "key",
    ["yk_unknown", "yk_acme_1x", "YK_acme_1", "acme", "yk_" + "a" * 300, "yk_acme 1", "yk_ä", ""],
)
def test_unknown_or_malformed_keys_get_one_message(key):
    table = KeyTable({"acme": [("key_a", hash_api_key("yk_acme_1"))]})
    with pytest.raises(Unauthenticated) as err:
        table.authenticate(key)
    assert err.value.message.startswith("invalid API key")
    assert key not in err.value.message or key == ""


def test_revoked_key_is_gone_after_rebuild():
    table = KeyTable({"acme": [("key_old", hash_api_key("yk_old"))]})
    assert table.authenticate("yk_old") == ("acme", "key_old")
    rebuilt = KeyTable({"acme": [("key_new", hash_api_key("yk_new"))]})
    with pytest.raises(Unauthenticated):
        rebuilt.authenticate("yk_old")
    assert rebuilt.authenticate("yk_new") == ("acme", "key_new")
