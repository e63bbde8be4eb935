#!/usr/bin/env bash
# Build the Temporal CLI (its `server start-dev` embeds Temporal Server) from the Go module proxy, once per
# machine, for the benchmark's Temporal peer (bench/peers/temporal_pipeline.py). The version is the one the
# wrapper module deploy/temporal/go.mod requires. Cached, locked and logged as lib.sh `build_go_command` says;
# prints the bin directory on stdout: ${TASKFAN_CACHE:-~/.cache/taskfan}/temporal/<version>/bin.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

build_go_command temporal temporal github.com/temporalio/cli github.com/temporalio/cli/cmd/temporal \
  "the Temporal CLI" "about 4-5 min on 2 cores"
