"""Write configs/grafana-dashboard.json: per-tenant panels for every yoloserve series.

    .venv/bin/python scripts/make_grafana_dashboard.py [-o configs/grafana-dashboard.json]

The dashboard is generated (a unit test keeps the checked-in file in sync and checks
that every query names a series serve_app/observability/metrics.py defines). Import it into Grafana
with a Prometheus data source that scrapes every Ray node's metrics port (8080).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "configs" / "grafana-dashboard.json"
T = '{tenant=~"$tenant"}'

PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Requests/s by tenant and status", "reqps", [
        (f"sum by (tenant, status) (rate(ray_yoloserve_requests_total{T}[1m]))",
         "{{tenant}} {{status}}"),
    ]),
    ("End-to-end latency p50 / p99", "s", [
        (f"histogram_quantile(0.5, sum by (tenant, le) "
         f"(rate(ray_yoloserve_request_latency_seconds_bucket{T}[5m])))", "{{tenant}} p50"),
        (f"histogram_quantile(0.99, sum by (tenant, le) "
         f"(rate(ray_yoloserve_request_latency_seconds_bucket{T}[5m])))", "{{tenant}} p99"),
    ]),
    ("Inference latency p99 by model version", "s", [
        (f"histogram_quantile(0.99, sum by (tenant, model, le) "
         f"(rate(ray_yoloserve_inference_latency_seconds_bucket{T}[5m])))",
         "{{tenant}} {{model}}"),
    ]),
    ("Images/s by model version", "short", [
        (f"sum by (tenant, model) (rate(ray_yoloserve_images_total{T}[1m]))",
         "{{tenant}} {{model}}"),
    ]),
    ("Inference compute (GPU-seconds/s on GPU)", "short", [
        (f"sum by (tenant) (rate(ray_yoloserve_compute_seconds_total{T}[1m]))", "{{tenant}}"),
    ]),
    ("Quota rejections/s by reason", "reqps", [
        (f"sum by (tenant, reason) (rate(ray_yoloserve_quota_rejections_total{T}[1m]))",
         "{{tenant}} {{reason}}"),
    ]),
    ("Model loads, load failures, evictions (by engine)", "short", [
        (f"sum by (tenant, outcome, engine) (increase(ray_yoloserve_model_loads_total{T}[15m]))",
         "{{tenant}} {{outcome}} {{engine}}"),
    ]),
    ("Model load time p95", "s", [
        (f"histogram_quantile(0.95, sum by (tenant, le) "
         f"(rate(ray_yoloserve_model_load_seconds_bucket{T}[30m])))", "{{tenant}}"),
    ]),
    ("Mean batch size by detector", "short", [
        ("sum by (scope) (rate(ray_yoloserve_batch_size_sum[5m])) / "
         "sum by (scope) (rate(ray_yoloserve_batch_size_count[5m]))", "{{scope}}"),
    ]),
    ("Queue depth by detector", "short", [
        ("sum by (scope) (ray_yoloserve_queue_depth)", "{{scope}}"),
    ]),
    ("Images/s per detector deployment", "short", [
        ("sum by (scope) (rate(ray_yoloserve_detector_images_total[1m]))", "{{scope}}"),
    ]),
    ("Audit lines not written (should stay 0)", "short", [
        ("sum(increase(ray_yoloserve_audit_write_failures_total[15m]))", "failures"),
    ]),
    ("Rollouts: box agreement and pairs compared", "short", [
        (f"max by (tenant, model) (ray_yoloserve_rollout_agreement{T})",
         "{{tenant}} {{model}} agreement"),
        (f"max by (tenant, model) (ray_yoloserve_rollout_pairs{T})", "{{tenant}} {{model}} pairs"),
    ]),
    ("Rollouts: p95 latency by side; second inferences/s (not billed)", "s", [
        (f"max by (tenant, model, side) (ray_yoloserve_rollout_latency_p95_seconds{T})",
         "{{tenant}} {{model}} {{side}}"),
        (f"sum by (tenant, mode) (rate(ray_yoloserve_rollout_extra_images_total{T}[1m]))",
         "{{tenant}} {{mode}} extra/s"),
    ]),
]  # fmt: skip


def dashboard() -> dict[str, Any]:
    panels = []
    for index, (title, unit, targets) in enumerate(PANELS):
        panels.append(
            {
                "id": index + 1,
                "type": "timeseries",
                "title": title,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "gridPos": {"h": 8, "w": 12, "x": 12 * (index % 2), "y": 8 * (index // 2)},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "targets": [
                    {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )
    return {
        "title": "yolo-serve-platform: tenants",
        "uid": "yoloserve-tenants",
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "tags": ["ray-serve", "yolo"],
        "templating": {
            "list": [
                {"name": "datasource", "type": "datasource", "query": "prometheus"},
                {
                    "name": "tenant",
                    "type": "query",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "query": "label_values(ray_yoloserve_requests_total, tenant)",
                    "includeAll": True,
                    "multi": True,
                    "current": {"text": "All", "value": "$__all"},
                },
            ]
        },
        "panels": panels,
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=OUT)
    args = parser.parse_args()
    args.output.write_text(render())
    print(f"wrote {args.output} ({len(PANELS)} panels)")


if __name__ == "__main__":
    main()
