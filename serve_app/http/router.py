"""``Router``: the ingress. Authenticates, validates, picks the model, forwards bytes.

HTTP and Python handles share one path (``_detect``), so a batch job gets the
same tenant identity, checks and result objects as an HTTP client. The tenant
table arrives as ``user_config``: key rotations and policy changes are applied by
``reconfigure()`` without restarting a replica.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray import serve
from ray.serve.context import _get_serve_request_context
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serve_app.auth.jwks import JwksPool
from serve_app.auth.keys import bearer_token
from serve_app.auth.tenants import ModelChoice, Principal, TenantTable, catalog, select_model
from serve_app.blobs import resolve_path
from serve_app.config import RouterConfig, TenantEntry
from serve_app.constants import (
    ALLOWANCE_TTL_S,
    DETECT_TIMEOUT_S,
    LEDGER_TIMEOUT_S,
    MAX_BODY_BYTES,
    MAX_CACHED_HANDLES,
    MAX_IMAGE_BYTES,
    MAX_POLICY_BODY_BYTES,
    READY_CACHE_S,
    READY_TIMEOUT_S,
    RETRY_AFTER_S,
    TENANT_DEFAULTS_TTL_S,
)
from serve_app.errors import (
    BadParameter,
    MethodNotAllowed,
    ModelUnavailable,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    QuotaExceeded,
    ServeAppError,
    UnsupportedMediaType,
    error_body,
    unwrap_error,
)
from serve_app.http import console
from serve_app.http.uploads import image_bytes
from serve_app.inference import images, policy
from serve_app.inference.annotate import wants_annotation
from serve_app.inference.defaults import (
    effective_policy,
    parse_defaults,
    policy_view,
)
from serve_app.inference.results import Annotated, DetectionResult
from serve_app.observability.audit import AuditRecord, AuditSink
from serve_app.observability.metrics import RouterMetrics
from serve_app.quota.allowances import Allowances, uses_allowances
from serve_app.quota.gcra import Decision
from serve_app.quota.settlement import Settler
from serve_app.quota.usage import NO_MODEL, Settlement
from serve_app.wire import TenantDefaults, model_id

logger = logging.getLogger("ray.serve")
ALLOWED_METHODS = {"/v1/detect": "POST", "/v1/models": "GET", "/v1/usage": "GET"}
ALLOWED_METHODS["/v1/policy"] = "GET or PUT"
API_PATHS = frozenset(ALLOWED_METHODS)
KNOWN_PATHS = API_PATHS | {"/healthz", "/readyz"}


QUOTA_MESSAGES = {
    "rate_limited": "request rate over your quota; slow down and retry after Retry-After seconds",
    "too_many_concurrent": "too many requests in flight for your account; wait for some to finish",
    "monthly_quota_exceeded": "monthly image quota used up; it resets at the start of next month",
}


def rate_limit_headers(decision: Decision) -> dict[str, str]:
    """IETF ``RateLimit-*`` fields for a ledger decision."""
    headers = {}
    if decision.limit is not None:
        headers["RateLimit-Limit"] = str(decision.limit)
    if decision.remaining is not None:
        headers["RateLimit-Remaining"] = str(decision.remaining)
    headers["RateLimit-Reset"] = str(max(0, math.ceil(decision.reset_s)))
    return headers


def error_response(error: ServeAppError) -> JSONResponse:
    """The one place API errors become HTTP responses."""
    headers = dict(error.headers)
    if error.status in (429, 503):
        headers["Retry-After"] = str(error.retry_after_s or RETRY_AFTER_S)
    return JSONResponse(error_body(error), status_code=error.status, headers=headers)


@dataclass
class _Call:
    """What the audit line of one call needs, filled in as the call proceeds."""

    action: str
    started: float
    request_id: str | None
    source_ip: str | None
    tenant: str | None = None
    credential: str | None = None
    model: str | None = None

    @classmethod
    def start(cls, action: str, source_ip: str | None) -> _Call:
        request_id = _get_serve_request_context().request_id
        return cls(action, time.perf_counter(), request_id, source_ip)

    def identify(self, principal: Principal) -> None:
        self.tenant, self.credential = principal.tenant.id, principal.credential

    def record(self, status: int, outcome: str) -> AuditRecord:
        return AuditRecord.build(
            action=self.action,
            outcome=outcome,
            status=status,
            started_s=self.started,
            request_id=self.request_id,
            tenant=self.tenant,
            credential=self.credential,
            source_ip=self.source_ip,
            model=self.model,
        )


@serve.deployment(max_ongoing_requests=64)
class Router:
    """Ingress of the ``yolo`` application."""

    def __init__(
        self,
        detectors: dict[str, DeploymentHandle[Any]],
        shared_pool: DeploymentHandle[Any],
        ledger: DeploymentHandle[Any],
        scale_to_zero: list[str] | None = None,
    ) -> None:
        self._detectors = detectors
        self._scale_to_zero = frozenset(scale_to_zero or ())
        self._shared_pool = shared_pool
        self._ledger = ledger
        self._jwks = JwksPool()  # outlives table rebuilds: keys are not refetched per change
        self._table = TenantTable(RouterConfig(), self._jwks)
        self._ready_until = 0.0
        self._allowances = Allowances()
        self._settler = Settler(origin="router")
        self._settle_task: asyncio.Task[None] | None = None
        self._model_handles: dict[tuple[str, str], DeploymentHandle[Any]] = {}
        # tenant -> (monotonic expiry, its own detection defaults): PUT /v1/policy on any
        # router replica is seen here within TENANT_DEFAULTS_TTL_S.
        self._defaults: dict[str, tuple[float, TenantDefaults | None]] = {}
        self._defaults_fetches: dict[str, asyncio.Task[TenantDefaults | None]] = {}
        self._audit: AuditSink | None = None
        self._metrics = RouterMetrics.create()

    def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = RouterConfig.model_validate(user_config)
        self._table = TenantTable(config, self._jwks)
        replica = serve.get_replica_context().replica_id.unique_id
        self._audit = AuditSink(resolve_path(config.audit_dir) / f"api-{replica}.jsonl")
        self._ready_until = 0.0
        # Quotas may have changed (or a tenant was suspended): spend nothing granted
        # under the old table.
        self._settler.refund(self._allowances.drain())
        logger.info("router: tenant table now has %d tenants", len(self._table))

    # ------------------------------------------------------------ shared core

    async def _detect(
        self, principal: Principal, image: bytes, query: Mapping[str, str], call: _Call
    ) -> DetectionResult | Annotated:
        """Detect; with ``annotate=true`` in the query, also the image with boxes drawn."""
        started = time.perf_counter()
        tenant = principal.tenant
        model = NO_MODEL
        try:
            policy.check_known(query)
            annotate = wants_annotation(query.get("annotate"))
            choice = select_model(tenant, query)
            model = call.model = choice.label
            defaults = await self._tenant_defaults(tenant.id)
            params = policy.clamp(query, effective_policy(tenant.policy, defaults))
            images.inspect_image(image)
            handle = self._handle_for(tenant)
            outcome = await self._admitted_call(principal, handle, choice, image, params, annotate)
        except ServeAppError as exc:
            self._settler.meter.record(tenant.id, model, exc.status, time.time())
            if isinstance(exc, QuotaExceeded):
                reason = {"tenant": tenant.id, "reason": exc.reason}
                self._metrics.quota_rejections.inc(tags=reason)
            raise
        result = outcome.result if isinstance(outcome, Annotated) else outcome
        call.model = result.model  # the fallback version, if it answered
        compute_s = result.timing_ms.get("compute", 0.0) / 1e3
        self._settler.meter.record(tenant.id, result.model, 200, time.time(), 1, compute_s)
        total_ms = round((time.perf_counter() - started) * 1e3, 2)
        by_model = {"tenant": tenant.id, "model": result.model}
        self._metrics.latency_s.observe(total_ms / 1e3, tags={"tenant": tenant.id})
        inference_s = result.timing_ms.get("inference", 0.0) / 1e3
        self._metrics.inference_s.observe(inference_s, tags=by_model)
        self._metrics.images.inc(tags=by_model)
        if compute_s > 0:
            self._metrics.compute_s.inc(compute_s, tags=by_model)
        result = result.model_copy(update={"timing_ms": {**result.timing_ms, "total": total_ms}})
        if isinstance(outcome, Annotated):
            return Annotated(result=result, jpeg=outcome.jpeg)
        return result

    async def _tenant_defaults(self, tenant_id: str) -> TenantDefaults | None:
        """The tenant's own detection defaults, from the ledger, cached briefly.

        Only a tenant's first request waits for the ledger; after that an expired copy is
        answered while one shared task refreshes it, so the hot path never waits on it.
        """
        cached = self._defaults.get(tenant_id)
        if cached is not None and time.monotonic() < cached[0]:
            return cached[1]
        task = self._defaults_fetches.get(tenant_id)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch_defaults(tenant_id, cached))
            self._defaults_fetches[tenant_id] = task
            task.add_done_callback(functools.partial(self._fetched, tenant_id))
        if cached is not None:
            return cached[1]
        return await asyncio.shield(task)

    def _fetched(self, tenant_id: str, _: object) -> None:
        self._defaults_fetches.pop(tenant_id, None)

    async def _fetch_defaults(
        self, tenant_id: str, cached: tuple[float, TenantDefaults | None] | None
    ) -> TenantDefaults | None:
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):
                found: TenantDefaults | None = await self._ledger.tenant_defaults.remote(tenant_id)
        except Exception as exc:
            # Admission needs the ledger too and fails closed; here the last copy (kept
            # for another TTL) or the operator's defaults will do.
            logger.warning("router: tenant defaults unavailable: %s", type(exc).__name__)
            if cached is None:
                return None
            found = cached[1]
        self._defaults[tenant_id] = (time.monotonic() + TENANT_DEFAULTS_TTL_S, found)
        return found

    async def _admitted_call(
        self,
        principal: Principal,
        handle: DeploymentHandle[Any],
        choice: ModelChoice,
        image: bytes,
        params: policy.InferenceParams,
        annotate: bool = False,
    ) -> DetectionResult | Annotated:
        tenant = principal.tenant
        lease = await self._admit(principal)
        try:
            return await self._call_detector(handle, tenant.id, choice, image, params, annotate)
        except ModelUnavailable:
            # The active version cannot be loaded (a broken upload): the previous one
            # keeps the tenant served while the operator looks at the failure.
            fallback = choice.fallback_choice()
            if fallback is None:
                raise
            return await self._call_detector(handle, tenant.id, fallback, image, params, annotate)
        finally:
            if lease is not None:
                await self._release(tenant.id, lease)

    async def _release(self, tenant_id: str, lease: str) -> None:
        """Give back a concurrency lease before answering: a client that sends its next
        request the moment it has this answer must find the slot free. A lease the
        ledger never hears about expires on its own (``LEASE_TTL_S``)."""
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):
                await self._ledger.release.remote(tenant_id, lease)
        except Exception as exc:
            logger.warning("router: lease release failed (%s); it will expire", type(exc).__name__)

    async def _admit(self, principal: Principal) -> str | None:
        """Admit one request against the tenant's cluster-wide quota.

        From the replica's local allowance when it has one (``admission.py``), else by
        asking the ledger: a batch for the allowance, or, for tenants with a
        concurrency cap, exactly this request and a lease to release afterwards
        (returned). Fails closed: if the ledger cannot answer in time, the request is
        refused with 503 rather than admitted unmetered.
        """
        tenant = principal.tenant
        if self._settle_task is None:
            self._settle_task = asyncio.get_running_loop().create_task(self._settle_loop())
        self._settler.key_used(principal.credential, tenant.id, time.time())
        if not uses_allowances(tenant.quota):
            decision = await self._ask_ledger(self._ledger.admit.remote(tenant.id, tenant.quota, 1))
            assert decision.lease_id is not None
            return decision.lease_id
        if self._allowances.take(tenant.id, time.monotonic()):
            return None
        want = self._allowances.want(tenant.id, tenant.quota)
        decision = await self._ask_ledger(self._ledger.grant.remote(tenant.id, tenant.quota, want))
        self._settler.refund(
            self._allowances.store(tenant.id, decision.granted, decision.month, time.monotonic())
        )
        return None

    async def _ask_ledger(self, call: Any) -> Decision:
        """Await a ledger decision; 503 if it does not come in time, 429 if it says no."""
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):  # no extra task, unlike wait_for
                decision: Decision = await call
        except Exception as exc:
            logger.error("router: quota ledger unavailable: %s", type(exc).__name__)
            raise Overloaded(
                "admission control is unavailable; retry shortly", retry_after_s=RETRY_AFTER_S
            ) from None
        if not decision.allowed:
            raise QuotaExceeded(
                QUOTA_MESSAGES[decision.code],
                reason=decision.code,
                retry_after_s=max(1, math.ceil(decision.retry_after_s)),
                headers=rate_limit_headers(decision),
            )
        return decision

    async def _settle_loop(self) -> None:
        """Report usage, refunds and key use to the ledger in the background."""
        while True:
            await asyncio.sleep(ALLOWANCE_TTL_S)
            await self._settle()

    async def _settle(self) -> None:
        self._settler.refund(self._allowances.expired(time.monotonic()))
        quotas = {t.id: t.quota for t in self._table.tenants()}
        await self._settler.settle(quotas, self._send_settlement)

    async def _send_settlement(self, settlement: Settlement) -> None:
        async with asyncio.timeout(LEDGER_TIMEOUT_S):
            await self._ledger.settle.remote(settlement)

    async def __del__(self) -> None:
        # Graceful shutdown (scale-down, redeploy): Serve awaits an async __del__, so the
        # last usage and the unspent allowances reach the ledger before the replica goes.
        if self._settle_task is not None:
            self._settle_task.cancel()
        self._settler.refund(self._allowances.drain())
        left = 0
        try:
            for _ in range(3):
                await self._settle()
                left = len(self._settler)
                if not left:
                    break
        except Exception as exc:
            logger.error("router: final settlement failed: %s", type(exc).__name__)
        if left:
            logger.error("router: %d settlements undelivered at shutdown", left)

    async def _call_detector(
        self,
        handle: DeploymentHandle[Any],
        tenant_id: str,
        choice: ModelChoice,
        image: bytes,
        params: policy.InferenceParams,
        annotate: bool = False,
    ) -> DetectionResult | Annotated:
        detector = self._model_handle(handle, choice.id_for(tenant_id))
        response = (
            detector.detect.remote(image, params, True)
            if annotate
            else detector.detect.remote(image, params)
        )
        try:
            async with asyncio.timeout(DETECT_TIMEOUT_S):
                outcome: DetectionResult | Annotated | ServeAppError = await response
        except TimeoutError:
            response.cancel()
            raise Overloaded("detection timed out; retry later", retry_after_s=5) from None
        except Exception as exc:
            api_error = unwrap_error(exc)
            if api_error is None:
                raise
            raise api_error from None
        if isinstance(outcome, ServeAppError):
            raise outcome
        return outcome

    def _model_handle(self, handle: DeploymentHandle[Any], model: str) -> DeploymentHandle[Any]:
        """``handle.options(multiplexed_model_id=model)``, made once per model id."""
        key = (handle.deployment_name, model)
        found = self._model_handles.get(key)
        if found is None:
            if len(self._model_handles) >= MAX_CACHED_HANDLES:
                self._model_handles.clear()
            found = self._model_handles[key] = handle.options(multiplexed_model_id=model)
        return found

    def _handle_for(self, tenant: TenantEntry) -> DeploymentHandle[Any]:
        if tenant.tier == "shared":
            return self._shared_pool
        handle = self._detectors.get(tenant.id)
        if handle is None:  # tenant table ahead of the args rollout
            raise ModelUnavailable("your detector is still being deployed; retry shortly")
        return handle

    # ------------------------------------------------------- Python handle API

    async def detect_image(
        self, api_key: str, image: bytes, params: Mapping[str, Any] | None = None
    ) -> DetectionResult:
        """Detect with a tenant's API key; what ``DetectionClient`` calls."""
        call = _Call.start("handle.detect", source_ip=None)
        try:
            principal = await self._table.authenticate(api_key)
            call.identify(principal)
            query = {k: str(v) for k, v in (params or {}).items() if v is not None}
            if "annotate" in query:
                raise BadParameter(
                    "annotate is an HTTP option (POST /v1/detect?annotate=true returns a JPEG); "
                    "handles return the detections only"
                )
            outcome = await self._detect(principal, image, query, call)
            assert isinstance(outcome, DetectionResult)
            result = outcome
        except ServeAppError as exc:
            self._finish(call, "handle", exc.status, exc.code)
            raise
        self._finish(call, "handle", 200, "ok")
        return result

    async def list_models(self, api_key: str) -> dict[str, object]:
        return catalog((await self._table.authenticate(api_key)).tenant)

    async def usage(self, api_key: str) -> dict[str, Any]:
        """The caller's own usage, as ``GET /v1/usage`` returns it."""
        return await self._usage((await self._table.authenticate(api_key)).tenant)

    async def _usage(self, tenant: TenantEntry) -> dict[str, Any]:
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):
                report: dict[str, Any] = await self._ledger.usage_report.remote(
                    tenant.id, tenant.quota
                )
        except Exception as exc:
            logger.error("router: usage report unavailable: %s", type(exc).__name__)
            raise Overloaded("usage is unavailable right now; retry shortly") from None
        return report

    # --------------------------------------------------------------- HTTP API

    async def __call__(self, request: Request) -> Response:
        response = await self._respond(request)
        is_console = request.url.path in console.CONSOLE_FILES
        response.headers.update(console.security_headers(console=is_console))
        return response

    async def _respond(self, request: Request) -> Response:
        route = f"{request.method} {request.url.path}"
        if request.url.path in console.CONSOLE_FILES:
            return self._console(request)
        # Label by known route only: arbitrary paths would blow up metric cardinality.
        path = request.url.path if request.url.path in KNOWN_PATHS else "other"
        call = _Call.start(
            f"{request.method} {path}"[:40], request.client.host if request.client else None
        )
        tenant_id = "-"
        outcome = "ok"
        try:
            if route == "GET /healthz":
                return JSONResponse({"status": "ok"})
            if route == "GET /readyz":
                return await self._readyz()
            if request.url.path not in API_PATHS:
                # The path is not echoed: an error body only ever says what the API has.
                raise NotFound(
                    "no such route; the API is POST /v1/detect, GET /v1/models, GET /v1/usage "
                    "and GET or PUT /v1/policy; the web console is at /console"
                )
            principal = await self._table.authenticate(
                bearer_token(request.headers.get("authorization"))
            )
            tenant_id = principal.tenant.id
            call.identify(principal)
            response = await self._api(route, request, principal, call)
        except ServeAppError as exc:
            response = error_response(exc)
            outcome = exc.code
        except Exception:
            logger.exception("router: unexpected error on %r for tenant %s", path, tenant_id)
            response = JSONResponse(
                {"error": {"code": "internal", "message": "internal error; it has been logged"}},
                status_code=500,
            )
            outcome = "internal"
        if path in API_PATHS or path == "other":  # probes are not audited
            self._finish(call, path, response.status_code, outcome)
        else:
            self._metrics.requests.inc(
                tags={"tenant": "-", "route": path, "status": str(response.status_code)}
            )
        return response

    async def _api(
        self, route: str, request: Request, principal: Principal, call: _Call
    ) -> Response:
        """An authenticated API call."""
        tenant = principal.tenant
        if route == "GET /v1/models":
            return JSONResponse(catalog(tenant))
        if route == "GET /v1/usage":
            return JSONResponse(await self._usage(tenant))
        if route == "GET /v1/policy":
            return JSONResponse(policy_view(tenant.policy, await self._tenant_defaults(tenant.id)))
        if route == "PUT /v1/policy":
            return JSONResponse(await self._save_defaults(tenant, request))
        if route == "POST /v1/detect":
            try:
                body = await self._read_body(request)
                image = image_bytes(body, request.headers.get("content-type"))
            except ServeAppError as exc:  # refused before _detect, metered here
                self._settler.meter.record(tenant.id, NO_MODEL, exc.status, time.time())
                raise
            outcome = await self._detect(principal, image, dict(request.query_params), call)
            if isinstance(outcome, Annotated):
                headers = {"X-Detections": str(len(outcome.result.detections))}
                return Response(outcome.jpeg, media_type="image/jpeg", headers=headers)
            return Response(outcome.model_dump_json(), media_type="application/json")
        allowed = ALLOWED_METHODS[request.url.path]
        raise MethodNotAllowed(f"{request.method} is not allowed here; use {allowed}")

    async def _save_defaults(self, tenant: TenantEntry, request: Request) -> dict[str, Any]:
        """``PUT /v1/policy``: the tenant's own defaults, inside the operator's bounds."""
        media = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media != "application/json":
            raise UnsupportedMediaType(
                'send the defaults as JSON with Content-Type: application/json, e.g. {"conf": 0.4}'
            )
        body = await self._read_body(request, MAX_POLICY_BODY_BYTES)
        defaults = parse_defaults(body, tenant.policy)
        try:
            async with asyncio.timeout(LEDGER_TIMEOUT_S):
                await self._ledger.set_tenant_defaults.remote(tenant.id, defaults)
        except Exception as exc:
            logger.error("router: saving tenant defaults failed: %s", type(exc).__name__)
            raise Overloaded("your defaults could not be saved right now; retry shortly") from None
        self._defaults[tenant.id] = (time.monotonic() + TENANT_DEFAULTS_TTL_S, defaults)
        return policy_view(tenant.policy, defaults)

    @staticmethod
    def _console(request: Request) -> Response:
        """The web console's static files (no credentials needed to fetch them)."""
        found = console.asset(request.url.path)
        assert found is not None
        if request.method not in ("GET", "HEAD"):
            return error_response(
                MethodNotAllowed(f"{request.method} is not allowed here; use GET")
            )
        body, media_type = found
        return Response(body, media_type=media_type)

    def _finish(self, call: _Call, route: str, status: int, outcome: str) -> None:
        """Count the call and write its audit line (which never fails the call)."""
        tenant = call.tenant or "-"
        self._metrics.requests.inc(tags={"tenant": tenant, "route": route, "status": str(status)})
        if self._audit is not None and not self._audit.write(call.record(status, outcome)):
            self._metrics.audit_failures.inc()

    @staticmethod
    async def _read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
        """The body, refused (413) as soon as it is over ``limit``, declared or streamed."""
        what = "image limit" if limit == MAX_BODY_BYTES else "limit for this call"
        shown = MAX_IMAGE_BYTES if limit == MAX_BODY_BYTES else limit
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"body is {declared} bytes; the {what} is {shown}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"body is over the {shown}-byte {what}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _readyz(self) -> Response:
        """Ready when every always-on dedicated tenant's default model loads, and the
        shared pool loads one shared tenant's (checking every shared tenant would churn
        its LRU). Tenants that may scale to zero are not probed."""
        tenants = [t for t in self._table.tenants() if t.status == "active"]
        if tenants and time.monotonic() < self._ready_until:
            return JSONResponse({"status": "ready", "tenants": len(tenants)})
        if not tenants:
            return JSONResponse({"status": "not_ready", "reason": "no tenants configured"}, 503)
        # A tenant that may scale to zero is not probed: it would never get to zero, and
        # its first request waits for a replica instead (a cold start, not a failure).
        probes = [t for t in tenants if t.tier == "dedicated" and t.id not in self._scale_to_zero]
        probes += [t for t in tenants if t.tier == "shared"][:1]
        calls = []
        for tenant in probes:
            try:
                handle = self._handle_for(tenant)
            except ModelUnavailable:
                return JSONResponse({"status": "not_ready", "reason": "a detector is missing"}, 503)
            model = tenant.model(tenant.default_model)
            assert model is not None
            mid = model_id(tenant.id, model.name, model.active_version)
            calls.append(handle.options(multiplexed_model_id=mid).ready.remote())
        try:
            await asyncio.wait_for(asyncio.gather(*calls), READY_TIMEOUT_S)
        except Exception as exc:
            logger.warning("router: not ready: %s", type(exc).__name__)
            return JSONResponse({"status": "not_ready", "reason": "a model failed to load"}, 503)
        self._ready_until = time.monotonic() + READY_CACHE_S
        return JSONResponse({"status": "ready", "tenants": len(tenants)})
