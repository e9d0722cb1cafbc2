"""The upload route's guard on memory: while a router receives one of a tenant's uploads,
the tenant's next upload there is a 503, and other tenants' are not held up. Driven
through ``ModelsApi`` with a body that arrives only when the test lets it, without Ray."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from serve_app.auth.tenants import Principal
from serve_app.config import TenantEntry, TenantModel
from serve_app.errors import BadParameter, Overloaded
from serve_app.http.calls import Call
from serve_app.http.control import ControlCalls
from serve_app.http.models_api import ModelsApi
from serve_app.uploads_spec import UploadsSpec


def _principal(tenant_id: str) -> Principal:
    entry = TenantEntry(
        id=tenant_id, name=tenant_id, tier="shared", default_model="pcb",
        models=[TenantModel(name="pcb", versions=[1], active_version=1)],
    )  # fmt: skip
    return Principal(tenant=entry, credential="key_x")


def _request(body: asyncio.Event | None, reading: asyncio.Event | None = None) -> Request:
    """A multipart upload whose first byte arrives once ``body`` is set (None: at once,
    an invalid form); ``reading`` is set when the route starts reading it."""

    async def receive() -> dict:
        if reading is not None:
            reading.set()
        if body is not None:
            await body.wait()
        return {"type": "http.request", "body": b"not a form", "more_body": False}

    scope = {
        "type": "http", "method": "POST", "path": "/v1/models/pcb/versions",
        "headers": [(b"content-type", b"multipart/form-data; boundary=x")],
        "path_params": {"name": "pcb"}, "query_string": b"",
    }  # fmt: skip
    return Request(scope, receive)


def test_a_tenants_second_upload_waits_for_its_first():
    async def scenario() -> None:
        api = ModelsApi(None, None, UploadsSpec(), ControlCalls(), None, None)  # type: ignore[arg-type]
        upload = next(r.handler for r in api.routes() if r.path.endswith("/versions")
                      and "POST" in (r.methods or ()))  # fmt: skip
        arrives, reading = asyncio.Event(), asyncio.Event()
        first = asyncio.ensure_future(
            upload(_request(arrives, reading), _principal("acme"), Call.start("POST x", None))
        )
        await reading.wait()  # the first is now reading its body
        with pytest.raises(Overloaded, match="another upload is in progress"):
            await upload(_request(None), _principal("acme"), Call.start("POST x", None))
        with pytest.raises(BadParameter):  # another tenant's is read (and refused as a form)
            await upload(_request(None), _principal("other"), Call.start("POST x", None))
        arrives.set()
        with pytest.raises(BadParameter):
            await first
        with pytest.raises(BadParameter):  # the first is done: the tenant may upload again
            await upload(_request(None), _principal("acme"), Call.start("POST x", None))

    asyncio.run(scenario())
