"""JWT verification for tenants that bring their own identity provider.

Rules (each one a known way JWT verification goes wrong):

* the algorithm comes from the tenant's configuration, never from the token's own
  header, and only asymmetric ones are allowed (RS256, ES256, EdDSA): no ``none``, no
  HS256 "signed" with a public key;
* the tenant is found by the token's issuer among configured issuers, and the token
  must then verify with *that* tenant's keys: naming another tenant's issuer gets a
  caller nothing without that tenant's private key;
* ``exp``, ``iat``, ``iss``, ``aud`` and ``sub`` are required; small leeway;
* one error message for every failure, so a caller cannot probe which check failed.

Keys are PEM public keys from the config (JWKS URLs come in a later change).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWTError
from pydantic import BaseModel, ConfigDict, Field, field_validator

from serve_app.errors import Unauthenticated

ALLOWED_ALGORITHMS = frozenset({"RS256", "ES256", "EdDSA"})
LEEWAY_S = 30
MAX_TOKEN_CHARS = 8192
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
_INVALID = "invalid token: check its issuer, audience, expiry and signature"


class JwtSettings(BaseModel):
    """One tenant's identity provider."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    issuer: str = Field(min_length=1, max_length=512)
    audience: str = Field(min_length=1, max_length=512)
    algorithms: tuple[str, ...] = ("RS256",)
    public_keys_pem: tuple[str, ...] = Field(min_length=1)

    @field_validator("public_keys_pem")
    @classmethod
    def _parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pem in value:
            _load_public_key(pem)  # a key that does not parse fails the config, not a request
        return value

    @field_validator("algorithms")
    @classmethod
    def _allowlisted(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [a for a in value if a not in ALLOWED_ALGORITHMS]
        if not value or bad:
            raise ValueError(f"algorithms must be among {sorted(ALLOWED_ALGORITHMS)}, got {bad}")
        return value


@dataclass(frozen=True)
class _Issuer:
    tenant: str
    settings: JwtSettings
    keys: tuple[Any, ...]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith("yk_")


class JwtVerifier:
    """Tenant lookup and verification; rebuilt whenever the tenant table changes."""

    def __init__(self, settings_by_tenant: Mapping[str, JwtSettings]) -> None:
        self._by_issuer: dict[str, _Issuer] = {}
        for tenant, settings in settings_by_tenant.items():
            if settings.issuer in self._by_issuer:
                raise ValueError(f"issuer {settings.issuer!r} is configured for two tenants")
            keys = tuple(_load_public_key(pem) for pem in settings.public_keys_pem)
            self._by_issuer[settings.issuer] = _Issuer(tenant, settings, keys)

    def verify(self, token: str) -> tuple[str, dict[str, Any]]:
        """``(tenant id, claims)`` of a valid token.

        Raises:
            Unauthenticated: For every failure, with one message.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthenticated(_INVALID)
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
        except PyJWTError:
            raise Unauthenticated(_INVALID) from None
        issuer = self._by_issuer.get(str(unverified.get("iss", "")))
        if issuer is None:
            raise Unauthenticated(_INVALID)
        for key in issuer.keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key=key,
                    algorithms=list(issuer.settings.algorithms),
                    audience=issuer.settings.audience,
                    issuer=issuer.settings.issuer,
                    leeway=LEEWAY_S,
                    options={"require": list(REQUIRED_CLAIMS)},
                )
            except PyJWTError:
                continue
            return issuer.tenant, claims
        raise Unauthenticated(_INVALID)


def _load_public_key(pem: str) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        return load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
