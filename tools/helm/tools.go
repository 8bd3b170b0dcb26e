//go:build tools

// Package tools pins helm, which `make helm` builds into ./bin for the chart
// tests. It has a module of its own so that helm's Kubernetes dependencies
// never move the versions the other tools (golangci-lint, buf) build with.
package tools

import (
	_ "helm.sh/helm/v4/cmd/helm"
)
