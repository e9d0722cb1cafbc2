"""Tenants' own model versions over HTTP: upload, status, rollout, activate, rollback,
delete — the tenant from the credential, like every other call.

A tenant adds versions to the models its operator gave it; ``{name}`` is one of the
caller's models and ``{version}`` one of its versions, and anything else — another
tenant's model or version included — is the same 404 as a model that exists nowhere.
Each call counts against the tenant's control-call rate (``control.py``); the state is
kept by the quota ledger (``quota/ledger_models.py``) and every call is in the audit
log with the model and version it named.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serve_app.auth.tenants import Principal
from serve_app.blobs import open_store
from serve_app.config import TenantEntry, TenantModel
from serve_app.constants import (
    LEDGER_TIMEOUT_S,
    MANIFEST_FILE,
    MAX_POLICY_BODY_BYTES,
    UPLOADS_IN_FLIGHT,
)
from serve_app.errors import BadParameter, Conflict, Overloaded, UnknownModel, unwrap_error
from serve_app.http.body import expect_json, read_body, single_header
from serve_app.http.calls import Call
from serve_app.http.control import ControlCalls
from serve_app.http.model_uploads import Upload, parse_upload
from serve_app.http.routes import ApiRoute
from serve_app.inference import policy
from serve_app.inference.catalog import NO_SUCH_MODEL, ModelChoice
from serve_app.inference.detector_client import DetectorClient
from serve_app.inference.results import Annotated
from serve_app.inference.tenant_models import TenantModelsView
from serve_app.inference.validation import MAX_SAMPLES_FILE_BYTES, SAMPLES_FILE
from serve_app.models.evaluation import map50, parse_samples
from serve_app.models.rollout import RolloutRequest
from serve_app.models.versions import VersionRecord
from serve_app.numerals import is_integer
from serve_app.uploads_spec import UploadsSpec

VERSIONS = "/v1/models/{name}/versions"
VERSION = "/v1/models/{name}/versions/{version}"


class ModelsApi:
    def __init__(
        self,
        ledger: Any,
        view: TenantModelsView,
        uploads: UploadsSpec,
        control: ControlCalls,
        raw: Any,
        detectors: DetectorClient,
    ) -> None:
        self._detectors = detectors
        self._ledger = ledger
        self._view = view
        self._uploads = uploads
        self._control = control
        self._raw = raw  # tenant id -> the operator's entry (without the tenant's overlay)
        self._uploading: set[str] = set()  # tenants whose upload this router is receiving

    def routes(self) -> list[ApiRoute]:
        return [
            ApiRoute(VERSIONS, self._list, ["GET"]),
            ApiRoute(VERSIONS, self._upload, ["POST"]),
            ApiRoute(VERSION, self._get, ["GET"]),
            ApiRoute(VERSION, self._delete, ["DELETE"]),
            ApiRoute(f"{VERSION}/rollout", self._rollout, ["POST"]),
            ApiRoute(f"{VERSION}/activate", self._activate, ["POST"]),
            ApiRoute("/v1/models/{name}/rollback", self._rollback, ["POST"]),
        ]

    # ------------------------------------------------------------ routes

    async def _upload(self, request: Request, principal: Principal, call: Call) -> Response:
        tenant, model = self._model(request, principal, call)
        # an upload is held in memory while it is read and stored: one per tenant and a
        # few per router at a time, so uploads cannot take a router's memory
        if tenant.id in self._uploading or len(self._uploading) >= UPLOADS_IN_FLIGHT:
            raise Overloaded("another upload is in progress; retry when it has finished")
        self._uploading.add(tenant.id)
        try:
            return await self._receive(request, tenant, model, call)
        finally:
            self._uploading.discard(tenant.id)

    async def _receive(
        self, request: Request, tenant: TenantEntry, model: TenantModel, call: Call
    ) -> Response:
        body = await read_body(request, self._uploads.max_bytes)
        upload = await asyncio.to_thread(parse_upload, body, single_header(request, "content-type"))
        floor = max(self._operator_model(tenant.id, model.name).versions)
        manifest = upload.manifest
        version: int = await self._ask(
            self._ledger.begin_upload.remote(
                tenant.id, model.name, floor, manifest.sha256, manifest.size_bytes
            )
        )
        call.model = f"{model.name}@{version}"
        uri = self._uploads.version_uri(tenant.id, model.name, version)
        try:
            await asyncio.to_thread(self._store, uri, upload)
            stored = True
        except Exception:
            stored = False
        await self._ask(self._ledger.uploaded.remote(tenant.id, model.name, version, stored))
        if not stored:
            raise Overloaded("the model store did not take the upload; upload it again shortly")
        return JSONResponse({"version": version, "status": "validating"}, status_code=202)

    async def _list(self, request: Request, principal: Principal, call: Call) -> Response:
        tenant, model = self._model(request, principal, call)
        operator = self._operator_model(tenant.id, model.name).versions
        uploaded: list[VersionRecord] = await self._ask(
            self._ledger.version_records.remote(tenant.id, model.name)
        )
        records = [VersionRecord(version=v, status="ready", origin="operator") for v in operator]
        records += [self._shown(model, r) for r in uploaded if r.version not in operator]
        body = {
            "name": model.name,
            "active_version": model.active_version,
            "versions": [r.model_dump(mode="json") for r in records],
        }
        return JSONResponse(body)

    def _store(self, uri: str, upload: Upload) -> None:
        store = open_store(uri, self._uploads.store)
        store.write(upload.manifest.weights_file, upload.weights)
        if upload.samples:
            store.write(SAMPLES_FILE, upload.samples)
        store.write(MANIFEST_FILE, upload.manifest.model_dump_json(indent=2).encode())

    async def _get(self, request: Request, principal: Principal, call: Call) -> Response:
        tenant, model, version = self._version(request, principal, call)
        record = await self._record(tenant, model, version)
        return Response(record.model_dump_json(), media_type="application/json")

    async def _delete(self, request: Request, principal: Principal, call: Call) -> Response:
        tenant, model, version = self._version(request, principal, call)
        record = await self._record(tenant, model, version)
        if record.origin == "operator":
            raise Conflict(
                f"version {version} was pushed by your operator and only they can remove it"
            )
        if version == model.active_version:
            raise Conflict(
                f"version {version} is the active version: activate another one (or roll "
                "back) first"
            )
        over = self._operator_model(tenant.id, model.name).active_version
        await self._ask(self._ledger.delete_version.remote(tenant.id, model.name, version, over))
        await self._view.reload(tenant.id)
        return Response(status_code=204)

    async def _rollout(self, request: Request, principal: Principal, call: Call) -> Response:
        tenant, model, version = self._version(request, principal, call)
        expect_json(single_header(request, "content-type"), '{"mode": "shadow", "percent": 10}')
        body = await read_body(request, MAX_POLICY_BODY_BYTES)
        try:
            wanted = RolloutRequest.model_validate(json.loads(body))
        except (ValueError, ValidationError) as exc:
            first = str(exc).replace("\n", " ")[:300]
            raise BadParameter(
                f'invalid rollout: {first}; send e.g. {{"mode": "shadow", "percent": 10, '
                '"min_images": 100, "min_agreement": 0.9}'
            ) from None
        record = await self._record(tenant, model, version)
        self._check_ready(record)
        if version == model.active_version:
            raise Conflict(f"version {version} is already active: roll out another version")
        over = self._operator_model(tenant.id, model.name).active_version
        # loaded before the first pair: a cold load is not the candidate's latency
        await self._detectors.ask(tenant, ModelChoice(model.name, version), "ready")
        map50 = await self._map50(tenant, model, version) if wanted.require_map50 else None
        await self._ask(
            self._ledger.start_rollout.remote(tenant.id, model.name, version, wanted, over, map50)
        )
        await self._view.reload(tenant.id)
        record = await self._record(tenant, model, version)
        return Response(record.model_dump_json(), media_type="application/json")

    async def _activate(self, request: Request, principal: Principal, call: Call) -> Response:
        tenant, model, version = self._version(request, principal, call)
        self._check_ready(await self._record(tenant, model, version))
        over = self._operator_model(tenant.id, model.name).active_version
        await self._ask(self._ledger.activate_version.remote(tenant.id, model.name, version, over))
        await self._view.reload(tenant.id)
        return JSONResponse(self._catalog_entry(tenant.id, model.name))

    async def _rollback(self, request: Request, principal: Principal, call: Call) -> Response:
        tenant, model = self._model(request, principal, call)
        over = self._operator_model(tenant.id, model.name).active_version
        await self._ask(self._ledger.rollback_version.remote(tenant.id, model.name, over))
        await self._view.reload(tenant.id)
        return JSONResponse(self._catalog_entry(tenant.id, model.name))

    async def _map50(
        self, tenant: TenantEntry, model: TenantModel, version: int
    ) -> dict[str, float]:
        """The candidate's and the active version's mAP50 on the candidate's samples, each
        run through the tenant's own detectors (not billed: the platform's check)."""
        uri = self._uploads.version_uri(tenant.id, model.name, version)
        raw = await asyncio.to_thread(_samples_of, uri, self._uploads)
        if not raw:
            raise Conflict(
                "require_map50 needs labelled samples: upload the version again with a "
                "'samples' field"
            )
        samples = parse_samples(raw)
        labels = [boxes for _, boxes in samples]
        params = policy.clamp({"conf": "0.001"}, tenant.policy)  # the plan's lowest conf
        found = {}
        for side, number in (("candidate", version), ("incumbent", model.active_version)):
            predictions = []
            for image, _ in samples:
                outcome = await self._detectors.detect(
                    tenant, ModelChoice(model.name, number), image, params
                )
                result = outcome.result if isinstance(outcome, Annotated) else outcome
                predictions.append(
                    [(d.class_name, d.confidence, d.bbox) for d in result.detections]
                )
            found[side] = round(map50(predictions, labels), 4)
        return found

    # ------------------------------------------------------------ helpers

    def _model(
        self, request: Request, principal: Principal, call: Call
    ) -> tuple[TenantEntry, TenantModel]:
        tenant = principal.tenant
        self._control.admit(tenant.id)
        model = tenant.model(request.path_params["name"])
        if model is None:
            raise UnknownModel(NO_SUCH_MODEL)
        call.model = model.name
        return tenant, model

    def _version(
        self, request: Request, principal: Principal, call: Call
    ) -> tuple[TenantEntry, TenantModel, int]:
        tenant, model = self._model(request, principal, call)
        raw = request.path_params["version"]
        if not is_integer(raw) or len(raw) > 9:
            raise UnknownModel(NO_SUCH_MODEL)
        call.model = f"{model.name}@{int(raw)}"
        return tenant, model, int(raw)

    def _operator_model(self, tenant_id: str, name: str) -> TenantModel:
        entry: TenantEntry | None = self._raw(tenant_id)
        found = None if entry is None else entry.model(name)
        if found is None:  # the operator removed it a moment ago
            raise UnknownModel(NO_SUCH_MODEL)
        return found

    async def _record(self, tenant: TenantEntry, model: TenantModel, version: int) -> VersionRecord:
        """The version's record: the ledger's for an upload; a short one for an operator's."""
        if version in self._operator_model(tenant.id, model.name).versions:
            return VersionRecord(version=version, status="ready", origin="operator")
        record: VersionRecord = await self._ask(
            self._ledger.version_record.remote(tenant.id, model.name, version)
        )
        return self._shown(model, record)

    @staticmethod
    def _shown(model: TenantModel, record: VersionRecord) -> VersionRecord:
        """``record`` as the tenant sees it: a rollout its operator paused says so."""
        rollout = record.rollout
        if rollout is None or rollout.state != "running" or not model.rollouts_paused:
            return record
        paused = rollout.model_copy(update={"state": "paused", "reason": "paused by your operator"})
        return record.model_copy(update={"rollout": paused})

    @staticmethod
    def _check_ready(record: VersionRecord) -> None:
        if record.status != "ready":
            raise Conflict(
                f"version {record.version} is {record.status}: only a ready version can be "
                "rolled out or activated" + (f" ({record.reason})" if record.reason else "")
            )

    def _catalog_entry(self, tenant_id: str, name: str) -> dict[str, Any]:
        entry = self._raw(tenant_id)
        model = None if entry is None else self._view.effective(entry).model(name)
        if model is None:
            raise UnknownModel(NO_SUCH_MODEL)
        return {"name": name, "versions": model.versions, "active_version": model.active_version}

    async def _ask(self, call: Any) -> Any:
        """A ledger call: its own API errors (404, 409, 429) pass; anything else is 503."""
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):
                return await call
        except Exception as exc:
            known = unwrap_error(exc)
            if known is not None:
                raise known from None
            raise Overloaded("model versions are unavailable right now; retry shortly") from None


def _samples_of(uri: str, uploads: UploadsSpec) -> bytes:
    """The labelled samples uploaded with a version (b"" if none)."""
    store = open_store(uri, uploads.store)
    if SAMPLES_FILE not in store.names():
        return b""
    return store.read(SAMPLES_FILE, MAX_SAMPLES_FILE_BYTES)
