"""Tenants' own model versions as the data plane sees them, and how they change a
tenant's catalog.

The quota ledger keeps each uploaded version's record (``VersionRecord``), the tenant's
activations and its rollouts (``quota/model_book.py``). A router holds a short-lived
copy of a tenant's ``TenantModels`` and lays it over the operator's catalog from the
tenant directory (``overlay``): ready uploads become versions the tenant can call, and
the tenant's own activation replaces the active version — but only while the operator's
active version is still the one it replaced (``over``): an operator who activates a
version later wins, and the tenant's choice lapses.

Pure: unit-tested.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serve_app.config import TenantEntry, TenantModel
from serve_app.models.rollout import Rollout
from serve_app.wire import StrictModel

VersionStatus = Literal["validating", "ready", "rejected"]


class VersionRecord(StrictModel):
    """``GET /v1/models/{name}/versions/{version}``."""

    version: int
    status: VersionStatus
    origin: Literal["upload", "operator"] = Field(
        "upload", description="Uploaded by the tenant, or pushed by the operator."
    )
    reason: str | None = Field(None, description="Why it was rejected, in plain words.")
    sha256: str | None = None
    size_bytes: int | None = None
    created_at: str | None = None
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="From validation: load_s, latency_ms, size_bytes; map50 with samples.",
    )
    rollout: Rollout | None = None


class ModelState(StrictModel):
    """One of a tenant's models, as far as the tenant changed it."""

    ready: list[int] = Field(default_factory=list, description="Uploaded versions it may call.")
    active: int | None = Field(None, description="The tenant's own activation.")
    over: int | None = Field(None, description="The operator's active version it replaced.")
    rollout: int | None = Field(None, description="The candidate of a running rollout.")
    mode: Literal["shadow", "canary"] = "shadow"
    percent: int = 0


class TenantModels(StrictModel):
    models: dict[str, ModelState] = Field(default_factory=dict)


# What the ledger writes beside a model's uploads, for the operator's registry.
INDEX_FILE = "versions.json"


class UploadIndex(StrictModel):
    """Every uploaded version of one model that is not deleted, as the ledger knows it."""

    versions: list[VersionRecord]


def _model(model: TenantModel, state: ModelState) -> TenantModel:
    versions = sorted(set(model.versions) | set(state.ready))
    active = model.active_version
    if state.active is not None and state.over == active and state.active in versions:
        # the operator's version answers if the tenant's cannot be loaded
        return model.model_copy(
            update={
                "versions": versions,
                "active_version": state.active,
                "fallback_version": active,
            }
        )
    return model.model_copy(update={"versions": versions})


def overlay(entry: TenantEntry, state: TenantModels) -> TenantEntry:
    """``entry`` with the tenant's ready uploads and its own activations."""
    if not state.models:
        return entry
    models = [
        _model(m, state.models[m.name]) if m.name in state.models else m for m in entry.models
    ]
    return entry.model_copy(update={"models": models})


def rollout_of(entry: TenantEntry, state: TenantModels, name: str) -> ModelState | None:
    """The running rollout of model ``name``, if its candidate is not already active."""
    found = state.models.get(name)
    model = entry.model(name)
    if found is None or found.rollout is None or model is None or model.rollouts_paused:
        return None
    if found.rollout == model.active_version or found.rollout not in model.versions:
        return None
    return found
