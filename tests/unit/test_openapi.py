"""The OpenAPI document (serve_app/http/openapi.py) describes exactly the routes the router
serves, every one with its parameters, responses and examples; docs/openapi.json is it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import schemathesis

from serve_app import errors
from serve_app.http import openapi
from serve_app.http.models_api import ModelsApi
from serve_app.http.router import route_table
from serve_app.http.v2_api import V2Api
from serve_app.uploads_spec import UploadsSpec
from tests.conftest import ROOT


async def _handler(*_args: object) -> None:
    return None


def _served() -> set[tuple[str, str]]:
    router = SimpleNamespace(**{name: _handler for name in (
        "_post_detect", "_get_models", "_get_usage", "_get_policy", "_put_policy", "_healthz",
        "_readyz")})  # fmt: skip
    v2 = V2Api(_handler, None, _handler, None, None, None, None)  # type: ignore[arg-type]
    models = ModelsApi(None, None, UploadsSpec(), None, None, None)  # type: ignore[arg-type]
    return {(route.path, method) for route in route_table(router, v2, models)
            for method in route.methods if method != "HEAD"}  # fmt: skip


def test_every_route_is_described_and_nothing_else():
    served, described = _served(), openapi.operations()
    assert served - described == set(), "routes the document does not describe"
    assert described - served == set(), "operations no route serves"


def test_docs_openapi_json_is_the_served_document():
    kept = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert kept == json.loads(openapi.document_bytes()), "run `make openapi`"


def test_every_operation_documents_its_responses_with_examples():
    for path, item in openapi.document()["paths"].items():
        for method, op in item.items():
            where = f"{method.upper()} {path}"
            assert op["summary"] and op["description"], where
            assert any(code.startswith("2") for code in op["responses"]), where
            for code, response in op["responses"].items():
                assert response["description"], (where, code)
                body = response.get("content", {}).get("application/json")
                if body is not None and path != "/openapi.json":
                    assert "example" in body, (where, code)
            for parameter in op.get("parameters", []):
                assert parameter["description"] and "example" in parameter, (where, parameter)
            authenticated = op["security"] != []
            if authenticated:  # a credential can always be missing or a query malformed
                assert {"400", "401", "403"} <= set(op["responses"]), where
            if "429" in op["responses"]:
                assert "Retry-After" in op["responses"]["429"]["headers"], where


def test_error_codes_are_the_errors_the_service_raises():
    raised: dict[int, set[str]] = {}
    stack = [errors.ServeAppError]
    while stack:
        cls = stack.pop()
        stack.extend(cls.__subclasses__())
        raised.setdefault(cls.status, set()).add(cls.code)
    for status, (code, _) in openapi.STATUS.items():
        assert code in raised.get(status, set()), (status, code)


def test_v2_errors_have_the_protocols_body_and_v1_errors_v1s():
    paths = openapi.document()["paths"]
    v2 = paths["/v2/models/{model}/infer"]["post"]["responses"]["404"]
    v1 = paths["/v1/detect"]["post"]["responses"]["404"]
    assert v2["content"]["application/json"]["schema"]["$ref"].endswith("/OipError")
    assert v1["content"]["application/json"]["schema"]["$ref"].endswith("/Error")


def test_schemathesis_reads_every_operation():
    schema = schemathesis.openapi.from_dict(openapi.document())
    labels = {op.ok().label for op in schema.get_all_operations()}
    assert labels == {f"{m} {p}" for p, m in openapi.operations()}
