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

Keys are PEM public keys from the config, or a JWKS URL (``jwks.py``: cached, with
bounded refreshes), or both during a migration.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt import PyJWTError

from serve_app.auth.jwks import JwksCache, JwksPool
from serve_app.constants import (
    JWT_LEEWAY_S,
    JWT_MAX_KEYS_WITHOUT_KID,
    JWT_MAX_KID_CHARS,
    JWT_MAX_TOKEN_CHARS,
)
from serve_app.errors import Unauthenticated
from serve_app.wire import JwtSettings, load_public_key

REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub")
_INVALID = "invalid token: check its issuer, audience, expiry and signature"


@dataclass(frozen=True)
class _Issuer:
    tenant: str
    settings: JwtSettings
    keys: tuple[Any, ...]
    jwks: JwksCache | None

    async def candidate_keys(self, kid: str | None) -> list[Any]:
        """The keys to try, in order: the JWKS's for ``kid``, then the PEM keys. A token
        without a ``kid`` is tried against at most ``JWT_MAX_KEYS_WITHOUT_KID`` of them:
        each try is a signature check, and a JWKS may hold 64 keys."""
        found = [] if self.jwks is None else await self.jwks.keys_for(kid)
        keys = found + list(self.keys)
        return keys if kid is not None else keys[:JWT_MAX_KEYS_WITHOUT_KID]


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and not token.startswith("yk_")


class JwtVerifier:
    """Tenant lookup and verification; rebuilt whenever the tenant table changes."""

    def __init__(
        self, settings_by_tenant: Mapping[str, JwtSettings], jwks: JwksPool | None = None
    ) -> None:
        self._by_issuer: dict[str, _Issuer] = {}
        jwks = jwks or JwksPool()
        used = set()
        for tenant, settings in settings_by_tenant.items():
            if settings.issuer in self._by_issuer:
                raise ValueError(f"issuer {settings.issuer!r} is configured for two tenants")
            keys = tuple(load_public_key(pem) for pem in settings.public_keys_pem)
            cache = None
            if settings.jwks_url is not None:
                algorithms = frozenset(settings.algorithms)
                cache = jwks.get(settings.jwks_url, algorithms)
                used.add((settings.jwks_url, algorithms))
            self._by_issuer[settings.issuer] = _Issuer(tenant, settings, keys, cache)
        jwks.retain(used)

    async def verify(self, token: str) -> tuple[str, dict[str, Any]]:
        """``(tenant id, claims)`` of a valid token.

        Raises:
            Unauthenticated: For every failure, with one message.
        """
        if len(token) > JWT_MAX_TOKEN_CHARS:
            raise Unauthenticated(_INVALID)
        try:
            header = jwt.get_unverified_header(token)
            unverified = jwt.decode(token, options={"verify_signature": False})
        except PyJWTError:
            raise Unauthenticated(_INVALID) from None
        issuer = self._by_issuer.get(str(unverified.get("iss", "")))
        kid = header.get("kid")
        if issuer is None or (
            kid is not None and (not isinstance(kid, str) or len(kid) > JWT_MAX_KID_CHARS)
        ):
            raise Unauthenticated(_INVALID)
        for key in await issuer.candidate_keys(kid):
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key=key,
                    algorithms=list(issuer.settings.algorithms),
                    audience=issuer.settings.audience,
                    issuer=issuer.settings.issuer,
                    leeway=JWT_LEEWAY_S,
                    options={"require": list(REQUIRED_CLAIMS)},
                )
            except PyJWTError:
                continue
            return issuer.tenant, claims
        raise Unauthenticated(_INVALID)
