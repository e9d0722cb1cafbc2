"""What the registry holds, as the rest of the control plane sees it: frozen records,
the checks on names before they are stored, and reading a tenant back from SQLite."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pydantic import ValidationError

from serve_app.config import AutoscalingSpec, DetectionPolicy, Quota, ResourceSpec, Tier
from serve_app.constants import MODEL_NAME_PATTERN, TENANT_ID_PATTERN
from serve_app.wire import JwtSettings
from tenant_registry.errors import InvalidInput

MAX_NAME_CHARS = 128
_TENANT_ID_RE = re.compile(TENANT_ID_PATTERN)
_MODEL_NAME_RE = re.compile(MODEL_NAME_PATTERN)


def validate_tenant_id(tenant_id: str) -> str:
    if not _TENANT_ID_RE.fullmatch(tenant_id):
        raise InvalidInput(
            f"invalid tenant id {tenant_id[:40]!r}: use 2-32 characters, lowercase letters, "
            "digits and '-', starting with a letter (e.g. acme-eu)"
        )
    return tenant_id


def validate_name(name: str) -> str:
    if not name.strip() or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise InvalidInput(
            f"invalid tenant name: use 1-{MAX_NAME_CHARS} printable characters (no newlines)"
        )
    return name.strip()


def validate_model_name(name: str) -> str:
    if not _MODEL_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid model name {name[:40]!r}: lowercase letters, digits, '_' and '-', "
            "starting with a letter"
        )
    return name


def validated(model: type[Any], values: dict[str, Any], what: str) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or what}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidInput(f"invalid {what}: {problems}") from None


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    tenant_id: str
    prefix: str
    sha256: str
    created_at: str
    revoked_at: str | None


@dataclass(frozen=True)
class ModelVersion:
    version: int
    uri: str
    architecture: str
    sha256: str
    created_at: str


@dataclass(frozen=True)
class TenantModel:
    name: str
    active_version: int | None
    previous_version: int | None
    is_default: bool
    versions: tuple[ModelVersion, ...]
    rollouts_paused: bool = False  # by the operator: tenants' rollouts of it send no traffic


@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    tier: Tier
    status: str
    created_at: str
    updated_at: str
    quota: Quota
    policy: DetectionPolicy
    resources: ResourceSpec
    autoscaling: AutoscalingSpec
    keys: tuple[ApiKey, ...] = field(default_factory=tuple)
    models: tuple[TenantModel, ...] = field(default_factory=tuple)
    jwt: JwtSettings | None = None

    def active_keys(self) -> list[ApiKey]:
        return sorted((k for k in self.keys if k.revoked_at is None), key=lambda k: k.key_id)


class Changes(NamedTuple):
    """What changed in a registry since a publish (``Registry.changed_since``)."""

    registry: str  # the registry's identity (migration 7)
    seq: int  # its latest change number
    tenants: list[str]  # tenants changed since, oldest change first
