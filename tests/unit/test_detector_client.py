"""The router's way to the detectors (``inference.detector_client``) with fake handles:
which deployment, one handle per model id, version fallback, calls whose replica died
sent again, and Ray's own failures answered as 503 with Retry-After, never 500."""

from __future__ import annotations

import asyncio

import pytest
from ray import exceptions as ray_errors
from ray.serve import exceptions as serve_errors

from serve_app import ride_through as ride_through_module
from serve_app.config import TenantEntry
from serve_app.errors import ModelUnavailable, Overloaded, UndecodableImage
from serve_app.inference import detector_client as client_module
from serve_app.inference.catalog import select_model
from serve_app.inference.detector_client import DetectorClient
from serve_app.inference.policy import InferenceParams
from serve_app.inference.results import DetectionResult, ImageSize
from tests.unit.fakes import FakeHandle

PARAMS = InferenceParams(0.25, 0.7, 100, None, 1920, None, None)


def _tenant(tier: str = "dedicated", tenant_id: str = "acme") -> TenantEntry:
    return TenantEntry.model_validate(
        {
            "id": tenant_id,
            "name": tenant_id,
            "tier": tier,
            "models": [
                {"name": "pcb", "versions": [1, 2], "active_version": 2, "fallback_version": 1}
            ],
            "default_model": "pcb",
        }
    )


def _result(model: str) -> DetectionResult:
    return DetectionResult(
        model=model, image=ImageSize(width=8, height=8), detections=[], timing_ms={}
    )


def _detector(detect) -> FakeHandle:
    return FakeHandle({"detect": detect}, deployment_name="tenant-acme")


def _run(client: DetectorClient, query: dict[str, str] | None = None, tenant=None):
    tenant = tenant or _tenant()
    choice = select_model(tenant, query or {})
    return asyncio.run(client.detect(tenant, choice, b"img", PARAMS))


def test_each_tier_reaches_its_deployment_and_a_missing_one_is_503():
    own, pool = _detector(lambda *_: None), FakeHandle({}, deployment_name="shared-pool")
    client = DetectorClient({"acme": own}, pool)
    assert client.deployment_for(_tenant()) is own
    assert client.deployment_for(_tenant("shared", "initech")) is pool
    with pytest.raises(ModelUnavailable, match="still being deployed"):
        client.deployment_for(_tenant("dedicated", "globex"))


@pytest.mark.parametrize("tier", ["shared", "dedicated"])
def test_shared_tier_calls_take_a_turn_at_the_pool_dedicated_ones_do_not(tier):
    seen = []

    def detect(*_):
        seen.append(client.pool_turns.in_flight("acme"))
        return _result("pcb@2")

    pool = FakeHandle({"detect": detect}, deployment_name="shared-pool")
    client = DetectorClient({"acme": _detector(detect)}, pool, pool_slots=4)
    assert _run(client, tenant=_tenant(tier)).model == "pcb@2"
    assert seen == [1 if tier == "shared" else 0]  # a turn held during the call
    assert client.pool_turns.in_flight("acme") == 0  # and given back after it


def test_one_handle_per_model_id_carries_that_id():
    own = _detector(lambda *_: _result("pcb@2"))
    client = DetectorClient({"acme": own}, FakeHandle({}))
    _run(client)
    _run(client)
    assert own.options_made == 1
    assert [model for _, model, _ in own.calls] == ["acme/pcb@2", "acme/pcb@2"]


def _in_turn(*answers):
    """A detect that gives ``answers`` one call at a time, raising the exceptions."""
    queue = iter(answers)

    def detect(*_):
        answer = next(queue)
        if isinstance(answer, Exception):
            raise answer
        return answer

    return detect


def test_a_version_that_cannot_load_falls_back_to_the_previous_one():
    own = _detector(_in_turn(ModelUnavailable("could not be loaded"), _result("pcb@1")))
    assert _run(DetectorClient({"acme": own}, FakeHandle({}))).model == "pcb@1"
    assert [model for _, model, _ in own.calls] == ["acme/pcb@2", "acme/pcb@1"]

    def broken(*_):
        raise ModelUnavailable("could not be loaded")

    pinned = _detector(broken)
    with pytest.raises(ModelUnavailable):  # a pinned version has no fallback
        _run(DetectorClient({"acme": pinned}, FakeHandle({})), {"version": "2"})
    assert len(pinned.calls) == 1


GONE = [
    ray_errors.ActorDiedError(),
    ray_errors.ActorUnavailableError("replica unreachable", None),
    serve_errors.DeploymentUnavailableError(None),
]


@pytest.mark.parametrize("error", GONE, ids=type)
def test_a_call_whose_replica_died_is_sent_again_and_answered(error):
    own = _detector(_in_turn(error, error, _result("pcb@2")))
    assert _run(DetectorClient({"acme": own}, FakeHandle({}))).model == "pcb@2"
    # the same version each time: a dead replica is no reason to answer with version 1
    assert [model for _, model, _ in own.calls] == ["acme/pcb@2"] * 3


