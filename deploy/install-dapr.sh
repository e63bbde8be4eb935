#!/usr/bin/env bash
# Build the pinned Dapr runtime (daprd, placement, scheduler) from the Go module proxy, once per machine.
#
# The binaries live outside the clone, keyed by version, so every clone on the machine (CI's included)
# reuses one build: ${TASKFAN_CACHE:-~/.cache/taskfan}/dapr/<version>/bin. A lock keeps two clones from
# building at once. Prints the bin directory on stdout; progress goes to stderr.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

cache_root=${TASKFAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskfan}
prefix="$cache_root/dapr/$DAPR_VERSION"
bin="$prefix/bin"
commands=(daprd placement scheduler)

built() {
  for c in "${commands[@]}"; do [[ -x "$bin/$c" ]] || return 1; done
  "$bin/daprd" --version 2>/dev/null | grep -qx "$DAPR_VERSION"
}

if built; then echo "$bin"; exit 0; fi

command -v go >/dev/null || { echo "install-dapr: Go is required to build the Dapr runtime" >&2; exit 1; }
mkdir -p "$prefix"
exec 9>"$prefix/.lock"
echo "install-dapr: waiting for the build lock ($prefix/.lock)" >&2
flock 9
if built; then echo "$bin"; exit 0; fi

src="$prefix/src"
rm -rf "$src" "$prefix/bin.tmp"
mkdir -p "$src" "$prefix/bin.tmp"
cp "$here/dapr/go.mod" "$here/dapr/tools.go" "$src/"
[[ -f "$here/dapr/go.sum" ]] && cp "$here/dapr/go.sum" "$src/"

# sum.golang.org is not reachable here; the committed go.sum pins every module hash instead.
export GOSUMDB=off GOFLAGS=-mod=mod CGO_ENABLED=0
ldflags="-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$DAPR_VERSION"
start=$(date +%s)
echo "install-dapr: building Dapr $DAPR_VERSION from the Go module proxy (first time only; about 10 min on 2 cores)" >&2
cd "$src"
go mod download -x 2>&1 | grep -c '^# get' >&2 || true
for c in "${commands[@]}"; do
  echo "install-dapr: go build $c" >&2
  # allcomponents: the SQLite name resolver (several scorer replicas on one host) is only there.
  go build -tags allcomponents -trimpath -ldflags "$ldflags" -o "$prefix/bin.tmp/$c" "github.com/dapr/dapr/cmd/$c"
done
rm -rf "$bin"
mv "$prefix/bin.tmp" "$bin"
echo "install-dapr: built in $(( $(date +%s) - start ))s into $bin" >&2
built || { echo "install-dapr: daprd does not report version $DAPR_VERSION" >&2; exit 1; }
echo "$bin"
