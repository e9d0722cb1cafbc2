#!/usr/bin/env bash
# `make run`: a single-node Ray whose metrics agent exports Prometheus metrics on port
# 8080 (YOLOSERVE_METRICS_PORT), then `serve run CONFIG` on it. Ctrl-C stops Serve,
# and the trap stops Ray.
set -euo pipefail
config="${1:-configs/serve.local.yaml}"
bin="${BIN:-$(dirname "$0")/../.venv/bin}"
metrics_port="${YOLOSERVE_METRICS_PORT:-8080}"
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false RAY_USAGE_STATS_ENABLED=0
unset RAY_ADDRESS

"$bin/ray" start --head --metrics-export-port="$metrics_port" \
  --dashboard-host=127.0.0.1 --disable-usage-stats
trap '"$bin/ray" stop --force >/dev/null 2>&1 || true' EXIT
"$bin/serve" run --address auto "$config"
