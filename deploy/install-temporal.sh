#!/usr/bin/env bash
# Build the Temporal CLI (its `server start-dev` embeds Temporal Server) from the Go module proxy, once per
# machine, for the benchmark's Temporal peer (bench/peers/temporal_pipeline.py). The version is the one the
# wrapper module deploy/temporal/go.mod requires.
#
# Like install-dapr.sh: the binary lives outside the clone, keyed by version, so every clone on the machine
# reuses one build: ${TASKFAN_CACHE:-~/.cache/taskfan}/temporal/<version>/bin; a lock keeps two clones from
# building at once; prints the bin directory on stdout (its last line), one line per step on stderr and go's
# output in the install log; nothing on stderr when it is built.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

TEMPORAL_CLI_VERSION=$(required_version "$here/temporal/go.mod" github.com/temporalio/cli)
prefix="$cache_root/temporal/$TEMPORAL_CLI_VERSION"
bin="$prefix/bin"
if [[ -x $bin/temporal ]]; then echo "$bin"; exit 0; fi

command -v go >/dev/null || fail "Go >= 1.26 is required to build the Temporal CLI (README, Requirements)"
mkdir -p "$bin"
build_lock "$prefix/.lock" "the Temporal CLI $TEMPORAL_CLI_VERSION"
if [[ -x $bin/temporal ]]; then echo "$bin"; exit 0; fi

src="$prefix/src"
rm -rf "$src" && mkdir -p "$src"
cp "$here/temporal/go.mod" "$here/temporal/go.sum" "$here/temporal/tools.go" "$src/"
# sum.golang.org is not reachable here; the committed go.sum pins every module hash instead.
export GOSUMDB=off GOFLAGS=-mod=mod CGO_ENABLED=0
say "building the Temporal CLI $TEMPORAL_CLI_VERSION into $bin, once per machine (about 4-5 min on 2 cores); output in $install_log"
cd "$src"
download_modules() { go list -deps -f '{{with .Module}}{{.Path}} {{.Version}}{{end}}' \
  github.com/temporalio/cli/cmd/temporal | sort -u; }
phase "download Go modules for the Temporal CLI $TEMPORAL_CLI_VERSION" download_modules
phase "build temporal" go build -trimpath -ldflags "-s -w" -o "$prefix/temporal.tmp" github.com/temporalio/cli/cmd/temporal
mv "$prefix/temporal.tmp" "$bin/temporal"
cd "$here" && rm -rf "$src"
echo "$bin"
