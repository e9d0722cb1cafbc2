"""``Router``: the ingress. Routes, authenticates, admits, forwards bytes, answers.

HTTP and Python handles share one path (``_detect``), so a batch job gets the same
tenant identity, checks and result objects as an HTTP client. The tenant table arrives
as ``user_config``: key rotations and policy changes are applied by ``reconfigure()``
without restarting a replica. The work is done by collaborators, each in its own
module: the route table (``routes``), the tenant table (``auth.tenants``), admission and
metering (``quota.admission``), tenant defaults (``inference.defaults_cache``), the
detectors (``inference.detector_client``), readiness and the call log.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serve_app.auth.followed_table import FollowedTable
from serve_app.auth.jwks import JwksPool
from serve_app.auth.keys import bearer_token
from serve_app.auth.tenants import Principal
from serve_app.blobs import resolve_path
from serve_app.config import RouterConfig, TenantEntry
from serve_app.constants import (
    JOURNAL_FOLDER,
    LEDGER_TIMEOUT_S,
    MAX_POLICY_BODY_BYTES,
    OFF_LOOP_BODY_BYTES,
    POOL_SLOTS,
    REPLICA_HEALTH_CHECK_PERIOD_S,
    SERVE_LOGGING,
)
from serve_app.errors import Overloaded, QuotaExceeded, ServeAppError
from serve_app.http import console, handle_input, openapi
from serve_app.http.body import (
    MULTIPART,
    expect_json,
    image_bytes,
    media_type,
    read_body,
    single_header,
)
from serve_app.http.calls import Call, CallLog
from serve_app.http.control import ControlCalls
from serve_app.http.ingress_refusals import IngressRefusals
from serve_app.http.models_api import ModelsApi
from serve_app.http.readiness import Readiness
from serve_app.http.routes import (
    V2_PREFIX,
    ApiRoute,
    check_query,
    error_response,
    internal_error,
    match,
)
from serve_app.http.v2_api import V2Api, given
from serve_app.inference import images, policy
from serve_app.inference.annotate import wants_annotation
from serve_app.inference.catalog import catalog, select_model
from serve_app.inference.defaults import effective_policy, parse_defaults, policy_view
from serve_app.inference.defaults_cache import TenantDefaultsCache
from serve_app.inference.detector_client import DetectorClient
from serve_app.inference.pool_share import PoolShare
from serve_app.inference.results import Annotated, DetectionResult
from serve_app.inference.tenant_models import TenantModelsView
from serve_app.observability.metrics import RolloutMetrics, RouterMetrics
from serve_app.quota.admission import Admission, Ticket
from serve_app.quota.failover import FailoverLedger
from serve_app.quota.usage import NO_MODEL
from serve_app.ray_compat import is_replica_gone, node_session_folder
from serve_app.uploads_spec import UploadsSpec

logger = logging.getLogger("ray.serve")


@serve.deployment(
    max_ongoing_requests=64,
    health_check_period_s=REPLICA_HEALTH_CHECK_PERIOD_S,
    logging_config=SERVE_LOGGING,
)
class Router:
    """Ingress of the ``yolo`` application."""

    async def __call__(self, request: Request) -> Response:
        """One HTTP request: match a route, authenticate unless it is public, handle,
        then count and audit it. Every response carries the security headers."""
        ip = request.client.host if request.client else None
        try:
            route = match(self._routes, request.scope)
        except ServeAppError as exc:  # 404 or 405: audited, the path never echoed
            call = Call.start(f"{request.method} other", ip)
            self._calls.finish(call, "other", exc.status, exc.code)
            return _secured(error_response(exc, request.url.path.startswith(V2_PREFIX)))
        if route.public:
            try:
                response = await route.handler(request)
            except Exception:
                logger.exception("router: unexpected error on %s", route.label)
                response = internal_error()
            self._calls.count("-", route.label, response.status_code)
            return _secured(response, route.label.startswith("/console"))
        call = Call.start(f"{request.method} {route.label}", ip)
        outcome = "ok"
        try:
            principal = self._models.principal(
                await self._tenants.table.authenticate(
                    bearer_token(request.headers.getlist("authorization"))
                )
            )
            call.identify(principal)
            check_query(route, request.query_params.multi_items())
            response = await route.handler(request, principal, call)
        except ServeAppError as exc:
            response, outcome = error_response(exc, route.v2), exc.code
        except Exception:
            logger.exception("router: unexpected error on %s for %s", route.label, call.tenant)
            response, outcome = internal_error(route.v2), "internal"
        self._calls.finish(call, route.label, response.status_code, outcome)
        return _secured(response)

    def __init__(
        self,
        detectors: dict[str, Any],
        shared_pool: Any,
        ledgers: list[Any],
        scale_to_zero: list[str] | None = None,
        pool_slots: int = POOL_SLOTS,
        uploads: UploadsSpec | None = None,
        call_limits: dict[str, int] | None = None,  # per tenant: DetectorClient's
    ) -> None:
        self._ledger = ledger = _ledger_of(ledgers)
        # The JWKS pool outlives table rebuilds: keys are not refetched per change.
        self._tenants = FollowedTable(JwksPool())
        self._detectors = DetectorClient(detectors, shared_pool, pool_slots, call_limits)
        self._readiness = Readiness(self._detectors, scale_to_zero or ())
        self._admission = Admission(
            ledger, self._tenants.quota_of, journal_folder=node_session_folder() / JOURNAL_FOLDER
        )
        self._defaults = TenantDefaultsCache(lambda t: ledger.tenant_defaults.remote(t))
        self._control = ControlCalls()
        self._pool_share = PoolShare()
        self._calls = CallLog(RouterMetrics.create())
        self._ingress = IngressRefusals.for_this_node(self._calls, self._admission)
        probe = lambda: self._readiness.check(self._tenants.table.tenants())  # noqa: E731
        v2 = V2Api(self._detect, self._detectors, probe, self._ingress,
                   self._admission.refusals, self._control, self._pool_share)  # fmt: skip
        self._models = TenantModelsView(ledger, RolloutMetrics.create())
        models = ModelsApi(ledger, self._models, uploads or UploadsSpec(), self._control,
                           lambda t: self._tenants.table.find(t), self._detectors)  # fmt: skip
        self._routes = route_table(self, v2, models)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        config = RouterConfig.model_validate(user_config)
        await self._tenants.configure(config)
        replica = serve.get_replica_context().replica_id.unique_id
        self._calls.audit_to(resolve_path(config.audit_dir) / f"api-{replica}.jsonl")
        self._readiness.forget()
        self._admission.reset()
        self._ingress.forget()
        self._admission.start()  # the settle loop runs from the replica's start
        self._models.start()
        logger.info("router: tenant table now has %d tenants", len(self._tenants.table))

    async def __del__(self) -> None:
        # Graceful shutdown (scale-down, redeploy): Serve awaits an async __del__, so the
        # last usage and the unspent allowances reach the ledger before the replica goes.
        await self._admission.close()
        await self._tenants.close()
        await self._ingress.close()
        await self._models.close()

    # ------------------------------------------------------------ routes

    async def _post_detect(self, request: Request, principal: Principal, call: Call) -> Response:
        async def upload() -> bytes:
            body = await read_body(request)
            content_type = single_header(request, "content-type")
            if len(body) > OFF_LOOP_BODY_BYTES and media_type(content_type)[0] == MULTIPART:
                return await asyncio.to_thread(image_bytes, body, content_type)
            return image_bytes(body, content_type)

        try:
            outcome = await self._detect(principal, upload, request.query_params, call)
        except QuotaExceeded:  # HAProxy refuses this credential too, until the window ends
            auth = request.headers["authorization"]
            self._ingress.refused(auth, principal, self._admission.refusals)
            raise
        if isinstance(outcome, Annotated):
            headers = {"X-Detections": str(len(outcome.result.detections))}
            return Response(outcome.jpeg, media_type="image/jpeg", headers=headers)
        return Response(outcome.model_dump_json(), media_type="application/json")

    async def _get_models(self, _: Request, principal: Principal, __: Call) -> Response:
        return JSONResponse(catalog(principal.tenant))

    async def _get_usage(self, _: Request, principal: Principal, __: Call) -> Response:
        return JSONResponse(await self._usage(principal.tenant))

    async def _get_policy(self, _: Request, principal: Principal, __: Call) -> Response:
        tenant = principal.tenant
        self._control.admit(tenant.id)
        return JSONResponse(policy_view(tenant.policy, await self._defaults.get(tenant.id)))

    async def _put_policy(self, request: Request, principal: Principal, _: Call) -> Response:
        """The tenant's own defaults, inside the operator's bounds, kept by the ledger."""
        tenant = principal.tenant
        self._control.admit(tenant.id)
        expect_json(single_header(request, "content-type"), 'e.g. {"conf": 0.4}')
        body = await read_body(request, MAX_POLICY_BODY_BYTES)
        defaults = parse_defaults(body, tenant.policy)
        await _ask_ledger(
            self._ledger.set_tenant_defaults.remote(tenant.id, defaults),
            "your defaults could not be saved right now; retry shortly",
        )
        self._defaults.put(tenant.id, defaults)
        return JSONResponse(policy_view(tenant.policy, defaults))

    async def _healthz(self, _: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def _readyz(self, _: Request) -> Response:
        status, body = await self._readiness.check(self._tenants.table.tenants())
        return JSONResponse(body, status_code=status)

    # ------------------------------------------------------------ shared core

    async def _detect(
        self,
        principal: Principal,
        upload: Callable[[], Awaitable[bytes]],
        query: Mapping[str, str],
        call: Call,
    ) -> DetectionResult | Annotated:
        """Detect; with ``annotate=true`` in the query, also the image with boxes drawn.

        Everything the credential, the query and the quota decide comes first: the body
        (``upload``) is read and parsed only for a request that was admitted, so parsing
        work is rate-limited like detection, and a refused request costs no body.
        """
        started = time.perf_counter()
        tenant = principal.tenant
        admission, metrics = self._admission, self._calls.metrics
        model = NO_MODEL
        ticket: Ticket | None = None
        try:
            policy.check_known(query)
            annotate = wants_annotation(query.get("annotate"))
            choice = select_model(tenant, query)
            model = call.model = choice.label
            pinned = tenant.tier == "shared" and choice.pinned(tenant)
            if pinned:  # its share of the pool's slots
                self._pool_share.check(tenant.id, choice.label)
            defaults = await self._defaults.get(tenant.id)
            params = policy.clamp(query, effective_policy(tenant.policy, defaults))
            self._detectors.deployment_for(tenant)  # 503 before any quota is spent
            ticket = await admission.admit(tenant.id, tenant.quota, principal.credential)
            try:
                image = await upload()
                images.inspect_image(image)
                outcome = await self._models.detect(
                    self._detectors.detect, tenant, choice, query, image, params, annotate
                )
            finally:
                if ticket.lease is not None:
                    await admission.release(tenant.id, ticket.lease)
        except BaseException as exc:
            if ticket is not None:  # admitted, not answered: not billed
                admission.unspent(tenant.id, ticket)
            if isinstance(exc, ServeAppError):
                admission.record(tenant.id, model, exc.status)
                if isinstance(exc, QuotaExceeded):
                    tags = {"tenant": tenant.id, "reason": exc.reason}
                    metrics.quota_rejections.inc(tags=tags)
            raise
        result = outcome.result if isinstance(outcome, Annotated) else outcome
        if pinned:
            self._pool_share.record(tenant.id, choice.label)
        call.model = result.model  # the fallback version, if it answered
        compute_s = result.timing_ms.get("compute", 0.0) / 1e3
        admission.record(tenant.id, result.model, 200, compute_s, ticket)
        total_ms = round((time.perf_counter() - started) * 1e3, 2)
        metrics.record_detection(tenant.id, result.model, total_ms, result.timing_ms, compute_s)
        result = result.model_copy(update={"timing_ms": {**result.timing_ms, "total": total_ms}})
        if isinstance(outcome, Annotated):
            return Annotated(result=result, jpeg=outcome.jpeg)
        return result

    async def _usage(self, tenant: TenantEntry) -> dict[str, Any]:
        """The tenant's usage report (rate-limited, from a copy at most 1 s old)."""
        self._control.admit(tenant.id)

        async def fetch() -> dict[str, Any]:
            report: dict[str, Any] = await _ask_ledger(
                self._ledger.usage_report.remote(tenant.id, tenant.quota),
                "usage is unavailable right now; retry shortly",
            )
            return report

        return await self._control.usage(tenant.id, fetch)

    # ------------------------------------------------------- Python handle API

    async def detect_image(
        self, api_key: str, image: bytes, params: Mapping[str, Any] | None = None
    ) -> DetectionResult:
        """Detect with a tenant's API key; what ``DetectionClient`` calls."""
        call = Call.start("handle.detect", source_ip=None)
        try:
            principal = self._models.principal(
                await self._tenants.table.authenticate(handle_input.credential(api_key))
            )
            call.identify(principal)
            query = handle_input.query(params)
            upload = given(handle_input.image_bytes(image))
            result = await self._detect(principal, upload, query, call)
            assert isinstance(result, DetectionResult)
        except ServeAppError as exc:
            self._calls.finish(call, "handle", exc.status, exc.code)
            raise
        self._calls.finish(call, "handle", 200, "ok")
        return result

    async def list_models(self, api_key: str) -> dict[str, object]:
        tenant = await self._tenants.table.authenticate(handle_input.credential(api_key))
        return catalog(self._models.principal(tenant).tenant)

    async def usage(self, api_key: str) -> dict[str, Any]:
        """The caller's own usage, as ``GET /v1/usage`` returns it."""
        tenant = await self._tenants.table.authenticate(handle_input.credential(api_key))
        return await self._usage(tenant.tenant)


