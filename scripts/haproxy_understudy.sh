#!/usr/bin/env bash
# The ingress's understudy: a second HAProxy on the same port, with the same routes, so
# that the node keeps answering when the HAProxy Ray Serve runs dies.
#
# Ray 2.60 restarts its HAProxy only with its proxy actor: three failed health checks
# (RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S apart), a new actor, a new HAProxy without
# routes, then a reload once routes arrive: ~7 s in which every connection was refused
# (docs/reliability.md). Both HAProxies bind the port with SO_REUSEPORT
# (SERVE_SOCKET_REUSE_PORT_ENABLED=1, configs/ray-serve.env), so the kernel spreads new
# connections over both. More than that, they share one listening socket: the understudy
# takes it from Ray's HAProxy (or from the understudy it replaces) and Ray's takes it from
# the understudy (HAProxy's -x, a socket passed over the admin socket: `expose-fd
# listeners`), so the connections waiting to be accepted belong to the socket, not to a
# process: when one HAProxy dies or reloads, the other accepts them. Only the connections
# the dead one had accepted fail. (Two sockets sharing a port, as SO_REUSEPORT alone gives,
# lose the accept queue of the one that closes: a new connection reset in that instant.)
#
# Called by haproxy_loopback.sh, before it becomes Ray's HAProxy:
#   haproxy_understudy.sh routed CONFIG RAY_PID       a config with routes: start the
#       understudy on a copy of it (or reload it: -sf, its in-flight requests finish)
#       and watch over the pair; prints the understudy's admin socket, from which Ray's
#       HAProxy takes the port's listening socket (-x);
#   haproxy_understudy.sh routeless CONFIG RAY_PID [reload]   a config without routes:
#       Ray starting again after its HAProxy died, while the understudy still serves
#       the old routes: Ray's new HAProxy does not take the port (it would answer 503
#       to its share of connections) until its routes arrive. On a reload (every
#       application deleted) the understudy stops: its routes are gone.
# and by itself:
#   haproxy_understudy.sh watch DIR RAY_PID           every 0.5 s while Ray's HAProxy
#       (RAY_PID) lives, start the understudy again if it died. Once RAY_PID is gone:
#       wait YOLOSERVE_UNDERSTUDY_GRACE_S (20 s) for the restarted HAProxy to bring
#       routes (a newer `routed` call takes over the watch), else stop the understudy:
#       Serve is shutting down, and old routes must not outlive it.
#
# The understudy's files are in the folder of Ray's config (one per node), under
# understudy/: its config (Ray's, less the admin socket, the stats and Prometheus
# listeners and the server-state file, which are Ray's), its pid, its log, the path of
# Ray's admin socket (ray-socket: where a restarted understudy takes the port from), and a lock
# that serialises every change (a reload and the watch could otherwise both start one).
# Its PID and its folder (`dir:...`) are appended to YOLOSERVE_HAPROXY_PIDS like Ray's
# PID: scripts/run_local.sh ends them and every process whose command line names that
# folder. When that file is gone (run_local.sh stopping), the watch starts nothing more.
# YOLOSERVE_HAPROXY_UNDERSTUDY=0 turns all of this off.
set -uo pipefail
mode="$1"
binary="${YOLOSERVE_HAPROXY_BINARY:?}"
grace_s="${YOLOSERVE_UNDERSTUDY_GRACE_S:-20}"

alive() {  # the understudy recorded in $dir/pid is running
  local pid
  pid="$(cat "$dir/pid" 2>/dev/null)" || return 1
  [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == haproxy ]] &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$dir/haproxy.cfg"
}

