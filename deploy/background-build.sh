#!/usr/bin/env bash
# `make test`'s builds that its first tests do not need, run in the background at the lowest CPU priority
# while the Dapr runtime is built and the local tests run: Debian's chromium (the console's browser tests), the
# Temporal CLI (the benchmark's peer, the last local test), then the cluster's binaries (Kubernetes, helm, CoreDNS
# and kube-router, the NetworkPolicy enforcer: deploy/k8s/install-k8s.sh) and every image (the Kubernetes tests,
# last of all).
#
#   deploy/background-build.sh start   # returns at once; output in .taskfan/logs/background-build.log
#   deploy/background-build.sh stop    # stops them if they still run (make test's exit trap)
#
# Nothing waits for this script. A test that needs one of these builds runs its install script itself
# (bench/peers/temporal_pipeline.py, tests/k8s/conftest.py, deploy/k8s/up.sh), which waits on the build's lock
# (lib.sh build_lock) and finds it done; if the background build failed, the test's own run builds it again in
# the foreground and fails loudly with the reason.
#
# Why it pays: on a fresh machine these builds are ~35 min of Go compiling on 2 cores, and the local tests leave
# much of the CPU idle (the stack waits on timers, deadlines and hung steps). Why "lowest priority" takes more
# than `nice`: the stack's processes each run in a session of their own, so each is its own autogroup of the
# kernel's scheduler, and nice only orders processes inside one autogroup. The builds run in a session of their
# own whose autogroup gets nice 19 as well (/proc/self/autogroup), so a busy test process always wins the CPU.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
state=$root/.taskfan
pidfile=$state/background-build.pid
log=$state/logs/background-build.log
# shellcheck source=lib.sh
source "$here/lib.sh"

stop() {
  [[ -f $pidfile ]] || return 0
  local sid
  sid=$(cat "$pidfile")
  rm -f "$pidfile"
  # Only a session this script started: its leader is still this script (a recycled pid is left alone).
  [[ $sid =~ ^[0-9]+$ ]] && { tr '\0' ' ' <"/proc/$sid/cmdline"; } 2>/dev/null | grep -q "background-build.sh run" ||
    return 0
  pkill -TERM -s "$sid" || true
  for _ in {1..50}; do pgrep -s "$sid" >/dev/null || return 0; sleep 0.2; done
  pkill -KILL -s "$sid" || true
}

run() {
  export TASKFAN_LOG=$state/logs/background-install.log
  echo 19 >/proc/self/autogroup 2>/dev/null || echo "no autogroup here; nice only"
  renice -n 19 -p $$ >/dev/null
  local failed=0
  bash "$here/install-chromium.sh" >/dev/null || failed=1
  bash "$here/install-temporal.sh" >/dev/null || failed=1
  if (( $(id -u) == 0 )); then
    bash "$here/k8s/install-k8s.sh" >/dev/null || failed=1
    bash "$here/images/build.sh" >/dev/null || failed=1
  else
    echo "not root: the cluster's binaries and images are left to the Kubernetes tests (they need root)"
  fi
  (( failed == 0 )) && echo "background builds done" || echo "a background build failed; the test that needs it builds it again"
}

case ${1:-} in
  start)
    stop  # a run interrupted before its exit trap ran
    # The log and the pid file owner-only, like the rest of the run folder (README, Security).
    private_file "$log" && private_file "$pidfile"
    # setsid: its own session (see above); its pid is the session id `stop` kills.
    setsid bash "${BASH_SOURCE[0]}" run >"$log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    say "chromium, the Temporal CLI, the cluster's binaries and the images build in the background at low priority (once per machine); progress in $log"
    ;;
  stop) stop ;;
  run) run ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
