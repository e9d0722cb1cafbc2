"""``Detector``: one class, deployed once per dedicated tenant (``tenant-<id>``).

A thin Ray shell around the pure modules: ``@serve.multiplexed`` loads model
versions by id (``<tenant>/<model>@<version>``) through the model store,
a greedy batcher (``batcher.py``) groups the requests queued for one model into a
single forward pass whenever the model is free, and every blocking step runs off the
event loop so health checks and new requests are never stuck behind inference.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ray import serve

from serve_app.config import DetectorConfig
from serve_app.constants import (
    BATCH_MAX_SIZE,
    BATCH_WAIT_TIMEOUT_S,
    DETECTOR_MAX_QUEUED_REQUESTS,
    FAILED_LOAD_RETRY_S,
    HANDOVER_MODELS,
    HANDOVER_WINDOW_S,
    MAX_MODELS_PER_REPLICA,
    MODEL_LOAD_RETRY_AFTER_S,
    PREWARM_MODELS,
    REPLICA_HEALTH_CHECK_PERIOD_S,
    SERVE_LOGGING,
    SHARED_POOL_DEPLOYMENT,
    SHARED_POOL_NICE,
)
from serve_app.errors import ModelLoadError, ModelUnavailable, ServeAppError, UnknownModel
from serve_app.inference.annotate import draw_detections
from serve_app.inference.batcher import Batcher
from serve_app.inference.loaded_model import (
    LoadedModel,
    Prepared,
    group_batch,
    load_model,
)
from serve_app.inference.model_room import ModelRoom
from serve_app.inference.model_sources import ModelSources
from serve_app.inference.model_traffic import Traffic
from serve_app.inference.policy import InferenceParams
from serve_app.inference.pool_peers import hand_over, hottest_elsewhere
from serve_app.inference.results import Annotated, DetectionResult
from serve_app.models.cache import WeightsCache, default_cache_dir
from serve_app.models.cpu_priority import lower_priority, thread_priorities
from serve_app.models.load_status import board
from serve_app.models.loader import (
    inference_device,
    match_threads_to_reservation,
)
from serve_app.models.store import fetch_manifest
from serve_app.observability.metrics import DetectorMetrics
from serve_app.ray_compat import (
    held_models,
)
from serve_app.uploads_spec import UploadsSpec
from serve_app.wire import ModelId

logger = logging.getLogger("ray.serve")


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _tenant_of(model_id: str) -> str:
    return ModelId.parse(model_id).tenant


# A request's result, the batch's inference ms and the request's share of it, or an error.
# (result, the predict call's ms, this request's share of it, the call's CPU ms on its thread)
_Outcome = tuple[DetectionResult, float, float, float] | ServeAppError


@serve.deployment(
    max_ongoing_requests=16,
    max_queued_requests=DETECTOR_MAX_QUEUED_REQUESTS,
    health_check_period_s=REPLICA_HEALTH_CHECK_PERIOD_S,
    logging_config=SERVE_LOGGING,
)
class Detector:
    """Runs one tenant's (or the shared pool's) models."""

    def __init__(self, scope: str, uploads: UploadsSpec | None = None) -> None:
        import ray

        self._scope = scope
        reserved = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        self._threads = match_threads_to_reservation(reserved)
        # The pool yields the CPU to reserved tenants (num_cpus enforces nothing).
        self._nice = SHARED_POOL_NICE if scope == SHARED_POOL_DEPLOYMENT else 0
        lower_priority(self._nice)
        # The pool holds many models: a second (burst) session each would double their
        # memory and load time; a dedicated replica's few models take it.
        memory = ray.get_runtime_context().get_assigned_resources().get("memory")
        self._room = ModelRoom(self, memory, burst=scope != SHARED_POOL_DEPLOYMENT)
        self._traffic = Traffic()  # what a new peer warms, what this one hands over
        self._prewarmed = False
        self._sources = ModelSources(uploads)
        self._cache = WeightsCache(default_cache_dir())
        # model id -> (monotonic time, reason) of its last failed load: retried only after
        # FAILED_LOAD_RETRY_S, so a broken upload costs one load, not one per request.
        self._failed: dict[str, tuple[float, str]] = {}
        self._board: Any = None
        self._metrics = DetectorMetrics.create()
        self._in_flight = self._coalesced = 0
        self._batcher = Batcher(
            self._run_batch,
            BATCH_MAX_SIZE,
            BATCH_WAIT_TIMEOUT_S,
            largest=self._largest_batch,
            group=_tenant_of,  # turns go round the tenants (the shared pool's fairness)
        )
        self._loads_done = 0  # successful loads by this replica, for benchmarks
        self._engines: dict[str, str] = {}  # model id -> the engine running it here
        self._largest: dict[str, int | None] = {}  # model id -> its engine's batch limit

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """Swap the catalog, then load the ``preload`` models and, on a new pool replica,
        a running peer's hottest models (``pool_peers``).

        A new replica runs this before it takes traffic, so with a surge rollout the
        old replica keeps serving until the new one has its models in memory. A
        model that fails to load is logged, not raised: it must not fail the replica.
        """
        self._sources.configure(DetectorConfig.model_validate(user_config))
        self._failed.clear()  # a new catalog may have fixed what failed
        batching = self._sources.config.batching
        self._batcher.configure(batching.max_batch_size, batching.batch_wait_timeout_s)
        self._room.configure(self._sources.config)
        preload = list(self._sources.config.preload)
        if self._scope == SHARED_POOL_DEPLOYMENT and not self._prewarmed:
            self._prewarmed = True
            preload += await hottest_elsewhere(self._scope, PREWARM_MODELS)
        for mid in dict.fromkeys(preload):
            try:
                await self.get_model(mid)
                self._traffic.record(mid)  # a peer's traffic, carried into this replica
            except Exception as exc:
                logger.warning("preload of %s failed: %s", mid, type(exc).__name__)

    async def __del__(self) -> None:
        """At a graceful stop (scale-down, rollout), Serve awaits this: a pool replica has
        the others load the models it served lately, so none loses its last copy."""
        if self._scope == SHARED_POOL_DEPLOYMENT:
            recent = self._traffic.since(HANDOVER_WINDOW_S)[:HANDOVER_MODELS]
            await hand_over(self._scope, recent)

    def hottest_models(self, limit: int) -> list[str]:
        """This replica's most served model ids lately, most first (a new peer warms them)."""
        return self._traffic.hottest(limit)

    def _report(self, model_id: str, outcome: str, reason: str = "") -> None:
        try:
            if self._board is None:
                self._board = board()
            self._board.report.remote(model_id, outcome, reason)
        except Exception as exc:  # the board is a convenience; serving must not depend on it
            logger.warning("could not report the load of %s: %s", model_id, type(exc).__name__)

    @serve.multiplexed(max_num_models_per_replica=MAX_MODELS_PER_REPLICA)
    async def get_model(self, model_id: str) -> LoadedModel:
        source = await asyncio.to_thread(self._sources.source, model_id)
        if source is None:
            # The router only asks for versions in its own table, so this is the two
            # user_configs landing at different moments: answer 503 (the router then
            # falls back to the previous version), never a 404 the tenant did not earn.
            raise ModelUnavailable("this model version is still being deployed; retry shortly")
        failed = self._failed.get(model_id)
        if failed is not None and time.monotonic() - failed[0] < FAILED_LOAD_RETRY_S:
            raise ModelUnavailable(
                "this model version failed to load; retry later or use another version",
                retry_after_s=MODEL_LOAD_RETRY_AFTER_S,
            )
        self._room.take_over()
        started = time.perf_counter()
        store, config = self._sources.config.store, self._sources.config
        try:
            manifest = await asyncio.to_thread(fetch_manifest, source.uri, store, source.sha256)
            await self._room.make_room(
                model_id, manifest, self._sources.active(), config.pinned_per_tenant
            )
            model = await asyncio.to_thread(
                load_model, model_id, source, store, self._cache, self._threads,
                self._room.shelf, self._room.burst, manifest,
            )  # fmt: skip
        except (ModelLoadError, OSError, RuntimeError, ValueError) as exc:
            self._failed[model_id] = (time.monotonic(), str(exc))
            self._count_load(model_id, "failed", "-")
            logger.error("model %s failed to load: %s", model_id, exc)
            self._report(model_id, "failed", str(exc))
            raise ModelUnavailable(
                "this model version could not be loaded; the operator has been told",
                retry_after_s=MODEL_LOAD_RETRY_AFTER_S,
            ) from None
        self._failed.pop(model_id, None)
        lower_priority(self._nice)  # the engine's threads too
        self._count_load(model_id, "loaded", model.engine.name)
        self._engines[model_id] = model.engine.name
        self._largest[model_id] = model.runner.largest_batch if model.runner else None
        self._loads_done += 1
        model.on_release = self._evicted
        await self._room.admitted(model)
        elapsed_ms = (time.perf_counter() - started) * 1e3
        self._metrics.load_s.observe(
            elapsed_ms / 1e3, tags={"scope": self._scope, "tenant": _tenant_of(model_id)}
        )
        logger.info("model %s loaded in %.0f ms", model_id, elapsed_ms)
        self._report(model_id, "loaded", f"{model.engine.name}: {model.engine.reason}")
        return model

    async def detect(
        self, image: bytes, params: InferenceParams, annotate: bool = False
    ) -> DetectionResult | Annotated | ServeAppError:
        """Detect objects in one encoded image with the request's multiplexed model;
        with ``annotate``, also the image with the boxes drawn, as JPEG.

        Client errors are returned, not raised: the router re-raises them, and the
        replica does not log a traceback for every bad upload.
        """
        started = time.perf_counter()
        self._queue(+1)
        original = None
        try:
            model_id = serve.get_multiplexed_model_id()
            if not model_id:
                raise UnknownModel("no model id was given with the request")
            # The model is needed first (for its input size); the batch finds it loaded.
            model = await self.get_model(model_id)
            self._traffic.record(model_id)
            if annotate:
                original, prepared = await asyncio.to_thread(
                    model.prepare_keeping_original, image, params
                )
            else:
                prepared = await asyncio.to_thread(model.prepare, image, params)
            decoded = time.perf_counter()
            outcome: _Outcome = await self._batcher.submit(model_id, (prepared, params))
        except ServeAppError as exc:
            return exc
        finally:
            self._queue(-1)
        if isinstance(outcome, ServeAppError):
            return outcome
        result, inference_ms, compute_ms, cpu_ms = outcome
        timing = {
            "decode": round((decoded - started) * 1e3, 2),
            "inference": inference_ms,
            "compute": compute_ms,
            "detector_total": round((time.perf_counter() - started) * 1e3, 2),
        }
        if params.steady:  # a rollout pair's: what the gate compares (tenant_models.py)
            timing["inference_cpu"] = cpu_ms
        result = result.model_copy(update={"timing_ms": timing})
        if original is None:
            return result
        jpeg = await asyncio.to_thread(draw_detections, original, result.detections)
        return Annotated(result=result, jpeg=jpeg)

    async def detect_many(
        self, requests: list[tuple[bytes, InferenceParams]]
    ) -> list[DetectionResult | Annotated | ServeAppError]:
        """Several images for the call's model (a router's coalesced requests): each as
        ``detect``, together through the batcher; a result or error per image, in order."""
        self._coalesced += len(requests)
        return list(await asyncio.gather(*(self.detect(image, p) for image, p in requests)))

    async def _run_batch(
        self, model_id: str, requests: list[tuple[Prepared, InferenceParams]]
    ) -> list[_Outcome]:
        """One batch for one model (from the batcher): a predict call per group of
        requests that share parameters and letterboxed shape."""
        model = await self.get_model(model_id)
        prepared = [p for p, _ in requests]
        params = [q for _, q in requests]
        out: list[_Outcome] = [ModelUnavailable("no result") for _ in requests]
        # Nothing else in this replica (decoding, queued or in this batch): a lone image
        # may borrow idle cores (the runner's burst session).
        alone = len(requests) == 1 and self._in_flight <= 1 and not len(self._batcher)
        for indices in group_batch(params, prepared):
            try:
                started = time.perf_counter()
                group = params[indices[0]]
                results, cpu_ms = await asyncio.to_thread(
                    _on_thread, model.detect, [prepared[i] for i in indices], group,
                    alone and not group.steady,
                )  # fmt: skip
                elapsed_ms = round((time.perf_counter() - started) * 1e3, 2)
            except ServeAppError as exc:
                for i in indices:
                    out[i] = exc
                continue
            # Each request is billed its share of the predict call it was part of.
            share_ms = round(elapsed_ms / len(indices), 3)
            for i, result in zip(indices, results, strict=True):
                out[i] = (result, elapsed_ms, share_ms, cpu_ms)
        self._metrics.images.inc(len(requests), tags={"scope": self._scope})
        self._metrics.batch_size.observe(len(requests), tags={"scope": self._scope})
        return out

    def _largest_batch(self, model_id: str) -> int | None:
        return self._largest.get(model_id)

    def _count_load(self, model_id: str, outcome: str, engine: str) -> None:
        tenant = _tenant_of(model_id)
        tags = {"scope": self._scope, "tenant": tenant, "outcome": outcome, "engine": engine}
        self._metrics.loads.inc(tags=tags)

    def _evicted(self, model_id: str, dropped: bool) -> None:
        self._count_load(model_id, "evicted", self._engines.pop(model_id, "-"))
        self._largest.pop(model_id, None)
        self._room.forget(model_id)

    def _queue(self, delta: int) -> None:
        self._in_flight += delta
        self._metrics.queue_depth.set(self._in_flight, tags={"scope": self._scope})

    async def ready(self) -> bool:
        """Load (or find loaded) the request's model; used by the router's /readyz and by a
        stopping pool replica handing its models over (their traffic comes with them)."""
        model_id = serve.get_multiplexed_model_id()
        await self.get_model(model_id)
        self._traffic.record(model_id)
        return True

    async def describe(self) -> dict[str, Any]:
        """The request's model, loaded (or found loaded): its class names, by id (the
        Open Inference Protocol's model metadata)."""
        model = await self.get_model(serve.get_multiplexed_model_id())
        return {"class_names": list(model.manifest.class_names)}

    def loaded_models(self) -> dict[str, Any]:
        """The model ids this replica holds, the networks they run (identical weights
        once) and their bytes, its limits and how many loads it has done: for operators,
        tests and the pool benchmark."""
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "models": held_models(self),
            **self._room.report(),
            "loads": self._loads_done,
        }

    def batching(self) -> dict[str, Any]:
        """The batch settings in force (they change with user_config, no restart) and
        how full batches have been since the replica started."""
        stats = self._batcher.stats
        return {
            "max_batch_size": self._batcher.max_batch_size,
            "engine_limits": dict(self._largest),
            "batch_wait_timeout_s": self._batcher.wait_s,
            "batches": stats.batches,
            "images": stats.images,
            "largest_batch": stats.largest,
            "in_flight": self._in_flight,
            "coalesced_images": self._coalesced,  # came in a router's detect_many
        }

    def placement(self) -> dict[str, Any]:
        """Where this replica runs: for operators and placement tests."""
        import ray

        ctx = ray.get_runtime_context()
        device, half = inference_device()
        return {
            "scope": self._scope,
            "gpu_ids": [str(g) for g in ctx.get_accelerator_ids().get("GPU", [])],
            "node_id": ctx.get_node_id(),
            "actor_id": ctx.get_actor_id(),
            "device": device,
            "half": half,
            "threads": self._threads,
            "torch_threads": _torch_threads(),
            # the highest priority any of its threads runs at (the shared pool: >= 10)
            "nice": min(thread_priorities(), default=0),
        }


def _on_thread(detect: Any, *args: Any) -> tuple[Any, float]:
    """``detect(*args)`` and the CPU milliseconds it took on this thread: a model's own
    cost, whatever else shares the cores (with one ONNX Runtime thread, all of it)."""
    began = time.thread_time()
    results = detect(*args)
    return results, round((time.thread_time() - began) * 1e3, 2)
