#!/usr/bin/env bash
# Install what the local Kubernetes cluster (deploy/k8s/cluster.sh) needs, once per machine:
#   - Debian packages: etcd-server, containerd, runc, containernetworking-plugins, mmdebstrap, openssl,
#     iptables, nftables, conntrack, curl (only those missing; needs root, like the cluster itself);
#   - Kubernetes v$KUBERNETES_VERSION's kube-apiserver, kube-controller-manager, kube-scheduler, kubelet,
#     kube-proxy and kubectl, built from the Go module proxy through the wrapper module in kubernetes/;
#   - helm (wrapper module helm/) and CoreDNS with the plugins the cluster uses (coredns/);
#   - kube-router (wrapper module kube-router/), run by cluster.sh as the NetworkPolicy enforcer only;
#   - the cluster's own images as OCI archives: a pause image (pause/main.go) and a CoreDNS image.
#
# Like deploy/install-dapr.sh, everything lives outside the clone, keyed by version, so every clone on the
# machine reuses one build: ${TASKFAN_CACHE:-~/.cache/taskfan}/{k8s,helm,coredns,kube-router}/<version>/. A lock keeps
# two clones from building at once. Prints the Kubernetes bin directory on stdout (its last line; helm and
# coredns are linked into it, and kube-router); one line per step on stderr, the output of go and apt in the install log
# (deploy/lib.sh). Prints nothing on stderr when everything is already there.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
# shellcheck source=../lib.sh
source "$here/../lib.sh"

k8s_prefix="$cache_root/k8s/$KUBERNETES_VERSION"
helm_prefix="$cache_root/helm/$HELM_VERSION"
coredns_prefix="$cache_root/coredns/$COREDNS_VERSION"
kube_router_prefix="$cache_root/kube-router/$KUBE_ROUTER_VERSION"
bin="$k8s_prefix/bin"
images="$k8s_prefix/images"
pause_image="$IMAGE_PREFIX/pause:$PAUSE_TAG"
coredns_image="$IMAGE_PREFIX/coredns:$COREDNS_VERSION"
k8s_commands=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
# nftables: its nft removes the empty tables iptables-nft leaves behind (cluster.sh down); ipset: kube-router's
# policy controller keeps each policy's pods in ip sets.
apt_packages=(etcd-server containerd runc containernetworking-plugins mmdebstrap openssl iptables nftables conntrack curl
  ipset)

apt_missing() {
  local p
  for p in "${apt_packages[@]}"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null) == installed ]] || echo "$p"
  done
}

k8s_version_ok() {
  [[ -x "$bin/kube-apiserver" ]] && "$bin/kube-apiserver" --version 2>/dev/null | grep -qx "Kubernetes v$KUBERNETES_VERSION"
}

k8s_built() {
  local c
  for c in "${k8s_commands[@]}"; do [[ -x "$bin/$c" ]] || return 1; done
  k8s_version_ok
}

helm_built() { [[ -x "$helm_prefix/bin/helm" ]]; }
coredns_built() { [[ -x "$coredns_prefix/bin/coredns" ]]; }
kube_router_built() { [[ -x "$kube_router_prefix/bin/kube-router" ]]; }
images_built() { [[ -f "$images/pause.tar" && -f "$images/coredns.tar" ]]; }
links_ok() { [[ -x "$bin/helm" && -x "$bin/coredns" && -x "$bin/kube-router" ]]; }

all_done() {
  [[ -z $(apt_missing) ]] && k8s_built && helm_built && coredns_built && kube_router_built && images_built && links_ok
}

if all_done; then echo "$bin"; exit 0; fi

[[ $(id -u) -eq 0 ]] || fail "the local Kubernetes cluster needs root (containerd, kubelet, iptables); run this as root"
mkdir -p "$k8s_prefix"
build_lock "$k8s_prefix/.lock" "Kubernetes $KUBERNETES_VERSION"
if all_done; then echo "$bin"; exit 0; fi

