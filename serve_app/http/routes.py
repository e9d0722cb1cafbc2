"""The HTTP route table: Starlette ``Route`` matching, our own responses.

Each route names one handler. ``match`` returns the route for a request or, when the
path exists but not for this method, the methods it does allow (a 405 with ``Allow``).
Starlette adds ``HEAD`` to every ``GET`` route, probes included. Matching is all this
borrows from Starlette's router: handlers take a ``Request`` and return a ``Response``
inside the Serve replica, with no ASGI plumbing per call.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence

from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route
from starlette.types import Scope

from serve_app.constants import RETRY_AFTER_S
from serve_app.errors import (
    BadParameter,
    MethodNotAllowed,
    NotFound,
    ServeAppError,
    error_body,
)

Handler = Callable[..., Awaitable[Response]]

NO_SUCH_ROUTE = (
    "no such route; the API is POST /v1/detect, GET /v1/models, GET /v1/usage and "
    "GET or PUT /v1/policy, and the Open Inference Protocol under /v2 (GET /openapi.json "
    "describes every route); the web console is at /console"
)
V2_PREFIX = "/v2"


class ApiRoute(Route):
    """A route with what the router needs to know before calling its handler.

    ``public`` routes (probes, console files) take no credential and are not audited;
    ``label`` names the route in metrics and audit lines (never the raw path); ``query``
    is the query parameters an API route takes (``check_query``); a ``v2`` route (the Open
    Inference Protocol) answers errors as that protocol does, ``{"error": message}``.
    """

    def __init__(
        self,
        path: str,
        endpoint: Handler,
        methods: Sequence[str],
        *,
        public: bool = False,
        query: Iterable[str] = (),
    ) -> None:
        super().__init__(path, endpoint, methods=list(methods))
        self.handler = endpoint
        self.public = public
        self.label = path
        self.query = frozenset(query)
        self.v2 = path.startswith(V2_PREFIX)


def check_query(route: ApiRoute, items: Iterable[tuple[str, str]]) -> None:
    """An API route's query: each parameter one it takes, and given once (which of two
    values would count is as ambiguous as two credentials).

    Raises:
        BadParameter: Naming the first unknown or repeated parameter and the fix.
    """
    counts = Counter(name for name, _ in items)
    unknown = sorted(set(counts) - route.query)
    if unknown:
        takes = f"allowed: {', '.join(sorted(route.query))}" if route.query else "it takes none"
        raise BadParameter(
            f"unknown query parameter {unknown[0][:32]!r} for {route.label}; {takes}"
        )
    repeated = sorted(name for name, n in counts.items() if n > 1)
    if repeated:
        raise BadParameter(
            f"query parameter {repeated[0][:32]!r} is given {counts[repeated[0]]} times; "
            "give it once"
        )


def match(routes: Sequence[ApiRoute], scope: Scope) -> ApiRoute:
    """The route for this request; its path parameters go into ``scope`` (``path_params``,
    what ``request.path_params`` reads).

    Raises:
        MethodNotAllowed: The path exists, the method does not (carries ``Allow``).
        NotFound: No such path (the path is not echoed).
    """
    allowed: set[str] = set()
    for route in routes:
        found, child = route.matches(scope)
        if found is Match.FULL:
            scope.update(child)
            return route
        if found is Match.PARTIAL:
            allowed |= route.methods or set()
    if allowed:
        allow = ", ".join(sorted(allowed))
        raise MethodNotAllowed(
            f"{scope['method'][:16]} is not allowed here; use {allow}", headers={"Allow": allow}
        )
    raise NotFound(NO_SUCH_ROUTE)


def error_response(error: ServeAppError, v2: bool = False) -> JSONResponse:
    """The one place API errors become HTTP responses: JSON body (the Open Inference
    Protocol's ``{"error": message}`` for ``v2`` routes), ``Retry-After`` on every 429
    and 503, ``WWW-Authenticate`` on every 401."""
    headers = dict(error.headers)
    if error.status in (429, 503):
        headers["Retry-After"] = str(error.retry_after_s or RETRY_AFTER_S)
    if error.status == 401:
        headers.setdefault("WWW-Authenticate", 'Bearer realm="yolo"')
    body = {"error": error.message} if v2 else error_body(error)
    return JSONResponse(body, status_code=error.status, headers=headers)


def internal_error(v2: bool = False) -> JSONResponse:
    message = "internal error; it has been logged"
    body = {"error": message} if v2 else {"error": {"code": "internal", "message": message}}
    return JSONResponse(body, status_code=500)