@pytest.mark.parametrize("error", GONE, ids=type)
def test_replicas_gone_past_the_ride_through_budget_are_503_with_retry_after(error, monkeypatch):
    monkeypatch.setattr(ride_through_module, "RIDE_THROUGH_S", 0.3)

    def detect(*_):
        raise error

    own = _detector(detect)
    with pytest.raises(Overloaded) as caught:
        _run(DetectorClient({"acme": own}, FakeHandle({})))
    assert caught.value.status == 503 and caught.value.retry_after_s
    assert 2 <= len(own.calls) <= 6  # waits 0.05, 0.1, 0.2 s: sent again within 0.3 s
    assert {model for _, model, _ in own.calls} == {"acme/pcb@2"}  # no fallback


def test_back_pressure_is_503_at_once():
    def detect(*_):
        raise serve_errors.BackPressureError(num_queued_requests=10, max_queued_requests=10)

    own = _detector(detect)
    with pytest.raises(Overloaded) as caught:
        _run(DetectorClient({"acme": own}, FakeHandle({})))
    assert caught.value.status == 503 and caught.value.retry_after_s
    assert len(own.calls) == 1  # a full deployment is not asked again and again


def test_client_errors_come_back_typed_and_bugs_are_not_disguised():
    client = DetectorClient({"acme": _detector(lambda *_: UndecodableImage("bad"))}, FakeHandle({}))
    with pytest.raises(UndecodableImage):
        _run(client)

    def bug(*_):
        raise KeyError("a bug in a detector")

    with pytest.raises(KeyError):
        _run(DetectorClient({"acme": _detector(bug)}, FakeHandle({})))


def test_a_detection_that_takes_too_long_is_cancelled_and_503(monkeypatch):
    monkeypatch.setattr(client_module, "DETECT_TIMEOUT_S", 0.05)

    async def never(*_):
        await asyncio.Event().wait()

    with pytest.raises(Overloaded, match="timed out"):
        _run(DetectorClient({"acme": _detector(never)}, FakeHandle({})))


def _concurrently(client: DetectorClient, images: list[bytes], tenant=None, annotate=False):
    """``images`` detected at once (one request each); results or exceptions, in order."""
    tenant = tenant or _tenant()
    choice = select_model(tenant, {})

    async def run():
        calls = [client.detect(tenant, choice, image, PARAMS, annotate) for image in images]
        return await asyncio.gather(*calls, return_exceptions=True)

    return asyncio.run(run())


def _coalescing(detect_many=None) -> FakeHandle:
    """A detector that answers each image with a result named after it (b"bad": a 400)."""

    def answer(image, *_):
        return UndecodableImage("bad") if image == b"bad" else _result(image.decode())

    def many(requests):
        return (detect_many or (lambda r: [answer(i) for i, _ in r]))(requests)

    return FakeHandle({"detect": answer, "detect_many": many}, deployment_name="tenant-acme")


def test_requests_beyond_the_tenants_call_limit_go_to_its_model_together():
    own = _coalescing()
    client = DetectorClient({"acme": own}, FakeHandle({}), call_limits={"acme": 2})
    images = [f"img{i}".encode() for i in range(6)] + [b"bad"]
    results = _concurrently(client, images)
    # each request its own answer (the 400 only for its own image), whatever call carried it
    assert [r.model for r in results[:6]] == [f"img{i}" for i in range(6)]
    assert isinstance(results[6], UndecodableImage)
    # two calls of one image (the limit), then the five waiting ones in one call
    assert [(name, len(args[0]) if name == "detect_many" else 1) for name, _, args in own.calls] \
        == [("detect", 1), ("detect", 1), ("detect_many", 5)]  # fmt: skip
    assert {model for _, model, _ in own.calls} == {"acme/pcb@2"}


@pytest.mark.parametrize("case", ["shared", "no limit", "annotate"])
def test_the_pool_an_unlisted_tenant_and_annotated_images_are_never_coalesced(case):
    own = _coalescing()
    own.deployment_name = "shared-pool" if case == "shared" else "tenant-acme"
    tenant = _tenant("shared" if case == "shared" else "dedicated")
    limits = {} if case == "no limit" else {"acme": 1}
    client = DetectorClient({"acme": own}, own, call_limits=limits)
    results = _concurrently(client, [b"a", b"b", b"c"], tenant, annotate=case == "annotate")
    assert [r.model for r in results] == ["a", "b", "c"]
    assert [name for name, _, _ in own.calls] == ["detect"] * 3


def test_a_coalesced_call_whose_replica_died_is_sent_again_whole():
    died = [False]

    def many(requests):
        if not died[0]:
            died[0] = True
            raise ray_errors.ActorDiedError()
        return [_result(image.decode()) for image, _ in requests]

    own = _coalescing(many)
    client = DetectorClient({"acme": own}, FakeHandle({}), call_limits={"acme": 1})
    results = _concurrently(client, [b"a", b"b", b"c"])
    assert [r.model for r in results] == ["a", "b", "c"]
    assert [name for name, _, _ in own.calls] == ["detect", "detect_many", "detect_many"]
