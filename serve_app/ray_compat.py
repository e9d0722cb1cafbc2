"""Everything version-sensitive about Ray, in one place.

The platform relies on three Ray internals that no public API offers, and on which
of Ray's exceptions mean "that replica is gone or full, try again":

* the request id Serve gives each call (``ray.serve.context._get_serve_request_context``),
  written into audit lines so they match ``X-Request-Id``;
* the per-replica multiplex wrapper ``@serve.multiplexed`` hangs on the deployment
  object (``__serve_multiplex_wrapper``): it knows which models a replica holds, least
  recently used first (``models``, an ``OrderedDict``), its own LRU limit can be turned
  off (the detector chooses what to unload) and one chosen model unloaded;
* the dashboard's Serve REST client (``ServeSubmissionClient``), which ``serve deploy``
  itself uses;
* where Ray's HAProxy keeps its files on a node (``/tmp/haproxy-serve/<node id>/``, from
  ``RAY_SERVE_HAPROXY_CONFIG_FILE_LOC`` and ``RAY_SERVE_HAPROXY_SOCKET_PATH``), whose
  admin socket the router tells of refusals (``http/ingress_refusals.py``);
* a handle's init option ``_run_router_in_separate_loop``: with
  ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (configs/ray-serve.env) handles route on the
  caller's event loop, which a blocking caller (a script, a Ray task) does not have.

Outside this file, ``inference/pool_router.py`` subclasses Serve's ``RequestRouter``, a
public API still marked alpha; the test below pins the parts of it the pool relies on.

``RAY_VERSION`` is the version these were read from; ``tests/unit/test_ray_compat.py``
fails when the installed Ray differs or any of them moved, so an upgrade is a
deliberate re-check of this file rather than a surprise in production.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

RAY_VERSION = "2.60.0"
MULTIPLEX_WRAPPER_ATTR = "__serve_multiplex_wrapper"


@functools.cache
def _request_context() -> Callable[[], Any]:
    # Imported on first use: tenantctl imports this module and must not load Ray Serve.
    from ray.serve.context import _get_serve_request_context

    return _get_serve_request_context  # type: ignore[no-any-return]


def request_id() -> str | None:
    """The id Serve gave the current request (``X-Request-Id`` over HTTP)."""
    found: str | None = _request_context()().request_id
    return found or None


def multiplex_wrapper(replica: object) -> Any | None:
    """The multiplex wrapper of a deployment instance; None before its first model load."""
    return getattr(replica, MULTIPLEX_WRAPPER_ATTR, None)


def held_models(replica: object) -> list[str]:
    """Model ids a replica holds, sorted."""
    wrapper = multiplex_wrapper(replica)
    return sorted(wrapper.models) if wrapper is not None else []


def held_in_lru_order(replica: object) -> list[str]:
    """Model ids a replica holds, least recently used first."""
    wrapper = multiplex_wrapper(replica)
    return list(wrapper.models) if wrapper is not None else []


def disable_multiplex_lru(replica: object) -> None:
    """Stop Serve's wrapper from unloading models by itself: the replica decides.

    Serve fixes ``max_num_models_per_replica`` at decoration time, but the per-replica
    wrapper (created on the first load) reads this attribute on every load; 0 is "no
    limit".
    """
    wrapper = multiplex_wrapper(replica)
    if wrapper is not None:
        wrapper.max_num_models_per_replica = 0


async def unload_model(replica: object, model_id: str) -> None:
    """Unload one held model the way Serve unloads its LRU one (``__del__`` called, the
    controller told), whatever its place in the LRU order."""
    wrapper = multiplex_wrapper(replica)
    if wrapper is None or model_id not in wrapper.models:
        return
    # No await between the move and the pop inside unload_model_lru: nothing can
    # reorder the dict in between.
    wrapper.models.move_to_end(model_id, last=False)
    await wrapper.unload_model_lru()
    wrapper._push_multiplexed_replica_info = True


def serve_submission_client(address: str, headers: dict[str, str] | None = None) -> Any:
    """Ray's client for the dashboard's Serve REST API (what ``serve deploy`` uses)."""
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(address, headers=headers or {})


def handle_for_blocking_callers(handle: Any) -> Any:
    """``handle`` with its router on a loop of its own, so ``.result()`` works from code
    with no running event loop whatever the cluster's defaults (async callers can still
    ``await`` it)."""
    if not handle.is_initialized:
        handle._init(_run_router_in_separate_loop=True)
    return handle


def is_unavailable(exc: BaseException) -> bool:
    """True for Ray's errors meaning the replica died, is unreachable or refused the
    call for back-pressure: the request did not fail, the serving did, and the
    client should retry (503 with Retry-After), never see a 500."""
    from ray import exceptions as core
    from ray.serve import exceptions as serve_errors

    transient = (
        core.RayActorError,  # includes ActorDiedError
        core.ActorUnavailableError,
        core.WorkerCrashedError,
        core.NodeDiedError,
        core.ObjectLostError,
        serve_errors.BackPressureError,
        serve_errors.DeploymentUnavailableError,
        serve_errors.ReplicaUnavailableError,
    )
    return isinstance(exc, transient)


def is_replica_gone(exc: BaseException) -> bool:
    """True when the replica a call went to died or could not be reached: the call
    may be sent again (a live replica or the replacement takes it). Back-pressure is
    not among them: a full deployment answers 503 at once, not after retries."""
    from ray.serve import exceptions as serve_errors

    return is_unavailable(exc) and not isinstance(exc, serve_errors.BackPressureError)


def node_session_folder() -> Path:
    """This node's Ray session folder (``/tmp/ray/session_…``): on the node's own disk,
    shared by every Ray process on the node, new with every cluster start."""
    import ray

    node = ray._private.worker._global_node  # no public getter in Ray 2.60
    return Path(node.get_session_dir_path())


def haproxy_files() -> tuple[Path, Path] | None:
    """This node's HAProxy config folder and admin socket, or None when Serve's ingress
    is not HAProxy (``RAY_SERVE_ENABLE_HA_PROXY``). Ray keeps them per node id."""
    import ray
    from ray.serve._private import constants

    if not constants.RAY_SERVE_ENABLE_HA_PROXY:
        return None
    node = ray.get_runtime_context().get_node_id()
    config = Path(constants.RAY_SERVE_HAPROXY_CONFIG_FILE_LOC)
    socket = Path(constants.RAY_SERVE_HAPROXY_SOCKET_PATH)
    return config.parent / node, socket.parent / node / socket.name
