"""Every Prometheus series the platform exports, in one place.

Through ``ray.serve.metrics``: each node's metrics agent serves them in Prometheus
format (``ray start --metrics-export-port=8080``; names get Ray's ``ray_`` prefix).
Labels are bounded: ``tenant`` and ``model`` (``name@version``) come from the
registry, never from a request (an unauthenticated call is ``tenant="-"``), ``route``
is one of the known paths or ``other``, ``status`` an HTTP code, ``reason`` one of
the quota codes, ``scope`` a detector deployment (a tenant id or ``shared``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.serve import metrics

from serve_app.constants import (
    METRIC_BATCH_SIZE_BUCKETS,
    METRIC_LATENCY_BUCKETS_S,
    METRIC_LOAD_BUCKETS_S,
)

# Prometheus convention: durations in seconds, the unit spelled out in the name.


@dataclass(frozen=True)
class RouterMetrics:
    requests: metrics.Counter
    latency_s: metrics.Histogram
    inference_s: metrics.Histogram
    images: metrics.Counter
    compute_s: metrics.Counter
    quota_rejections: metrics.Counter
    audit_failures: metrics.Counter

    @classmethod
    def create(cls) -> RouterMetrics:
        return cls(
            requests=metrics.Counter(
                "yoloserve_requests",
                description="API calls by tenant, route and HTTP status.",
                tag_keys=("tenant", "route", "status"),
            ),
            latency_s=metrics.Histogram(
                "yoloserve_request_latency_seconds",
                description="End-to-end latency of detect calls in the router.",
                boundaries=METRIC_LATENCY_BUCKETS_S,
                tag_keys=("tenant",),
            ),
            inference_s=metrics.Histogram(
                "yoloserve_inference_latency_seconds",
                description="Model inference time of the predict call a request was part of.",
                boundaries=METRIC_LATENCY_BUCKETS_S,
                tag_keys=("tenant", "model"),
            ),
            images=metrics.Counter(
                "yoloserve_images",
                description="Images detected, by tenant and model version.",
                tag_keys=("tenant", "model"),
            ),
            compute_s=metrics.Counter(
                "yoloserve_compute_seconds",
                description="Inference compute attributed to each tenant (GPU-seconds on GPU).",
                tag_keys=("tenant", "model"),
            ),
            quota_rejections=metrics.Counter(
                "yoloserve_quota_rejections",
                description="Calls refused by a quota, by reason.",
                tag_keys=("tenant", "reason"),
            ),
            audit_failures=metrics.Counter(
                "yoloserve_audit_write_failures",
                description="Audit lines that could not be written (the calls went on).",
            ),
        )

    def record_detection(
        self,
        tenant: str,
        model: str,
        total_ms: float,
        timing_ms: dict[str, float],
        compute_s: float,
    ) -> None:
        """One answered detect call: its latency, inference time, image and compute."""
        by_model = {"tenant": tenant, "model": model}
        self.latency_s.observe(total_ms / 1e3, tags={"tenant": tenant})
        self.inference_s.observe(timing_ms.get("inference", 0.0) / 1e3, tags=by_model)
        self.images.inc(tags=by_model)
        if compute_s > 0:
            self.compute_s.inc(compute_s, tags=by_model)


@dataclass(frozen=True)
class DetectorMetrics:
    loads: metrics.Counter
    load_s: metrics.Histogram
    images: metrics.Counter
    batch_size: metrics.Histogram
    queue_depth: metrics.Gauge

    @classmethod
    def create(cls) -> DetectorMetrics:
        return cls(
            loads=metrics.Counter(
                "yoloserve_model_loads",
                description="Model version loads, load failures and LRU evictions, by engine "
                "(onnxruntime; torch on GPUs, by choice, or when a compiled graph was refused).",
                tag_keys=("scope", "tenant", "outcome", "engine"),
            ),
            load_s=metrics.Histogram(
                "yoloserve_model_load_seconds",
                description="Fetch + verify + build + warm-up time of a model version.",
                boundaries=METRIC_LOAD_BUCKETS_S,
                tag_keys=("scope", "tenant"),
            ),
            images=metrics.Counter(
                "yoloserve_detector_images",
                description="Images run through a model, by detector deployment.",
                tag_keys=("scope",),
            ),
            batch_size=metrics.Histogram(
                "yoloserve_batch_size",
                description="Requests per batch handed to one model.",
                boundaries=METRIC_BATCH_SIZE_BUCKETS,
                tag_keys=("scope",),
            ),
            queue_depth=metrics.Gauge(
                "yoloserve_queue_depth",
                description="Detect requests inside a detector replica (decoding, "
                "waiting for a batch, or inferring).",
                tag_keys=("scope",),
            ),
        )


@dataclass(frozen=True)
class RolloutMetrics:
    """A rollout's running totals, as the ledger keeps them (``model`` is the candidate,
    ``name@version``), and the second inferences routers ran for the gate."""

    pairs: metrics.Gauge
    agreement: metrics.Gauge
    p95_s: metrics.Gauge
    extra_images: metrics.Counter

    @classmethod
    def create(cls) -> RolloutMetrics:
        by_model = ("tenant", "model")
        return cls(
            pairs=metrics.Gauge(
                "yoloserve_rollout_pairs",
                description="Pairs of answers (incumbent, candidate) compared so far.",
                tag_keys=by_model,
            ),
            agreement=metrics.Gauge(
                "yoloserve_rollout_agreement",
                description="Mean box agreement (per-class F1 at IoU 0.5) so far.",
                tag_keys=by_model,
            ),
            p95_s=metrics.Gauge(
                "yoloserve_rollout_latency_p95_seconds",
                description="p95 latency of each side of the rollout's pairs.",
                tag_keys=(*by_model, "side"),
            ),
            extra_images=metrics.Counter(
                "yoloserve_rollout_extra_images",
                description="Second inferences run for rollouts (not billed), by mode.",
                tag_keys=("tenant", "mode"),
            ),
        )

    def record(self, tenant: str, model: str, pairs: int, agreement: float,
               p95_ms: dict[str, float]) -> None:  # fmt: skip
        tags = {"tenant": tenant, "model": model}
        self.pairs.set(pairs, tags=tags)
        self.agreement.set(agreement, tags=tags)
        for side, ms in p95_ms.items():
            self.p95_s.set(ms / 1e3, tags={**tags, "side": side})