def route_table(router: Any, v2: V2Api, models: ModelsApi) -> list[ApiRoute]:
    """Every route the router serves: ``openapi.py`` describes each, a test holds the two
    equal."""
    return [
        ApiRoute("/v1/detect", router._post_detect, ["POST"], query=policy.QUERY_PARAMS),
        ApiRoute("/v1/models", router._get_models, ["GET"]),
        ApiRoute("/v1/usage", router._get_usage, ["GET"]),
        ApiRoute("/v1/policy", router._get_policy, ["GET"]),
        ApiRoute("/v1/policy", router._put_policy, ["PUT"]),
        ApiRoute("/healthz", router._healthz, ["GET"], public=True),
        ApiRoute("/readyz", router._readyz, ["GET"], public=True),
        ApiRoute("/openapi.json", _openapi, ["GET"], public=True),
        *(ApiRoute(p, _console, ["GET"], public=True) for p in console.CONSOLE_FILES),
        *models.routes(),
        *v2.routes(),
    ]


async def _openapi(_: Request) -> Response:
    return Response(openapi.document_bytes(), media_type="application/json")


async def _console(request: Request) -> Response:
    """The web console's static files (no credentials needed to fetch them)."""
    found = console.asset(request.url.path)
    assert found is not None  # only console paths are routed here
    body, media_type = found
    return Response(body, media_type=media_type)


def _ledger_of(ledgers: list[Any]) -> Any:
    """The primary and, unless the operator turned it off, the warm standby."""
    if len(ledgers) == 1:
        return ledgers[0]
    return FailoverLedger(ledgers[0], ledgers[1], is_replica_gone)


async def _ask_ledger(call: Any, unavailable: str) -> Any:
    """A ledger call that is not admission: 503 with the given message if it fails."""
    try:
        async with asyncio.timeout(LEDGER_TIMEOUT_S):
            return await call
    except Exception as exc:
        logger.error("router: ledger call failed: %s", type(exc).__name__)
        raise Overloaded(unavailable) from None


def _secured(response: Response, is_console: bool = False) -> Response:
    response.headers.update(console.security_headers(is_console))
    return response
