//go:build tools

// Package tools keeps kube-router's command in this wrapper module's build list (deploy/k8s/install-kube-router.sh).
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
