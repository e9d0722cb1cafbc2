"""The route table (``http.routes``): Starlette matching with our error responses."""

from __future__ import annotations

import json

import pytest
from starlette.responses import Response

from serve_app.errors import (
    BadParameter,
    MethodNotAllowed,
    NotFound,
    Overloaded,
    QuotaExceeded,
    Unauthenticated,
)
from serve_app.http.routes import ApiRoute, check_query, error_response, match


async def _handler(*_: object) -> Response:
    return Response()


async def _other(*_: object) -> Response:
    return Response()


ROUTES = [
    ApiRoute("/v1/detect", _handler, ["POST"]),
    ApiRoute("/v1/policy", _handler, ["GET"]),
    ApiRoute("/v1/policy", _other, ["PUT"]),
    ApiRoute("/healthz", _handler, ["GET"], public=True),
]


def _scope(method: str, path: str) -> dict:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def test_each_method_and_path_finds_its_own_handler():
    assert match(ROUTES, _scope("POST", "/v1/detect")).handler is _handler
    assert match(ROUTES, _scope("GET", "/v1/policy")).handler is _handler
    assert match(ROUTES, _scope("PUT", "/v1/policy")).handler is _other
    probe = match(ROUTES, _scope("GET", "/healthz"))
    assert probe.public and probe.label == "/healthz"


def test_head_is_answered_for_every_get_route():
    assert match(ROUTES, _scope("HEAD", "/healthz")).label == "/healthz"
    assert match(ROUTES, _scope("HEAD", "/v1/policy")).handler is _handler


def test_a_wrong_method_is_405_listing_every_allowed_one():
    with pytest.raises(MethodNotAllowed) as caught:
        match(ROUTES, _scope("DELETE", "/v1/policy"))
    assert caught.value.headers == {"Allow": "GET, HEAD, PUT"}
    response = error_response(caught.value)
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD, PUT"
    with pytest.raises(MethodNotAllowed, match="use POST"):
        match(ROUTES, _scope("GET", "/v1/detect"))


def test_an_unknown_path_is_404_and_never_echoed():
    with pytest.raises(NotFound) as caught:
        match(ROUTES, _scope("GET", "/v1/<script>"))
    assert "<script>" not in caught.value.message and "/v1/detect" in caught.value.message


def test_error_responses_carry_the_headers_their_status_needs():
    unauth = error_response(Unauthenticated("missing credential"))
    assert unauth.status_code == 401
    assert unauth.headers["www-authenticate"].startswith("Bearer")
    assert json.loads(unauth.body) == {
        "error": {"code": "unauthenticated", "message": "missing credential"}
    }
    busy = error_response(Overloaded("busy", retry_after_s=7))
    assert (busy.status_code, busy.headers["retry-after"]) == (503, "7")
    limited = error_response(QuotaExceeded("slow down", reason="rate_limited"))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert "www-authenticate" not in busy.headers


def test_a_query_takes_only_the_routes_parameters_each_once():
    detect = ApiRoute("/v1/detect", _handler, ["POST"], query={"conf", "model"})
    usage = ApiRoute("/v1/usage", _handler, ["GET"])
    check_query(detect, [("conf", "0.5"), ("model", "a")])
    check_query(usage, [])
    with pytest.raises(BadParameter, match="'conf' is given 3 times; give it once"):
        check_query(detect, [("conf", "0.5"), ("conf", "0.1"), ("conf", "")])
    with pytest.raises(BadParameter, match="'x' for /v1/detect; allowed: conf, model"):
        check_query(detect, [("x", "1"), ("conf", "1"), ("conf", "2")])
    with pytest.raises(BadParameter, match="'month' for /v1/usage; it takes none"):
        check_query(usage, [("month", "2026-13")])


def test_a_matched_routes_path_parameters_reach_the_request():
    from starlette.requests import Request

    routes = [ApiRoute("/v2/models/{model}/versions/{version}/infer", _handler, ["POST"])]
    scope = _scope("POST", "/v2/models/shapes/versions/3/infer")
    route = match(routes, scope)
    assert route.v2 and Request(scope).path_params == {"model": "shapes", "version": "3"}


def test_v2_routes_answer_errors_with_the_protocols_body():
    error = BadParameter("conf must be a number")
    assert json.loads(error_response(error, v2=True).body) == {"error": "conf must be a number"}
    assert json.loads(error_response(error).body)["error"]["code"] == "bad_parameter"
