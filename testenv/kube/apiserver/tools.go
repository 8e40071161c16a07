//go:build tools

// The programs this module builds for the harness: the API server, the controller manager (only
// its ServiceAccount token controller runs: it fills the long-lived token Secrets the deployment
// recipe uses) and kubectl (the recipe's script and `kubectl apply -k` of deploy/kubernetes).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
