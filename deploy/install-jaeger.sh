#!/usr/bin/env bash
# Build Jaeger (`cmd/jaeger`, v2: an OpenTelemetry Collector distribution with Jaeger's in-memory storage and
# query API) from the Go module proxy, once per machine: the tracing backend the local stack starts on
# loopback (src/taskfan/stack). The version is the one the wrapper module deploy/jaeger/go.mod requires.
# Cached, locked and logged as lib.sh `build_go_command` says; prints the bin directory on stdout:
# ${TASKFAN_CACHE:-~/.cache/taskfan}/jaeger/<version>/bin.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

build_go_command jaeger jaeger github.com/jaegertracing/jaeger github.com/jaegertracing/jaeger/cmd/jaeger \
  "Jaeger" "about 6 min on 2 cores"
