//go:build tools

// Package jaegerbuild only pins the Jaeger command that deploy/install-jaeger.sh builds.
package jaegerbuild

import _ "github.com/jaegertracing/jaeger/cmd/jaeger"