running() {  # process $1 exists and is not a zombie waiting to be reaped
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  [[ ${stat#*) } != Z* ]]
}

stopping() {  # run_local.sh is ending everything: start nothing
  [[ -n ${YOLOSERVE_HAPROXY_PIDS:-} && ! -f $YOLOSERVE_HAPROXY_PIDS ]]
}

lock() {  # one change to the understudy at a time: Ray's reloads and the watch race
  exec 9>"$dir/lock"
  flock -w 10 9
}

unlock() {
  flock -u 9
  exec 9>&-
}

start() {  # start the understudy on $dir/haproxy.cfg, taking over from the last one
  local previous=() source=""
  if alive; then
    previous=(-sf "$(cat "$dir/pid")")
    source="$dir/admin.sock"  # a reload: the old understudy's listening socket
  elif [[ -S $(cat "$dir/ray-socket" 2>/dev/null) ]]; then
    source="$(cat "$dir/ray-socket")"  # started again beside Ray's: Ray's socket
  fi
  stopping && return 0
  # With the socket of a live HAProxy; if that fails (it died meanwhile: HAProxy exits on a
  # failed -x), binding the port afresh.
  if { [[ -n $source ]] && launch -x "$source" "${previous[@]}"; } || launch "${previous[@]}"; then
    mv -f "$dir/pid.new" "$dir/pid"
    if [[ -n ${YOLOSERVE_HAPROXY_PIDS:-} ]]; then cat "$dir/pid" >>"$YOLOSERVE_HAPROXY_PIDS"; fi
  else
    echo "understudy: HAProxy did not start (see $dir/haproxy.log)" >&2
  fi
}

launch() {  # the understudy's HAProxy, daemonised, with extra arguments; its status
  "$binary" -D -p "$dir/pid.new" -f "$dir/haproxy.cfg" "$@" 9>&- >"$dir/haproxy.log" 2>&1
}

stop() {
  if alive; then kill -USR1 "$(cat "$dir/pid")"; fi  # soft stop: in-flight requests finish
  rm -f "$dir/pid" "$dir/generation"
}

case "$mode" in
  routed)
    config="$2" ray_pid="$3"
    dir="$(dirname "$config")/understudy"
    mkdir -p "$dir"
    lock
    if [[ -n ${YOLOSERVE_HAPROXY_PIDS:-} && -f $YOLOSERVE_HAPROXY_PIDS ]] &&
      ! grep -qxF "dir:$dir" "$YOLOSERVE_HAPROXY_PIDS"; then
      echo "dir:$dir" >>"$YOLOSERVE_HAPROXY_PIDS"  # run_local.sh ends all it finds there
    fi
    awk -v dir="$dir" '
      /^[^[:space:]#]/ { skip = ($0 ~ /^(frontend prometheus|listen stats)$/) }
      skip { next }
      /^[[:space:]]*stats socket / { print "    stats socket " dir "/admin.sock mode 600 level admin expose-fd listeners"; next }
      /^[[:space:]]*(server-state-base|server-state-file|load-server-state-from-file)/ { next }
      { print }
    ' "$config" >"$dir/haproxy.cfg"
    awk '$1 == "stats" && $2 == "socket" { print $3; exit }' "$config" >"$dir/ray-socket"
    start
    echo "$ray_pid" >"$dir/generation"  # the previous watch ends; this one starts
    if alive; then echo "$dir/admin.sock"; fi  # Ray's HAProxy takes the port from it
    unlock
    setsid "$0" watch "$dir" "$ray_pid" </dev/null >/dev/null 2>&1 &
    ;;
  routeless)
    config="$2" reload="${4:-}"
    dir="$(dirname "$config")/understudy"
    [[ -d $dir ]] || exit 0  # never started: nothing to do
    lock
    if [[ -n $reload ]]; then
      stop
    elif alive; then
      sed -i '/^frontend http_frontend$/,/^[^[:space:]]/{/^[[:space:]]*bind /d}' "$config"
    fi
    unlock
    ;;
  watch)
    dir="$2" ray_pid="$3" gone_since=""
    while sleep 0.5; do
      lock
      [[ "$(cat "$dir/generation" 2>/dev/null)" == "$ray_pid" ]] || exit 0  # taken over
      stopping && exit 0
      if running "$ray_pid"; then
        gone_since=""
        alive || start
      else
        gone_since="${gone_since:-$SECONDS}"
        alive || exit 0
        if ((SECONDS - gone_since >= grace_s)); then stop; exit 0; fi
      fi
      unlock
    done
    ;;
  *)
    echo "usage: $0 routed|routeless CONFIG RAY_PID [reload] | watch DIR RAY_PID" >&2
    exit 2
    ;;
esac