# --- Debian packages -------------------------------------------------------------------------------------
mapfile -t missing_pkgs < <(apt_missing)
if (( ${#missing_pkgs[@]} )); then
  # No service is started here (no systemd); cluster.sh runs etcd and containerd with their own config.
  apt_install() { apt_get update && apt_get install -y --no-install-recommends "${missing_pkgs[@]}"; }
  phase "apt-get install ${missing_pkgs[*]}" apt_install
fi

command -v go >/dev/null || fail "Go >= 1.26.4 is required to build Kubernetes (README, Requirements)"
# sum.golang.org is not reachable here; the committed go.sum files pin every module hash instead.
export GOSUMDB=off GOFLAGS=-mod=mod CGO_ENABLED=0

# Copies a wrapper module out of the clone into a build directory of the cache; prints that directory.
wrapper_src() {
  local from=$1 to=$2
  rm -rf "$to" && mkdir -p "$to" && cp "$from"/go.mod "$from"/go.sum "$to/" &&
    find "$from" -maxdepth 1 -name '*.go' -exec cp {} "$to/" \; && echo "$to"
}

# --- Kubernetes -------------------------------------------------------------------------------------------
if ! k8s_built; then
  missing=()
  if k8s_version_ok; then
    for c in "${k8s_commands[@]}"; do [[ -x "$bin/$c" ]] || missing+=("$c"); done
  else
    missing=("${k8s_commands[@]}")
  fi
  kver="v$KUBERNETES_VERSION" major=${KUBERNETES_VERSION%%.*} minor=${KUBERNETES_VERSION#*.}
  minor=${minor%%.*}
  # The same version variables Kubernetes' own build sets (hack/lib/version.sh), so `--version`,
  # `kubectl version` and the apiserver's /version report v1.34.4 rather than v0.0.0-master.
  ldflags="-s -w"
  for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$kver -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  src=$(wrapper_src "$here/kubernetes" "$k8s_prefix/src")
  rm -rf "$k8s_prefix/bin.tmp" && mkdir -p "$k8s_prefix/bin.tmp"
  say "building Kubernetes $KUBERNETES_VERSION (${missing[*]}) into $bin, once per machine" \
    "(about 15 min on 2 cores); output in $install_log"
  cd "$src"
  # Loading every package the builds need downloads exactly their modules; the log ends with their list.
  download_modules() {
    go list -deps -f '{{with .Module}}{{.Path}} {{.Version}}{{end}}' "${missing[@]/#/k8s.io/kubernetes/cmd/}" | sort -u
  }
  phase "download Go modules for Kubernetes $KUBERNETES_VERSION" download_modules
  for c in "${missing[@]}"; do
    phase "build $c" go build -trimpath -ldflags "$ldflags" -o "$k8s_prefix/bin.tmp/$c" "k8s.io/kubernetes/cmd/$c"
  done
  mkdir -p "$bin"
  # Each binary lands under its final name atomically (rename within one directory tree).
  for c in "${missing[@]}"; do mv "$k8s_prefix/bin.tmp/$c" "$bin/$c"; done
  cd "$here" && rm -rf "$k8s_prefix/bin.tmp" "$src"  # leave the build directory before removing it
  k8s_built || fail "the kube-apiserver just built does not report v$KUBERNETES_VERSION ($bin/kube-apiserver --version)"
fi

# --- helm -------------------------------------------------------------------------------------------------
if ! helm_built; then
  src=$(wrapper_src "$here/helm" "$helm_prefix/src")
  mkdir -p "$helm_prefix/bin"
  say "building helm $HELM_VERSION into $helm_prefix/bin, once per machine (about 4 min); output in $install_log"
  cd "$src"
  phase "build helm" go build -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION" \
    -o "$helm_prefix/bin/helm.tmp" helm.sh/helm/v3/cmd/helm
  mv "$helm_prefix/bin/helm.tmp" "$helm_prefix/bin/helm"
  cd "$here" && rm -rf "$src"
fi

# --- CoreDNS ----------------------------------------------------------------------------------------------
if ! coredns_built; then
  src=$(wrapper_src "$here/coredns" "$coredns_prefix/src")
  mkdir -p "$coredns_prefix/bin"
  say "building CoreDNS $COREDNS_VERSION into $coredns_prefix/bin, once per machine (about 3 min); output in $install_log"
  cd "$src"
  phase "build coredns" go build -trimpath -ldflags "-s -w" -o "$coredns_prefix/bin/coredns.tmp" .
  mv "$coredns_prefix/bin/coredns.tmp" "$coredns_prefix/bin/coredns"
  cd "$here" && rm -rf "$src"
fi
# --- kube-router ------------------------------------------------------------------------------------------
# Only its network policy controller runs (cluster.sh): the bridge CNI plugin enforces no NetworkPolicy.
if ! kube_router_built; then
  [[ $(required_version "$here/kube-router/go.mod" github.com/cloudnativelabs/kube-router/v2) == "$KUBE_ROUTER_VERSION" ]] ||
    fail "deploy/k8s/kube-router/go.mod does not require kube-router v$KUBE_ROUTER_VERSION (versions.env)"
  src=$(wrapper_src "$here/kube-router" "$kube_router_prefix/src")
  mkdir -p "$kube_router_prefix/bin"
  say "building kube-router $KUBE_ROUTER_VERSION into $kube_router_prefix/bin, once per machine (about 3 min); output in $install_log"
  cd "$src"
  phase "build kube-router" go build -trimpath \
    -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v$KUBE_ROUTER_VERSION" \
    -o "$kube_router_prefix/bin/kube-router.tmp" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
  mv "$kube_router_prefix/bin/kube-router.tmp" "$kube_router_prefix/bin/kube-router"
  cd "$here" && rm -rf "$src"
fi
ln -sfn "$helm_prefix/bin/helm" "$bin/helm"
ln -sfn "$coredns_prefix/bin/coredns" "$bin/coredns"
ln -sfn "$kube_router_prefix/bin/kube-router" "$bin/kube-router"

# --- the cluster's own images -----------------------------------------------------------------------------
# One static binary each, owned by root, run as 65532 (a numeric user so runAsNonRoot can check it).
pack_image() {
  local name=$1 binary=$2 out=$3 root
  root=$(mktemp -d) &&
    install -m 0755 "$binary" "$root/${binary##*/}" &&
    python3 "$here/../images/oci.py" "$root" "$out" --name "$name" --entrypoint "/${binary##*/}" \
      --user 65532:65532 --owner 0 &&
    rm -rf "$root"
}
if ! images_built; then
  mkdir -p "$images"
  build_pause() {
    mkdir -p "$images/pause.tmp" && (cd "$here/pause" && go build -trimpath -ldflags "-s -w" -o "$images/pause.tmp/pause" .) &&
      pack_image "$pause_image" "$images/pause.tmp/pause" "$images/pause.tar" && rm -rf "$images/pause.tmp"
  }
  [[ -f "$images/pause.tar" ]] || phase "image $pause_image" build_pause
  [[ -f "$images/coredns.tar" ]] ||
    phase "image $coredns_image" pack_image "$coredns_image" "$coredns_prefix/bin/coredns" "$images/coredns.tar"
fi

all_done || fail "installed, yet something is still missing under $k8s_prefix (see $install_log)"
echo "$bin"
