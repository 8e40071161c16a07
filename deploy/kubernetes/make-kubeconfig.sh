#!/bin/sh
# Writes the two-context kubeconfig site-sync uses, from each site's long-lived ServiceAccount
# token (deploy/kubernetes/site, applied in that site's cluster), on stdout:
#
#   make-kubeconfig.sh [-n NAMESPACE] SITE=CONTEXT [-n NAMESPACE] SITE=CONTEXT > site-sync.kubeconfig
#   e.g. make-kubeconfig.sh site-a=prod-eu site-b=prod-us > site-sync.kubeconfig
#
# SITE is the context name site-sync's configuration uses (`kubernetes.context`), CONTEXT your own
# kubeconfig's context for that cluster (any user allowed to read the Secret), NAMESPACE where
# deploy/kubernetes/site was applied there (default keycloak; a -n holds for the sites after it). The tokens do not
# expire; deleting a cluster's `site-sync-token` Secret revokes its token. Then store it where the
# workloads mount it:
#   kubectl create secret generic site-sync-kubeconfig -n NAMESPACE --from-file=config=site-sync.kubeconfig
set -eu
namespace=keycloak
usage="usage: make-kubeconfig.sh [-n NAMESPACE] SITE=CONTEXT [[-n NAMESPACE] SITE=CONTEXT ...]"
clusters=""
users=""
contexts=""
first=""
while [ $# -gt 0 ]; do
    if [ "$1" = "-n" ]; then
        [ $# -ge 2 ] || { echo "$usage" >&2; exit 2; }
        namespace=$2
        shift 2
        continue
    fi
    pair=$1
    shift
    site=${pair%%=*}
    context=${pair#*=}
    if [ -z "$site" ] || [ "$site" = "$pair" ] || [ -z "$context" ]; then
        echo "make-kubeconfig.sh: '$pair' is not SITE=CONTEXT" >&2
        exit 2
    fi
    server=$(kubectl --context "$context" config view --minify --raw -o jsonpath='{.clusters[0].cluster.server}')
    secret="kubectl --context $context -n $namespace get secret site-sync-token -o jsonpath"
    ca=$($secret='{.data.ca\.crt}')
    token=$($secret='{.data.token}' | base64 -d)
    if [ -z "$token" ] || [ -z "$ca" ]; then
        echo "make-kubeconfig.sh: the Secret site-sync-token in $namespace (context $context) holds no token yet: apply deploy/kubernetes/site there and give the token controller a moment" >&2
        exit 1
    fi
    clusters="$clusters- name: $site
  cluster:
    server: $server
    certificate-authority-data: $ca
"
    users="$users- name: site-sync@$site
  user:
    token: $token
"
    contexts="$contexts- name: $site
  context:
    cluster: $site
    user: site-sync@$site
    namespace: $namespace
"
    first=${first:-$site}
done
if [ -z "$first" ]; then
    echo "$usage" >&2
    exit 2
fi
printf 'apiVersion: v1\nkind: Config\nclusters:\n%susers:\n%scontexts:\n%scurrent-context: %s\n' "$clusters" "$users" "$contexts" "$first"
