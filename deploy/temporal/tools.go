//go:build tools

// Package temporalbuild only pins the Temporal CLI (with its embedded dev server) that
// deploy/install-temporal.sh builds for the benchmark's Temporal peer.
package temporalbuild

import (
	_ "github.com/temporalio/cli/cmd/temporal"
)
