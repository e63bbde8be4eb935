#!/usr/bin/env bash
# Check the archives deploy/images/build.sh wrote: their OCI structure with tar, and with --containerd also
# a real import and run under a containerd of its own (Debian's package, installed if missing), started in a
# temporary directory with its own socket, root and state and without its CRI plugin, so it cannot meet any
# other containerd on the machine (runc's state and the FIFOs live there too; only the shims' sockets go to
# /run/containerd/s, named by a hash of this socket's path); it is stopped and its directory removed at the end.
#
#   deploy/images/check.sh [--containerd] [ARCHIVE...]     # default: .taskfan/images/*.tar
#
# The run: every image as the user its config names, with a read-only root and a tmpfs on /tmp (as the Helm
# charts run them): Taskfan's imports its packages and service modules and starts the scorer for 6 s; Dapr's
# and KEDA's print their version or their usage.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export TASKFAN_LOG=$root/.taskfan/logs/images.log TASKFAN_LOG_PREFIX=check
# shellcheck source=../lib.sh
source "$here/../lib.sh"

with_containerd=
if [[ ${1:-} == --containerd ]]; then with_containerd=1; shift; fi
archives=("$@")
(( ${#archives[@]} )) || archives=("$root"/.taskfan/images/*.tar)
[[ -f ${archives[0]} ]] || fail "no archives: run deploy/images/build.sh first"

tmp=$(mktemp -d /tmp/taskfan-images-check.XXXXXX)
containerd_pid=
finish() {
  local rc=$?
  if [[ -n $containerd_pid ]]; then
    kill "$containerd_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$containerd_pid" 2>/dev/null || break; sleep 0.1; done
  fi
  # Whatever containerd left mounted under its root (snapshots) must go before the directory does.
  awk -v t="$tmp" 'index($2, t) == 1 { print $2 }' /proc/self/mounts | sort -r | xargs -r umount -l
  rm -rf "$tmp"
  rmdir /run/containerd/s /run/containerd 2>/dev/null || true # only if empty: then nobody else uses them
  exit "$rc"
}
trap finish EXIT

# --- structure -------------------------------------------------------------------------------------------
structure() { # structure ARCHIVE: layout files, every blob's digest and size, the manifest's references
  local a=$1 d=$tmp/x listing blob digest size index manifest config ref
  rm -rf "$d" && mkdir -p "$d"
  listing=$(tar -tvf "$a")
  for f in oci-layout index.json blobs/sha256/; do
    grep -q " $f\$" <<<"$listing" || { echo "$a: no $f in the archive"; return 1; }
  done
  tar -xf "$a" -C "$d"
  jq -e '.imageLayoutVersion == "1.0.0"' "$d/oci-layout" >/dev/null
  for blob in "$d"/blobs/sha256/*; do
    [[ $(sha256sum "$blob" | cut -d' ' -f1) == "${blob##*/}" ]] || { echo "$a: blob ${blob##*/} has another digest"; return 1; }
  done
  index=$d/index.json
  [[ $(jq '.manifests | length' "$index") == 1 ]]
  jq -e '.manifests[0].annotations["io.containerd.image.name"] | length > 0' "$index" >/dev/null
  check_ref() { # check_ref JSON-DESCRIPTOR: the blob it names exists with its size
    digest=$(jq -r .digest <<<"$1") size=$(jq -r .size <<<"$1")
    [[ -f $d/blobs/sha256/${digest#sha256:} && $(stat -c %s "$d/blobs/sha256/${digest#sha256:}") == "$size" ]] ||
      { echo "$a: $digest missing or not $size bytes"; return 1; }
  }
  check_ref "$(jq -c '.manifests[0]' "$index")"
  manifest=$d/blobs/sha256/$(jq -r '.manifests[0].digest | ltrimstr("sha256:")' "$index")
  check_ref "$(jq -c .config "$manifest")"
  config=$d/blobs/sha256/$(jq -r '.config.digest | ltrimstr("sha256:")' "$manifest")
  while read -r ref; do
    check_ref "$ref"
    tar -tzf "$d/blobs/sha256/$(jq -r '.digest | ltrimstr("sha256:")' <<<"$ref")" >/dev/null
  done < <(jq -c '.layers[]' "$manifest")
  [[ $(jq '.layers | length' "$manifest") == $(jq '.rootfs.diff_ids | length' "$config") ]]
  [[ $(jq -r .config.User "$config") == 65532:65532 ]] || { echo "$a: user is not 65532:65532"; return 1; }
  echo "$(jq -r '.manifests[0].annotations["io.containerd.image.name"]' "$index"): $(jq '.layers | length' "$manifest") layer(s), entrypoint $(jq -c .config.Entrypoint "$config"), cmd $(jq -c .config.Cmd "$config" | cut -c1-60)"
  rm -rf "$d"
}

command -v jq >/dev/null || phase "apt-get install jq" env DEBIAN_FRONTEND=noninteractive apt-get install -y jq
for a in "${archives[@]}"; do
  phase "structure of ${a##*/}" structure "$a"
  tail -n 1 "$install_log" | sed 's/^/  /' >&2
done
[[ -n $with_containerd ]] || exit 0

# --- containerd --------------------------------------------------------------------------------------------
if ! command -v containerd >/dev/null || ! command -v runc >/dev/null; then
  apt_install() {
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends containerd runc
  }
  phase "apt-get install containerd runc" apt_install
fi
sock=$tmp/containerd.sock
cat >"$tmp/config.toml" <<EOF
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$sock"
[ttrpc]
  address = "$tmp/containerd.ttrpc.sock"
EOF
containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
containerd_pid=$!
for _ in $(seq 100); do [[ -S $sock ]] && ctr -a "$sock" version >/dev/null 2>&1 && break; sleep 0.1; done
ctr -a "$sock" version >/dev/null || fail "containerd did not start: $(tail -n 5 "$tmp/containerd.log")"
ctr=(ctr -a "$sock" -n taskfan-check)

run() { # run IMAGE COMMAND...: read-only root, tmpfs /tmp, the image's own user
  local image=$1
  shift
  "${ctr[@]}" run --rm --read-only --fifo-dir "$tmp/fifo" --runc-root "$tmp/runc" \
    --mount "type=tmpfs,source=tmpfs,destination=/tmp,options=rw:nosuid:nodev:mode=1777" \
    "$image" "check-$RANDOM" "$@"
}
for a in "${archives[@]}"; do
  name=$(tar -xOf "$a" index.json | jq -r '.manifests[0].annotations["io.containerd.image.name"]')
  phase "ctr images import ${a##*/}" "${ctr[@]}" images import "$a"
  base=${name##*/}
  base=${base%%:*}
  case $base in
    taskfan)
      probe() {
        run "$name" python3 -c '
import os, sys, tempfile
import dapr, dapr.ext.workflow, taskfan, services.workflow.app, services.ingest.app
from importlib.metadata import version
try:
    open("/opt/venv/x", "w")
    sys.exit("the root file system is writable")
except OSError:
    pass
tempfile.NamedTemporaryFile(dir="/tmp").close()
print("uid", os.getuid(), "python", sys.version.split()[0], "prefix", sys.prefix, "dapr", version("dapr"), "dapr-ext-workflow",
      version("dapr-ext-workflow"), "taskfan at", os.path.dirname(taskfan.__file__),
      "pyc files:", sum(n.endswith(".pyc") for d in ("/usr", "/opt") for _, _, ns in os.walk(d) for n in ns))' &&
          serve_scorer
      }
      # A service really starts under a read-only root: the scorer serves until timeout stops it (exit 124).
      serve_scorer() {
        local out rc=0
        out=$(run "$name" timeout 6 python3 -m services.scorer.app 2>&1) || rc=$?
        grep -q '"msg": "serving"' <<<"$out" && ((rc == 124)) || { echo "$out"; return 1; }
        echo "python3 -m services.scorer.app: serving (stopped by timeout after 6 s)"
      } ;;
    daprd) probe() { run "$name" /daprd --version; } ;;
    *) probe() { # usage on --help; the exit status of a help request differs between flag libraries
      local out
      out=$(run "$name" "/$base" --help 2>&1) || true
      grep -qi "usage" <<<"$out" || { echo "$out"; return 1; }
      echo "$out" | head -n 2
    } ;;
  esac
  phase "ctr run $name" probe
  tail -n 2 "$install_log" | sed 's/^/  /' >&2
done
