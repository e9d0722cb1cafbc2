"""The Open Inference Protocol's routes (``/v2``), on the router beside ``/v1``.

Same credential (``Authorization: Bearer``), quotas, metering, batching and isolation as
``POST /v1/detect``: an inference request of N images is N detect calls through the
router's shared core (each admitted, metered and billed as one image, batched by the
detector like any other). ``{model}`` is a model of the caller's catalog; another
tenant's model answers exactly as one that exists nowhere. Errors keep v1's status codes
with the protocol's body, ``{"error": message}``.

What a request with several images does when one of them cannot be answered: every
image's header is checked before anything is admitted (a bad image is a 4xx naming its
index, nothing billed); after that, the request answers with the first failure in image
order (e.g. 429 when the tenant's burst is smaller than N) and no partial results, and
images already answered are billed (their work was done). Send at most your burst per
request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from serve_app.auth.tenants import Principal
from serve_app.constants import MAX_CACHED_HANDLES, RETRY_AFTER_S, V2_MAX_BODY_BYTES
from serve_app.errors import QuotaExceeded, ServeAppError
from serve_app.http import oip
from serve_app.http.body import read_body
from serve_app.http.calls import Call
from serve_app.http.control import ControlCalls
from serve_app.http.ingress_refusals import IngressRefusals
from serve_app.http.routes import ApiRoute
from serve_app.inference import images
from serve_app.inference.catalog import ModelChoice, select_model
from serve_app.inference.detector_client import DetectorClient
from serve_app.inference.pool_share import PoolShare
from serve_app.inference.results import Annotated, DetectionResult
from serve_app.quota.refusals import Refusals

Upload = Callable[[], Awaitable[bytes]]
Detect = Callable[[Principal, Upload, Mapping[str, str], Call], Awaitable[Any]]
Probe = Callable[[], Awaitable[tuple[int, dict[str, Any]]]]

MODEL = "/v2/models/{model}"
VERSION = "/v2/models/{model}/versions/{version}"


class V2Api:
    """The ``/v2`` routes; ``detect`` is the router's shared core (``Router._detect``)."""

    def __init__(
        self,
        detect: Detect,
        detectors: DetectorClient,
        ready: Probe,
        ingress: IngressRefusals,
        refusals: Refusals,
        control: ControlCalls,
        pool_share: PoolShare,
    ) -> None:
        self._detect = detect
        self._detectors = detectors
        self._ready = ready
        self._ingress = ingress
        self._refusals = refusals
        self._control = control
        self._pool_share = pool_share
        self._class_names: dict[str, list[str]] = {}  # model id -> its classes (immutable)

    def routes(self) -> list[ApiRoute]:
        return [
            ApiRoute("/v2", self._server, ["GET"], public=True),
            ApiRoute("/v2/health/live", self._live, ["GET"], public=True),
            ApiRoute("/v2/health/ready", self._server_ready, ["GET"], public=True),
            *(ApiRoute(base, self._metadata, ["GET"]) for base in (MODEL, VERSION)),
            *(ApiRoute(f"{base}/ready", self._model_ready, ["GET"]) for base in (MODEL, VERSION)),
            *(ApiRoute(f"{base}/infer", self._infer, ["POST"]) for base in (MODEL, VERSION)),
        ]

    async def _server(self, _: Request) -> Response:
        return JSONResponse(oip.SERVER)

    async def _live(self, _: Request) -> Response:
        return JSONResponse({"live": True})

    async def _server_ready(self, _: Request) -> Response:
        status, _body = await self._ready()
        return JSONResponse({"ready": status == 200}, status_code=status)

    async def _metadata(self, request: Request, principal: Principal, _: Call) -> Response:
        tenant, selection = principal.tenant, _selection(request)
        self._control.admit(tenant.id)  # rate-limited like usage calls, answered or cached
        choice = select_model(tenant, selection)
        model = tenant.model(choice.name)
        assert model is not None  # select_model found it
        mid = choice.id_for(tenant.id)
        names = self._class_names.get(mid)
        if names is None:  # a version's classes never change: asked once per router
            names = (await self._ask(principal, choice, "describe"))["class_names"]
            if len(self._class_names) >= MAX_CACHED_HANDLES:
                self._class_names.clear()
            self._class_names[mid] = names
        versions = [choice.version] if "version" in selection else sorted(model.versions)
        return JSONResponse(oip.model_metadata(choice.name, versions, names))

    async def _model_ready(self, request: Request, principal: Principal, _: Call) -> Response:
        self._control.admit(principal.tenant.id)
        choice = select_model(principal.tenant, _selection(request))
        try:
            await self._ask(principal, choice, "ready")
        except ServeAppError as exc:
            if exc.status != 503:
                raise
            headers = {"Retry-After": str(exc.retry_after_s or RETRY_AFTER_S)}
            return JSONResponse({"name": choice.name, "ready": False}, 503, headers)
        return JSONResponse({"name": choice.name, "ready": True})

    async def _ask(self, principal: Principal, choice: ModelChoice, method: str) -> Any:
        """A call to the model without an image (it loads the model if no replica holds
        it): a shared tenant's pinned version within its share of the pool
        (``pool_share.py``), as detection is."""
        tenant = principal.tenant
        pinned = tenant.tier == "shared" and choice.pinned(tenant)
        if pinned:
            self._pool_share.check(tenant.id, choice.label)
        answer = await self._detectors.ask(tenant, choice, method)
        if pinned:
            self._pool_share.record(tenant.id, choice.label)
        return answer

    async def _infer(self, request: Request, principal: Principal, call: Call) -> Response:
        select_model(principal.tenant, _selection(request))  # 404 before the body is read
        body = await read_body(request, V2_MAX_BODY_BYTES)
        parsed = oip.parse_infer(body, request.headers.get(oip.HEADER_LENGTH))
        for i, image in enumerate(parsed.images):  # all checked before any is admitted
            try:
                images.inspect_image(image)
            except ServeAppError as exc:
                exc.message = f"image {i}: {exc.message}"
                raise
        query = {**_selection(request), **parsed.params}
        answers = await asyncio.gather(
            *(self._detect(principal, given(image), query, call) for image in parsed.images),
            return_exceptions=True,
        )
        results = []
        for i, answer in enumerate(answers):
            if isinstance(answer, QuotaExceeded):  # HAProxy refuses the credential too
                self._ingress.refused(request.headers["authorization"], principal, self._refusals)
            if isinstance(answer, ServeAppError):
                if len(answers) > 1:
                    answer.message = f"image {i}: {answer.message}"
                raise answer
            if isinstance(answer, BaseException):
                raise answer
            assert isinstance(answer, DetectionResult | Annotated)
            results.append(answer if isinstance(answer, DetectionResult) else answer.result)
        name, _, version = results[0].model.partition("@")
        content, headers = oip.infer_response(parsed, name, version, results)
        return Response(content, headers=headers)


def _selection(request: Request) -> dict[str, str]:
    """The model (and version) in the path, as v1's query names them."""
    params = request.path_params
    selection = {"model": params["model"]}
    if "version" in params:
        selection["version"] = params["version"]
    return selection


def given(image: bytes) -> Upload:
    """An image already in hand (handle calls, v2 requests), as ``_detect`` takes an
    upload."""

    async def upload() -> bytes:
        return image

    return upload
