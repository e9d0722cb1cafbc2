"""A tenant's catalog: which of its models and versions a call uses, and what it may list.

An unknown model, or another tenant's model, is the same 404: a caller cannot
learn that anything outside its own catalog exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serve_app.config import TenantEntry
from serve_app.errors import BadParameter, UnknownModel
from serve_app.numerals import is_integer
from serve_app.wire import model_id

# Never echoes the name asked for: the answer for another tenant's model must be
# byte-identical to the answer for a model that exists nowhere.
NO_SUCH_MODEL = "no such model or version in your catalog; list yours with GET /v1/models"


@dataclass(frozen=True)
class ModelChoice:
    name: str
    version: int
    fallback: int | None = None  # only when the caller did not pin a version

    @property
    def label(self) -> str:
        return f"{self.name}@{self.version}"

    def pinned(self, tenant: TenantEntry) -> bool:
        """A version other than the model's active one (asked for with ``version=``)."""
        model = tenant.model(self.name)
        return model is None or self.version != model.active_version

    def id_for(self, tenant_id: str) -> str:
        return model_id(tenant_id, self.name, self.version)

    def fallback_choice(self) -> ModelChoice | None:
        if self.fallback is None or self.fallback == self.version:
            return None
        return ModelChoice(name=self.name, version=self.fallback)


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
    if not is_integer(raw) or len(raw) > 9:
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
