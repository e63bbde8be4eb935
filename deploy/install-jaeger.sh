#!/usr/bin/env bash
# Build Jaeger (`cmd/jaeger`, v2: an OpenTelemetry Collector distribution with Jaeger's in-memory storage and
# query API) from the Go module proxy, once per machine: the tracing backend the local stack starts on
# loopback (src/taskfan/stack). The version is the one the wrapper module deploy/jaeger/go.mod requires.
#
# Like install-dapr.sh: the binary lives outside the clone, keyed by version, so every clone on the machine
# reuses one build: ${TASKFAN_CACHE:-~/.cache/taskfan}/jaeger/<version>/bin; a lock keeps two clones from
# building at once; prints the bin directory on stdout (its last line), one line per step on stderr and go's
# output in the install log; nothing on stderr when it is built.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

JAEGER_VERSION=$(required_version "$here/jaeger/go.mod" github.com/jaegertracing/jaeger)
prefix="$cache_root/jaeger/$JAEGER_VERSION"
bin="$prefix/bin"
if [[ -x $bin/jaeger ]]; then echo "$bin"; exit 0; fi

command -v go >/dev/null || fail "Go >= 1.26 is required to build Jaeger (README, Requirements)"
mkdir -p "$bin"
build_lock "$prefix/.lock" "Jaeger $JAEGER_VERSION"
if [[ -x $bin/jaeger ]]; then echo "$bin"; exit 0; fi

src="$prefix/src"
rm -rf "$src" && mkdir -p "$src"
cp "$here/jaeger/go.mod" "$here/jaeger/go.sum" "$here/jaeger/tools.go" "$src/"
# sum.golang.org is not reachable here; the committed go.sum pins every module hash instead.
export GOSUMDB=off GOFLAGS=-mod=mod CGO_ENABLED=0
say "building Jaeger $JAEGER_VERSION into $bin, once per machine (several minutes on 2 cores); output in $install_log"
cd "$src"
download_modules() { go list -deps -f '{{with .Module}}{{.Path}} {{.Version}}{{end}}' \
  github.com/jaegertracing/jaeger/cmd/jaeger | sort -u; }
phase "download Go modules for Jaeger $JAEGER_VERSION" download_modules
phase "build jaeger" go build -trimpath -ldflags "-s -w" -o "$prefix/jaeger.tmp" github.com/jaegertracing/jaeger/cmd/jaeger
mv "$prefix/jaeger.tmp" "$bin/jaeger"
cd "$here" && rm -rf "$src"
echo "$bin"
