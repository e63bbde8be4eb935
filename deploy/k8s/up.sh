#!/usr/bin/env bash
# `make k8s-up`: Taskfan on the local Kubernetes cluster, from nothing to ready, one line per step.
#
#   1. the cluster's binaries and Debian packages (install-k8s.sh; built once per machine, cached)
#   2. the images (deploy/images/build.sh: Taskfan, Redis, Dapr's control plane, KEDA; cached)
#   3. the cluster (cluster.sh up), the images imported into its containerd, local volumes
#   (each namespace below is labelled PodSecurity `restricted` before anything is installed into it)
#   4. Dapr's control plane from the Helm chart inside the pinned Dapr module (values/dapr.yaml), --wait
#   5. KEDA from the manifests inside its pinned module, with the local images; waits for it
#   6. Taskfan's chart (deploy/helm/taskfan), --wait; arguments are handed to its `helm upgrade --install`
#      (`up.sh --set services.scorer.scoreDelayMs=100` is what the cluster tests run)
# Returns when everything is ready; `make k8s-down` (cluster.sh down) undoes all of it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=../../src/taskfan/versions.env
source "$repo/src/taskfan/versions.env"

run=${K8S_RUN_DIR:-$repo/.taskfan/k8s}
namespace=${TASKFAN_NAMESPACE:-taskfan}
say() { echo "k8s: $*" >&2; }
die() { say "$*"; exit 1; }
phase() {  # phase WHAT COMMAND...: one line with its duration
  local what=$1 start=$SECONDS; shift
  say "$what ..."
  "$@" || die "$what failed"
  say "$what: done in $((SECONDS - start))s"
}

k8s_bin=$(bash "$here/install-k8s.sh" | tail -1)  # kubectl, helm and the cluster's binaries
kubeconfig=$(bash "$here/cluster.sh" kubeconfig)
kubectl() { "$k8s_bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }
helm() { "$k8s_bin/helm" --kubeconfig "$kubeconfig" "$@"; }

images=$repo/.taskfan/images
phase "images" bash "$repo/deploy/images/build.sh"
phase "cluster" bash "$here/cluster.sh" up
phase "import images" bash "$here/cluster.sh" import "$images"/*.tar

# Local volumes: a StorageClass without a provisioner and hostPath volumes under the run directory,
# for the claims of Dapr's scheduler (3) and Taskfan's Redis (1). cluster.sh down --wipe removes them.
volumes() {
  local i manifest=""
  # Every `up` is an empty cluster (cluster.sh): the volumes start empty too.
  rm -rf "$run/volumes" && mkdir -p "$run/volumes"
  manifest+=$'apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: taskfan-local}\n'
  manifest+=$'provisioner: kubernetes.io/no-provisioner\nvolumeBindingMode: WaitForFirstConsumer\n'
  for i in 0 1 2 3; do
    mkdir -p "$run/volumes/v$i" && chown 65532:65532 "$run/volumes/v$i"
    manifest+="---
apiVersion: v1
kind: PersistentVolume
metadata: {name: taskfan-local-$i}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: taskfan-local
  hostPath: {path: $run/volumes/v$i, type: Directory}
"
  done
  kubectl apply -f - <<<"$manifest" >/dev/null
}
kubectl get storageclass taskfan-local >/dev/null 2>&1 || phase "local volumes" volumes

# Each namespace (Dapr's, KEDA's, Taskfan's) admits only pods that pass PodSecurity `restricted` (README, Security).
namespace_restricted() {
  kubectl create namespace "$1" --dry-run=client -o yaml | kubectl apply -f - >/dev/null &&
    kubectl label namespace "$1" --overwrite pod-security.kubernetes.io/enforce=restricted \
      pod-security.kubernetes.io/enforce-version=latest >/dev/null
}

dapr_chart="$(go env GOMODCACHE)/github.com/dapr/dapr@v$DAPR_VERSION/charts/dapr"
[[ -d $dapr_chart ]] || GOFLAGS=-mod=mod go mod download "github.com/dapr/dapr@v$DAPR_VERSION"
phase "namespace dapr-system (PodSecurity restricted)" namespace_restricted dapr-system
phase "Dapr $DAPR_VERSION control plane" helm upgrade --install dapr "$dapr_chart" --namespace dapr-system \
  --create-namespace -f "$here/values/dapr.yaml" --wait --timeout 10m

keda() {
  local src work
  src="$(go env GOMODCACHE)/github.com/kedacore/keda/v2@v$KEDA_VERSION/config"
  # kustomize refuses a root inside the module cache (absolute, read-only): work on a copy.
  work=$(mktemp -d)
  cp -r "$src" "$work/config" && chmod -R u+w "$work"
  cat >"$work/kustomization.yaml" <<EOF
resources: [config/default]
images:
  - {name: ghcr.io/kedacore/keda, newName: localhost/keda/keda, newTag: "$KEDA_VERSION"}
  - {name: ghcr.io/kedacore/keda-metrics-apiserver, newName: localhost/keda/keda-adapter, newTag: "$KEDA_VERSION"}
  - {name: ghcr.io/kedacore/keda-admission-webhooks, newName: localhost/keda/keda-admission-webhooks, newTag: "$KEDA_VERSION"}
patches:  # the images are imported into the node, not pulled
  - target: {kind: Deployment, namespace: keda}
    patch: |-
      - {op: replace, path: /spec/template/spec/containers/0/imagePullPolicy, value: IfNotPresent}
EOF
  kubectl apply --server-side -k "$work" >/dev/null
  rm -rf "$work"
  kubectl -n keda rollout status deployment --timeout 5m >/dev/null
  kubectl wait --for=condition=Available apiservice/v1beta1.external.metrics.k8s.io --timeout 5m >/dev/null
}
KEDA_VERSION=$(awk '$1 == "require" && $2 == "github.com/kedacore/keda/v2" { sub(/^v/, "", $3); print $3 }' \
  "$repo/deploy/keda/go.mod")
phase "namespace keda (PodSecurity restricted)" namespace_restricted keda
phase "KEDA $KEDA_VERSION" keda

phase "namespace $namespace (PodSecurity restricted)" namespace_restricted "$namespace"
phase "Taskfan" helm upgrade --install taskfan "$repo/deploy/helm/taskfan" --namespace "$namespace" \
  --set redis.persistence.storageClass=taskfan-local --wait --timeout 10m "$@"
say "ready: kubectl -n $namespace get pods (KUBECONFIG=$(bash "$here/cluster.sh" kubeconfig))"
