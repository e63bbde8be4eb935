#!/usr/bin/env bash
# Build KEDA's three commands from the Go module proxy, once per machine, for the images of deploy/images:
# keda (cmd/operator), keda-adapter (cmd/adapter) and keda-admission-webhooks (cmd/webhooks), named as in
# KEDA's own images. The version is the one the wrapper module deploy/keda/go.mod requires.
#
# Like install-dapr.sh: the binaries live outside the clone, keyed by version, so every clone on the machine
# reuses one build: ${TASKFAN_CACHE:-~/.cache/taskfan}/keda/<version>/bin; a lock keeps two clones from
# building at once; only missing binaries are built; prints the bin directory on stdout (its last line), one
# line per step on stderr and go's output in the install log; nothing on stderr when all are built.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

KEDA_VERSION=$(required_version "$here/keda/go.mod" github.com/kedacore/keda/v2)
prefix="$cache_root/keda/$KEDA_VERSION"
bin="$prefix/bin"
# binary name (as in KEDA's Dockerfiles) => its package under github.com/kedacore/keda/v2/cmd
declare -A packages=([keda]=operator [keda-adapter]=adapter [keda-admission-webhooks]=webhooks)
commands=(keda keda-adapter keda-admission-webhooks)

missing_commands() {
  local c
  for c in "${commands[@]}"; do [[ -x "$bin/$c" ]] || echo "$c"; done
}

if [[ -z $(missing_commands) ]]; then echo "$bin"; exit 0; fi

command -v go >/dev/null || fail "Go >= 1.26 is required to build KEDA (README, Requirements)"
mkdir -p "$bin"
build_lock "$prefix/.lock" "KEDA $KEDA_VERSION"
mapfile -t missing < <(missing_commands)
if (( ${#missing[@]} == 0 )); then echo "$bin"; exit 0; fi

src="$prefix/src"
rm -rf "$src" "$prefix/bin.tmp"
mkdir -p "$src" "$prefix/bin.tmp"
cp "$here/keda/go.mod" "$here/keda/go.sum" "$here/keda/tools.go" "$src/"

# sum.golang.org is not reachable here; the committed go.sum pins every module hash instead.
export GOSUMDB=off GOFLAGS=-mod=mod CGO_ENABLED=0
ldflags="-s -w -X github.com/kedacore/keda/v2/version.Version=$KEDA_VERSION"
say "building ${missing[*]} of KEDA $KEDA_VERSION into $bin, once per machine (about 11 min on 2 idle cores, 57 min measured beside another Go build); output in $install_log"
cd "$src"
pkgs=()
for c in "${missing[@]}"; do pkgs+=("github.com/kedacore/keda/v2/cmd/${packages[$c]}"); done
# Loading the packages downloads exactly the modules they need (see install-dapr.sh); the log lists them.
download_modules() {
  go list -deps -f '{{with .Module}}{{.Path}} {{.Version}}{{end}}' "${pkgs[@]}" | sort -u
}
phase "download Go modules for KEDA $KEDA_VERSION" download_modules
# Each binary lands under its final name atomically (rename within one directory tree) as soon as it is built:
# a later failure keeps it.
for c in "${missing[@]}"; do
  phase "build $c" go build -trimpath -ldflags "$ldflags" -o "$prefix/bin.tmp/$c" \
    "github.com/kedacore/keda/v2/cmd/${packages[$c]}"
  mv "$prefix/bin.tmp/$c" "$bin/$c"
done
rm -rf "$prefix/bin.tmp" "$src"
echo "$bin"
