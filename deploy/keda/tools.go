//go:build tools

// Package kedabuild only pins the KEDA commands that deploy/install-keda.sh builds.
package kedabuild

import (
	_ "github.com/kedacore/keda/v2/cmd/adapter"
	_ "github.com/kedacore/keda/v2/cmd/operator"
	_ "github.com/kedacore/keda/v2/cmd/webhooks"
)
