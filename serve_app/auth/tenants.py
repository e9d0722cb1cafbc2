"""The router's view of its tenants: who an API key or JWT belongs to.

Built from ``RouterConfig`` on every ``reconfigure()``; lookups are pure and fast.
"""

from __future__ import annotations

from dataclasses import dataclass

from serve_app.auth.jwks import JwksPool
from serve_app.auth.keys import KeyTable
from serve_app.auth.tokens import JwtVerifier, looks_like_jwt
from serve_app.config import RouterConfig, TenantEntry
from serve_app.constants import JWT_MAX_SUBJECT_CHARS
from serve_app.errors import Forbidden

# A JWT subject is the caller's identity inside its tenant; capped for logs and audit.


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, and which of its credentials (``key_…`` id or
    ``jwt:<sub>``), never the secret itself."""

    tenant: TenantEntry
    credential: str


class TenantTable:
    """Tenants by id and by key digest. Built from ``RouterConfig``, then changed one
    tenant at a time by ``put`` / ``remove`` (the tenant directory's changes)."""

    def __init__(self, config: RouterConfig, jwks: JwksPool | None = None) -> None:
        self._jwks = jwks or JwksPool()
        self._by_id = {t.id: t for t in config.tenants}
        self._keys = KeyTable(
            {t.id: [(k.id, k.sha256) for k in t.api_keys] for t in config.tenants}
        )
        self._jwt = self._verifier()

    def _verifier(self) -> JwtVerifier:
        return JwtVerifier(
            {t.id: t.jwt for t in self._by_id.values() if t.jwt is not None}, jwks=self._jwks
        )

    def __len__(self) -> int:
        return len(self._by_id)

    def tenants(self) -> list[TenantEntry]:
        return list(self._by_id.values())

    def find(self, tenant_id: str) -> TenantEntry | None:
        return self._by_id.get(tenant_id)

    def put(self, entry: TenantEntry) -> None:
        """Add or replace one tenant: its keys, status, policy and identity provider.

        Raises:
            ValueError: Its JWT issuer is another tenant's (the table is unchanged).
        """
        before = self._by_id.get(entry.id)
        self._by_id[entry.id] = entry
        if entry.jwt is not None or (before is not None and before.jwt is not None):
            try:
                self._jwt = self._verifier()  # O(tenants with JWTs), only when one changes
            except ValueError:
                self._restore(entry.id, before)
                raise
        self._keys.put(entry.id, [(k.id, k.sha256) for k in entry.api_keys])

    def remove(self, tenant_id: str) -> None:
        before = self._by_id.pop(tenant_id, None)
        self._keys.remove(tenant_id)
        if before is not None and before.jwt is not None:
            self._jwt = self._verifier()

    def _restore(self, tenant_id: str, before: TenantEntry | None) -> None:
        if before is None:
            self._by_id.pop(tenant_id, None)
        else:
            self._by_id[tenant_id] = before

    async def authenticate(self, credential: str) -> Principal:
        """Who an API key or JWT belongs to (401 if no one, 403 if the tenant is suspended)."""
        if looks_like_jwt(credential):
            tenant_id, claims = await self._jwt.verify(credential)
            credential_id = "jwt:" + str(claims["sub"])[:JWT_MAX_SUBJECT_CHARS]
        else:
            tenant_id, credential_id = self._keys.authenticate(credential)
        tenant = self._by_id[tenant_id]
        if tenant.status != "active":
            raise Forbidden("this account is suspended; contact your operator")
        return Principal(tenant, credential_id)
