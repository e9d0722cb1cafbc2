"""The router's view of its tenants: who a key belongs to and which model a call uses.

Built from ``RouterConfig`` on every ``reconfigure()``; lookups are pure and fast.
An unknown model, or another tenant's model, is the same 404: a caller cannot
learn that anything outside its own catalog exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serve_app.auth.jwks import JwksPool
from serve_app.auth.keys import KeyTable
from serve_app.auth.tokens import JwtVerifier, looks_like_jwt
from serve_app.config import RouterConfig, TenantEntry
from serve_app.errors import BadParameter, Forbidden, UnknownModel
from serve_app.wire import model_id

# Never echoes the name asked for: the answer for another tenant's model must be
# byte-identical to the answer for a model that exists nowhere.
NO_SUCH_MODEL = "no such model or version in your catalog; list yours with GET /v1/models"
# A JWT subject is the caller's identity inside its tenant; capped for logs and audit.
_MAX_SUBJECT_CHARS = 128


@dataclass(frozen=True)
class ModelChoice:
    name: str
    version: int
    fallback: int | None = None  # only when the caller did not pin a version

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def id_for(self, tenant_id: str) -> str:
        return model_id(tenant_id, self.name, self.version)

    def fallback_choice(self) -> ModelChoice | None:
        if self.fallback is None or self.fallback == self.version:
            return None
        return ModelChoice(name=self.name, version=self.fallback)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant, and which of its credentials (``key_…`` id or
    ``jwt:<sub>``), never the secret itself."""

    tenant: TenantEntry
    credential: str


class TenantTable:
    """Tenants by id and by key digest."""

    def __init__(self, config: RouterConfig, jwks: JwksPool | None = None) -> None:
        self.config = config
        self._by_id = {t.id: t for t in config.tenants}
        self._keys = KeyTable(
            {t.id: [(k.id, k.sha256) for k in t.api_keys] for t in config.tenants}
        )
        self._jwt = JwtVerifier(
            {t.id: t.jwt for t in config.tenants if t.jwt is not None}, jwks=jwks
        )

    def __len__(self) -> int:
        return len(self._by_id)

    def tenants(self) -> list[TenantEntry]:
        return list(self._by_id.values())

    async def authenticate(self, credential: str) -> Principal:
        """Who an API key or JWT belongs to (401 if no one, 403 if the tenant is suspended)."""
        if looks_like_jwt(credential):
            tenant_id, claims = await self._jwt.verify(credential)
            credential_id = "jwt:" + str(claims["sub"])[:_MAX_SUBJECT_CHARS]
        else:
            tenant_id, credential_id = self._keys.authenticate(credential)
        tenant = self._by_id[tenant_id]
        if tenant.status != "active":
            raise Forbidden("this account is suspended; contact your operator")
        return Principal(tenant, credential_id)


def select_model(tenant: TenantEntry, query: Mapping[str, str]) -> ModelChoice:
    """The model and version a request asks for, defaulting to the active one."""
    name = query.get("model", tenant.default_model)
    model = tenant.model(name)
    if model is None:
        raise UnknownModel(NO_SUCH_MODEL)
    if "version" not in query:
        return ModelChoice(
            name=model.name, version=model.active_version, fallback=model.fallback_version
        )
    raw = query["version"]
    if not raw.isdigit() or len(raw) > 9:
        raise BadParameter(
            f"query parameter 'version' must be a positive integer, got {raw[:16]!r}"
        )
    version = int(raw)
    if version not in model.versions:
        raise UnknownModel(NO_SUCH_MODEL)
    return ModelChoice(name=model.name, version=version)


def catalog(tenant: TenantEntry) -> dict[str, object]:
    """Body of ``GET /v1/models``: the caller's models only."""
    return {
        "models": [
            {
                "name": m.name,
                "versions": sorted(m.versions),
                "active_version": m.active_version,
                "default": m.name == tenant.default_model,
            }
            for m in tenant.models
        ]
    }
