"""The Ray internals ``serve_app.ray_compat`` relies on are still where it was written
against. When this fails after a Ray upgrade, re-read ``ray_compat.py`` against the new
Ray (and its integration tests) before changing ``RAY_VERSION``."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import ray
import ray.serve.api

from serve_app import ray_compat

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_ray_is_the_one_ray_compat_was_checked_against():
    assert ray.__version__ == ray_compat.RAY_VERSION, (
        f"Ray {ray.__version__} is installed; serve_app/ray_compat.py was checked against "
        f"{ray_compat.RAY_VERSION}: re-check each internal it uses, then update RAY_VERSION"
    )


def test_the_private_names_still_exist():
    context = importlib.import_module("ray.serve.context")
    assert callable(context._get_serve_request_context)
    assert "request_id" in inspect.signature(context._RequestContext).parameters
    # @serve.multiplexed hangs its per-replica wrapper on the instance under this name.
    assert f'"{ray_compat.MULTIPLEX_WRAPPER_ATTR}"' in inspect.getsource(ray.serve.api)
    multiplex = importlib.import_module("ray.serve.multiplex")
    wrapper_source = inspect.getsource(multiplex._ModelMultiplexWrapper)
    assert "self.max_num_models_per_replica" in wrapper_source
    assert "self.models" in wrapper_source
    # disable_multiplex_lru: 0 turns the wrapper's own eviction off.
    assert "self.max_num_models_per_replica > 0" in wrapper_source
    # unload_model: the LRU order is an OrderedDict whose first item unload_model_lru
    # pops before its first await; the pushed model list follows a flag.
    unload_source = inspect.getsource(multiplex._ModelMultiplexWrapper.unload_model_lru)
    first_await = unload_source.index("await")
    assert 0 < unload_source.index("self.models.popitem(last=False)") < first_await
    assert "self.models = OrderedDict()" in wrapper_source
    assert "if self._push_multiplexed_replica_info:" in wrapper_source
    handle_options = importlib.import_module("ray.serve._private.handle_options")
    assert "_run_router_in_separate_loop" in inspect.getsource(handle_options)
    assert "is_initialized" in inspect.getsource(ray.serve.handle)
    sdk = importlib.import_module("ray.dashboard.modules.serve.sdk")
    for method in ("deploy_applications", "get_serve_details", "delete_applications"):
        assert callable(getattr(sdk.ServeSubmissionClient, method))


def test_no_module_outside_ray_compat_touches_those_internals():
    private = (
        "_get_serve_request_context",
        "__serve_multiplex_wrapper",
        "ServeSubmissionClient",
        "_run_router_in_separate_loop",
        "unload_model_lru",
        "_push_multiplexed_replica_info",
    )
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("serve_app", "tenant_registry", "scripts", "tests", "benchmarks")
        for path in (ROOT / folder).rglob("*.py")
        if path.name not in ("ray_compat.py", "test_ray_compat.py")
        and any(name in path.read_text() for name in private)
    ]
    assert offenders == []


def test_unavailability_errors_are_told_apart_from_bugs():
    from ray import exceptions as core
    from ray.serve import exceptions as serve_errors

    assert ray_compat.is_unavailable(core.ActorDiedError())
    assert ray_compat.is_unavailable(
        serve_errors.BackPressureError(num_queued_requests=1, max_queued_requests=1)
    )
    assert not ray_compat.is_unavailable(KeyError("bug"))
    assert not ray_compat.is_unavailable(core.RayTaskError("f", "tb", KeyError("bug")))


def test_what_the_pool_router_relies_on_is_still_there():
    """``inference/pool_router.py`` builds on Serve's alpha ``RequestRouter`` API: the
    queue lengths a caller sees, what each replica holds, a hook per routed call, a
    backoff flag, and the mixins that hand a chosen replica to a pending call for the
    same model (calls made inside one request share an internal request id)."""
    from ray.serve.request_router import (
        FIFOMixin,
        MultiplexMixin,
        PendingRequest,
        RequestRouter,
        RunningReplica,
    )

    assert isinstance(inspect.getattr_static(RequestRouter, "replica_queue_len_cache"), property)
    assert isinstance(inspect.getattr_static(RunningReplica, "multiplexed_model_ids"), property)
    assert list(inspect.signature(RequestRouter.on_request_routed).parameters) == [
        "self", "pending_request", "replica_id", "result",
    ]  # fmt: skip
    assert "should_backoff" in inspect.getsource(PendingRequest.__dataclass_fields__[
        "routing_context"].default_factory)  # fmt: skip
    assert "_get_pending_request_matching_metadata" in inspect.getsource(
        FIFOMixin._fulfill_next_pending_request
    )
    assert callable(MultiplexMixin._get_pending_request_matching_multiplexed_model_id)
