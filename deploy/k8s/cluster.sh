#!/usr/bin/env bash
# A real two-node Kubernetes cluster on this machine (the second node in a network namespace of its own),
# started and stopped without systemd.
#
#   cluster.sh up            start etcd, kube-apiserver, controller-manager, scheduler, containerd, kubelet,
#                            kube-proxy, kube-router (NetworkPolicy) and CoreDNS; returns once the node is Ready, the default
#                            ServiceAccount exists and the cluster's DNS answers (one line per step)
#   cluster.sh down [--wipe] stop all of it and undo what it changed on the host (iptables chains, ip sets, the
#                            bridge, network namespaces, mounts, cgroups, CNI leases, sysctls), then check
#                            that the host is as it was before `up`; --wipe also removes the run directory
#                            (certificates, kubeconfigs, imported images)
#   cluster.sh status        the cluster's processes and node
#   cluster.sh kubeconfig    the admin kubeconfig's path (export KUBECONFIG=$(cluster.sh kubeconfig))
#   cluster.sh import ARCHIVE...  import OCI image archives (deploy/images/oci.py) into the node's containerd
#   cluster.sh tag IMAGE NEW      give an imported image a new name too (a new tag to upgrade to, without a build)
#
# Each `up` starts an empty cluster (etcd's data is removed on `down`); certificates and the containerd
# image store are kept for a fast next `up`. State lives in $K8S_RUN_DIR (default <repo>/.taskfan/k8s):
# pki/ (0700), kubeconfig/, config/, etcd/, kubelet/, containerd/, logs/, pids/, host/ (the snapshot
# taken before `up`). Binaries come from install-k8s.sh (built once per machine). Needs root.
# Why things are as they are on this machine: shared/notes/kubernetes-from-modules.md.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

run=${K8S_RUN_DIR:-$repo/.taskfan/k8s}
cache_root=${TASKFAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskfan}
bin="$cache_root/k8s/$KUBERNETES_VERSION/bin"
images="$cache_root/k8s/$KUBERNETES_VERSION/images"

# --- the cluster's shape ----------------------------------------------------------------------------------
node=$(hostname | tr '[:upper:]' '[:lower:]')
cluster_domain=cluster.local
service_cidr=10.96.0.0/12
api_service_ip=10.96.0.1
dns_ip=10.96.0.10
cluster_cidr=10.244.0.0/16
pod_cidr=10.244.0.0/24
cni_net=taskfan-k8s     # the CNI network's name: its leases are /var/lib/cni/networks/$cni_net
bridge=tfk8s0           # our own bridge name, so down never touches another cni0
# Ports: Taskfan's local stack uses 3500-5520, 6000-6071, 6379, 8080 and 50001+ (dapr.yaml); etcd is moved
# off 2379/2380 so that a Debian etcd started by someone else cannot collide with ours.
api_port=6443
etcd_port=12379
etcd_peer_port=12380
# Sockets and containerd's state on tmpfs under /run, with short paths (unix sockets allow 107 bytes).
sock_dir=/run/taskfan-k8s
containerd_sock=$sock_dir/containerd.sock

# The second node: its own kubelet, containerd (own root, state, socket, runc root), kube-proxy and kube-router,
# all in a network namespace of their own joined to the host by a veth pair; its pods on their own bridge in that
# namespace, with their own pod CIDR, routed to and from the first node's. Its pods' cgroups are under a cgroup
# root of their own, so that neither kubelet takes the other's pods for orphans. TASKFAN_K8S_NODES=1: none.
nodes=${TASKFAN_K8S_NODES:-2}
[[ $nodes == 1 || $nodes == 2 ]] || { echo "k8s: TASKFAN_K8S_NODES is 1 or 2, not $nodes" >&2; exit 2; }
node2=$node-2
node2_netns=tfk8s-node2                   # /run/netns/tfk8s-node2
node2_link=tfk8s-n2                       # the veth's host end; its other end is eth0 in the namespace
node2_gateway=10.245.255.1 node2_ip=10.245.255.2 node2_prefix=30  # the link, outside pod and Service ranges
node2_pod_cidr=10.244.1.0/24
node2_cni_net=taskfan-k8s-node2
node2_cgroup=taskfan-node2                # /sys/fs/cgroup/<controller>/taskfan-node2/kubepods...
node2_sock_dir=$sock_dir/node2
node2_containerd_sock=$node2_sock_dir/containerd.sock
node2_run=$run/node2

pki=$run/pki kcfg=$run/kubeconfig conf=$run/config logs=$run/logs pids=$run/pids host=$run/host
admin_kubeconfig=$kcfg/admin.kubeconfig
components=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kube-router)
node2_components=(containerd-2 kubelet-2 kube-proxy-2 kube-router-2)  # each runs in the second node's namespace
((nodes == 1)) || components+=("${node2_components[@]}")
kube_router_health_port=20244

# --- output -----------------------------------------------------------------------------------------------
say() { echo "k8s: $*" >&2; }
die() { say "$*"; exit 1; }
duration() { if (($1 < 60)); then echo "$1s"; else printf '%dm%02ds\n' $(($1 / 60)) $(($1 % 60)); fi; }
now_ms() { date +%s%3N; }
step_start=0
step() { step_start=$(now_ms); printf 'k8s: %s ... ' "$*" >&2; }
done_step() { local ms=$(($(now_ms) - step_start)); printf '%d.%ds\n' $((ms / 1000)) $((ms % 1000 / 100)) >&2; }

# The last lines of a component's log, after a failed readiness check.
show_log() {
  local name=$1
  [[ -f $logs/$name.log ]] || return 0
  say "last lines of $logs/$name.log:"
  tail -n 25 "$logs/$name.log" | cut -c1-400 | sed 's/^/  | /' >&2
}

fail_step() {  # fail_step COMPONENT MESSAGE
  echo "FAILED" >&2
  say "$2"
  show_log "$1"
  say "the cluster is partly up; \`$0 down\` stops it and cleans the host"
  exit 1
}

# --- processes --------------------------------------------------------------------------------------------
pid_of() { [[ -f $pids/$1.pid ]] && cat "$pids/$1.pid"; }

# Alive, and still the program we started (a pid file can outlive its process, and pids get reused).
running() {
  local pid exe
  pid=$(pid_of "$1") || return 1
  alive "$pid" || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${exe##*/} == "$(basename "$(component_binary "$1")")" ]]
}

component_binary() {
  case ${1%-2} in
    etcd) echo /usr/bin/etcd ;;
    containerd) echo /usr/bin/containerd ;;
    *) echo "$bin/${1%-2}" ;;
  esac
}

# The second node's components (NAME-2) run in its network namespace; the mounts and pids stay the host's, which
# kubelet and containerd share (nsenter --net, not `ip netns exec`, which would also give a mount namespace).
in_node_netns() {
  if [[ $1 == *-2 ]]; then echo nsenter "--net=/run/netns/$node2_netns" --; fi
}

# Starts a component in its own session, output appended to its log, pid recorded.
start() {
  local name=$1
  shift
  printf '\n== %s  %s\n' "$(date '+%F %T')" "$*" >>"$logs/$name.log"
  # 8>&-: the component must not inherit (and so hold) the lock on up/down.
  # shellcheck disable=SC2046 # the nsenter prefix, or nothing
  setsid $(in_node_netns "$name") "$(component_binary "$name")" "$@" >>"$logs/$name.log" 2>&1 </dev/null 8>&- &
  local pid=$! exe i
  echo "$pid" >"$pids/$name.pid"
  # Until it has exec'd the component, the job is a fork of this shell, which `running` would take for a
  # component that died (seen on a loaded machine: "exited while waiting" for one that was only starting).
  exe=$(basename "$(component_binary "$name")")
  for ((i = 0; i < 100; i++)); do
    [[ $(readlink "/proc/$pid/exe" 2>/dev/null) == */"$exe" ]] && break
    alive "$pid" || break
    sleep 0.05
  done
}

# Alive and not a zombie: our components are reparented to PID 1, which may reap them only later.
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# SIGTERM, then SIGKILL after a timeout (kube-apiserver can hang in its graceful shutdown).
stop() {
  local name=$1 timeout=${2:-10} pid i
  if ! running "$name"; then rm -f "$pids/$name.pid"; return 0; fi
  pid=$(pid_of "$name")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 10; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    say "$name (pid $pid) did not stop within ${timeout}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    while alive "$pid"; do sleep 0.1; done
  fi
  rm -f "$pids/$name.pid"
}

# wait_for COMPONENT SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds; fails the step
# with the component's log if the time runs out or the component died.
wait_for() {
  local name=$1 timeout=$2 what=$3 deadline
  shift 3
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [[ $name == - ]] || running "$name" || fail_step "$name" "$name exited while waiting for $what"
    ((SECONDS < deadline)) || fail_step "$name" "timed out after ${timeout}s waiting for $what"
    sleep 0.2
  done
}

kubectl() { "$bin/kubectl" --kubeconfig "$admin_kubeconfig" "$@"; }
ctr() { command ctr --address "$containerd_sock" --namespace k8s.io "$@"; }
ctr2() { command ctr --address "$node2_containerd_sock" --namespace k8s.io "$@"; }
in_node2() { nsenter "--net=/run/netns/$node2_netns" -- "$@"; }

# --- certificates -----------------------------------------------------------------------------------------
# ECDSA P-256 keys: instant to generate, accepted by every component (service accounts sign with ES256).
new_key() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null && chmod 600 "$1"; }

new_ca() {  # new_ca NAME CN
  new_key "$pki/$1.key"
  openssl req -x509 -new -key "$pki/$1.key" -subj "/CN=$2" -days 3650 -out "$pki/$1.crt" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign,digitalSignature 2>/dev/null
}

# new_cert NAME CA SUBJECT USAGE [SANS]: USAGE is serverAuth, clientAuth or both (comma-separated).
new_cert() {
  local name=$1 ca=$2 subject=$3 usage=$4 sans=${5:-} ext
  ext=$(mktemp)
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"  # ECDSA keys sign; they never encipher
    echo "extendedKeyUsage=$usage"
    [[ -z $sans ]] || echo "subjectAltName=$sans"
  } >"$ext"
  new_key "$pki/$name.key"
  openssl req -new -key "$pki/$name.key" -subj "$subject" 2>/dev/null |
    openssl x509 -req -CA "$pki/$ca.crt" -CAkey "$pki/$ca.key" -CAcreateserial -days 3650 \
      -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$ext"
}

write_kubeconfig() {  # write_kubeconfig NAME CERT SERVER
  local file=$kcfg/$1.kubeconfig
  rm -f "$file"
  "$bin/kubectl" config --kubeconfig "$file" set-cluster taskfan --server "$3" \
    --certificate-authority "$pki/ca.crt" --embed-certs >/dev/null
  "$bin/kubectl" config --kubeconfig "$file" set-credentials "$1" \
    --client-certificate "$pki/$2.crt" --client-key "$pki/$2.key" --embed-certs >/dev/null
  "$bin/kubectl" config --kubeconfig "$file" set-context default --cluster taskfan --user "$1" >/dev/null
  "$bin/kubectl" config --kubeconfig "$file" use-context default >/dev/null
  chmod 600 "$file"
}

# Certificates name the node and its IP: made once, again only if either changed.
make_pki() {
  local params="node=$node ip=$node_ip kube-router node2=$node2 ip2=$node2_ip"
  [[ -f $pki/params && $(cat "$pki/params") == "$params" ]] && return 0
  rm -rf "$pki" "$kcfg"
  mkdir -p "$pki" "$kcfg"
  chmod 700 "$pki" "$kcfg"
  new_ca ca taskfan-k8s-ca
  new_ca etcd-ca taskfan-k8s-etcd-ca
  new_ca front-proxy-ca taskfan-k8s-front-proxy-ca
  new_cert apiserver ca /CN=kube-apiserver serverAuth \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$cluster_domain,DNS:localhost,DNS:$node,IP:$api_service_ip,IP:127.0.0.1,IP:$node_ip"
  new_cert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  new_cert apiserver-etcd-client etcd-ca /CN=kube-apiserver-etcd-client clientAuth
  new_cert etcd-server etcd-ca /CN=etcd serverAuth,clientAuth "DNS:localhost,IP:127.0.0.1"
  new_cert front-proxy-client front-proxy-ca /CN=front-proxy-client clientAuth
  new_cert admin ca "/O=system:masters/CN=taskfan-admin" clientAuth
  new_cert controller-manager ca /CN=system:kube-controller-manager clientAuth
  new_cert scheduler ca /CN=system:kube-scheduler clientAuth
  new_cert kubelet-client ca "/O=system:nodes/CN=system:node:$node" clientAuth
  new_cert kubelet-server ca "/CN=system:node:$node" serverAuth "DNS:$node,IP:$node_ip,IP:127.0.0.1"
  new_cert kubelet-2-client ca "/O=system:nodes/CN=system:node:$node2" clientAuth
  new_cert kubelet-2-server ca "/CN=system:node:$node2" serverAuth "DNS:$node2,IP:$node2_ip,IP:127.0.0.1"
  new_cert kube-proxy ca /CN=system:kube-proxy clientAuth
  new_cert kube-router ca /CN=system:kube-router clientAuth
  new_key "$pki/sa.key"
  openssl ec -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  local server=https://$node_ip:$api_port
  write_kubeconfig admin admin "$server"
  write_kubeconfig controller-manager controller-manager "$server"
  write_kubeconfig scheduler scheduler "$server"
  write_kubeconfig kubelet kubelet-client "$server"
  write_kubeconfig kubelet-2 kubelet-2-client "$server"
  write_kubeconfig kube-proxy kube-proxy "$server"
  write_kubeconfig kube-router kube-router "$server"
  echo "$params" >"$pki/params"
  chmod 600 "$pki"/*
}

# --- configuration files ----------------------------------------------------------------------------------
write_configs() {
  mkdir -p "$conf" "$run/cni/net.d" "$run/pod-logs"
  # restrict_oom_score_adj: root here lacks CAP_SYS_RESOURCE, so runc cannot lower oom_score_adj and
  # every sandbox would fail. The opt plugin is disabled: it would create /opt/containerd on the host.
  cat >"$conf/containerd.toml" <<EOF
version = 2
root = "$run/containerd"
state = "$sock_dir/containerd"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]
[grpc]
  address = "$containerd_sock"
[ttrpc]
  address = "$sock_dir/containerd.sock.ttrpc"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$IMAGE_PREFIX/pause:$PAUSE_TAG"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$run/cni/net.d"
    max_conf_num = 1
EOF
  # One bridge for the node's pods; hairpin so a pod reaches itself through its own Service.
  cat >"$run/cni/net.d/10-$cni_net.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$cni_net",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": true, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$pod_cidr"}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  # failCgroupV1: false and cgroupfs: this machine has cgroup v1 only and no systemd.
  # No image garbage collection (100 %): the images are imported (cluster.sh import), there is no registry to
  # pull them again, so one collected would leave its pods in ContainerCreating for good (the pause image: every
  # pod). A host disk fuller than 85 % made the kubelet collect them. Pods are evicted only when the disk is
  # nearly full (1 GiB left), not at a percentage that a big shared disk crosses with room to spare.
  cat >"$conf/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $node_ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/kubelet-server.crt
tlsPrivateKeyFile: $pki/kubelet-server.key
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$containerd_sock
clusterDomain: $cluster_domain
clusterDNS: [$dns_ip]
resolvConf: /etc/resolv.conf
podLogsDir: $run/pod-logs
serializeImagePulls: false
evictionHard: {memory.available: 100Mi, nodefs.available: 1Gi, imagefs.available: 1Gi}
imageGCHighThresholdPercent: 100
EOF
  # Leave the host's conntrack limits and timeouts and route_localnet alone (0 / false = as they are);
  # NodePorts only on the node IP.
  cat >"$conf/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $kcfg/kube-proxy.kubeconfig}
hostnameOverride: $node
clusterCIDR: $cluster_cidr
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [primary]
iptables: {localhostNodePorts: false}
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# The second node's: the first's, with its own paths, socket, runc root, CNI network and pod CIDR, node IP, identity
# and cgroup root.
write_node2_configs() {
  mkdir -p "$node2_run/cni/net.d" "$node2_run/pod-logs"
  sed -e "s|^root = .*|root = \"$node2_run/containerd\"|" -e "s|^state = .*|state = \"$node2_sock_dir/containerd\"|" \
    -e "s|\"$containerd_sock|\"$node2_containerd_sock|" -e "s|conf_dir = .*|conf_dir = \"$node2_run/cni/net.d\"|" \
    -e "s|SystemdCgroup = false|SystemdCgroup = false\n        Root = \"$node2_sock_dir/runc\"|" \
    "$conf/containerd.toml" >"$conf/containerd-2.toml"
  sed -e "s|\"$cni_net\"|\"$node2_cni_net\"|" -e "s|$pod_cidr|$node2_pod_cidr|" \
    "$run/cni/net.d/10-$cni_net.conflist" >"$node2_run/cni/net.d/10-$node2_cni_net.conflist"
  sed -e "s|^address: .*|address: $node2_ip|" -e "s|kubelet-server\.|kubelet-2-server.|" \
    -e "s|unix://$containerd_sock|unix://$node2_containerd_sock|" -e "s|^podLogsDir: .*|podLogsDir: $node2_run/pod-logs|" \
    "$conf/kubelet.yaml" >"$conf/kubelet-2.yaml"
  echo "cgroupRoot: /$node2_cgroup" >>"$conf/kubelet-2.yaml"
  sed -e "s|^hostnameOverride: .*|hostnameOverride: $node2|" "$conf/kube-proxy.yaml" >"$conf/kube-proxy-2.yaml"
}

# --- host state -------------------------------------------------------------------------------------------
detect_node_ip() {
  node_ip=$(ip -4 route get 1.1.1.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')
  [[ -n $node_ip ]] || die "cannot tell this machine's IP address (no default route?)"
}

# Before `up` changes anything: what the host looks like (for down's check) and its sysctls (to restore).
record_host() {
  rm -rf "$host"
  bash "$here/hostcheck.sh" snapshot "$host/before"
  cp "$host/before/sysctls" "$host/sysctls"
}

# --- up ---------------------------------------------------------------------------------------------------
# A connection to a Service's address made before kube-proxy has programmed that Service (a pod starting beside
# the Service it calls, while kube-proxy and kube-router take turns at iptables) is not translated: it would leave
# through the default route, masqueraded, to whatever answers there (seen: an HTTP 400 for daprd's Redis, a 404
# for KEDA's metrics, kept alive for good). Packets still addressed to the Service range after the nat table are
# dropped instead: the client's SYN is sent again a second later, and is translated by then. The chain is swept
# on down like kube-proxy's (its name starts KUBE-).
# guard_unproxied_services [in_node2]: on the host, or in the second node's namespace.
guard_unproxied_services() {
  local chain=KUBE-TASKFAN-UNPROXIED
  "$@" iptables -w -t mangle -N "$chain" 2>/dev/null || "$@" iptables -w -t mangle -F "$chain"
  "$@" iptables -w -t mangle -A "$chain" -d "$service_cidr" -m comment \
    --comment "taskfan-k8s: a Service address kube-proxy has not translated yet" -j DROP &&
    { "$@" iptables -w -t mangle -C POSTROUTING -j "$chain" 2>/dev/null || "$@" iptables -w -t mangle -I POSTROUTING 1 -j "$chain"; }
}

# pods_keep_their_addresses [in_node2]: a pod's packets to a pod of the other node keep its address (the bridge
# plugin's ipMasq would masquerade everything leaving the node's pod CIDR): NetworkPolicy selects pods by address.
# Packets kube-proxy marked for masquerading (0x4000: a pod reaching itself through a Service) are left to it.
pods_keep_their_addresses() {
  local chain=KUBE-TASKFAN-POD-TO-POD
  "$@" iptables -w -t nat -N "$chain" 2>/dev/null || "$@" iptables -w -t nat -F "$chain"
  "$@" iptables -w -t nat -A "$chain" -m mark --mark 0x4000/0x4000 -j RETURN &&
    "$@" iptables -w -t nat -A "$chain" -s "$cluster_cidr" -d "$cluster_cidr" -m comment \
      --comment "taskfan-k8s: pod to pod across nodes, unmasqueraded" -j ACCEPT &&
    { "$@" iptables -w -t nat -C POSTROUTING -j "$chain" 2>/dev/null || "$@" iptables -w -t nat -I POSTROUTING 1 -j "$chain"; }
}

# The second node's network: a namespace, a veth pair to the host (the node IP on its end), routes between the two
# pod CIDRs. The other node (the host) is let through the second node's NetworkPolicy as kube-router lets a node
# into its own pods: its packets carry kube-router's "allowed" mark (0x10000) before kube-router's chains see them.
node2_network() {
  ip netns add "$node2_netns" &&
    ip link add "$node2_link" type veth peer name eth0 netns "$node2_netns" &&
    ip addr add "$node2_gateway/$node2_prefix" dev "$node2_link" && ip link set "$node2_link" up &&
    ip -n "$node2_netns" link set lo up &&
    ip -n "$node2_netns" addr add "$node2_ip/$node2_prefix" dev eth0 && ip -n "$node2_netns" link set eth0 up &&
    ip -n "$node2_netns" route add default via "$node2_gateway" &&
    ip route add "$node2_pod_cidr" via "$node2_ip" dev "$node2_link" &&
    in_node2 sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 >/dev/null || return 1
  local chain=KUBE-TASKFAN-FROM-NODE source
  in_node2 iptables -w -t mangle -N "$chain" || return 1
  for source in "$node2_gateway" "$node_ip"; do
    in_node2 iptables -w -t mangle -A "$chain" -i eth0 -s "$source" -m comment \
      --comment "taskfan-k8s: the other node, let in as kube-router lets in a pod's own node" \
      -j MARK --set-xmark 0x10000/0x10000 || return 1
  done
  in_node2 iptables -w -t mangle -I PREROUTING 1 -j "$chain" &&
    guard_unproxied_services in_node2 && pods_keep_their_addresses in_node2
}

# What kube-router's policy controller reads (its own client certificate, CN system:kube-router).
kube_router_rbac='apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:kube-router"}
rules:
  - {apiGroups: [""], resources: [namespaces, pods, nodes, services, endpoints], verbs: [get, list, watch]}
  - {apiGroups: [networking.k8s.io], resources: [networkpolicies], verbs: [get, list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:kube-router"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:kube-router"}
subjects:
  - {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:kube-router"}'

all_running() {
  local c
  for c in "${components[@]}"; do running "$c" || return 1; done
}

any_running() {
  local c
  for c in "${components[@]}"; do running "$c" && return 0; done
  return 1
}

api_ready() { curl -sf --max-time 2 --cacert "$pki/ca.crt" --cert "$pki/admin.crt" --key "$pki/admin.key" "https://$node_ip:$api_port/readyz" | grep -qx ok; }
etcd_ready() { curl -sf --max-time 2 --cacert "$pki/etcd-ca.crt" --cert "$pki/apiserver-etcd-client.crt" --key "$pki/apiserver-etcd-client.key" "https://127.0.0.1:$etcd_port/health" | grep -q '"health":"true"'; }
containerd_ready() { ctr version; }
healthz() { curl -sfk --max-time 2 "$1" | grep -qx ok; }
node_ready() { [[ $(kubectl get node "${1:-$node}" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]]; }
image_present() { "${2:-ctr}" images ls -q "name==$1" | grep -qx "$1"; }
# A cgroup root of the second node's own in every hierarchy (cgroup v1), cpuset's CPUs and memory nodes as the root's.
node2_cgroups() {
  local dir
  for dir in /sys/fs/cgroup/*/; do
    mkdir -p "$dir$node2_cgroup" || return 1
  done
  cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset/$node2_cgroup/cpuset.cpus" &&
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset/$node2_cgroup/cpuset.mems"
}
dns_answers() { python3 "$here/dns_query.py" "$dns_ip" "kubernetes.default.svc.$cluster_domain" | grep -qx "$api_service_ip"; }

up() {
  local t0=$SECONDS
  detect_node_ip
  if all_running && api_ready; then
    say "the cluster is already up (kubeconfig: $admin_kubeconfig)"
    return 0
  fi
  if any_running; then
    die "the cluster is partly running ($(status_line)); run \`$0 down\` first"
  fi
  [[ $(id -u) -eq 0 ]] || die "the cluster needs root (containerd, kubelet, iptables)"
  bin=$(bash "$here/install-k8s.sh" | tail -n 1)
  # A host snapshot left behind means the last cluster was not stopped with `down`: clean up after it first.
  if [[ -d $host/before ]]; then
    say "the last cluster was not stopped with \`down\`; cleaning up after it first"
    down_impl
  fi
  mkdir -p "$run" "$logs" "$pids"
  record_host
  mkdir -p "$sock_dir"

  step "certificates and kubeconfigs in $pki"
  make_pki
  write_configs
  ((nodes == 1)) || write_node2_configs
  rm -rf "$run/etcd"  # each up starts an empty cluster
  done_step

  step "etcd and containerd"
  start etcd --name taskfan --data-dir "$run/etcd" --logger zap --log-outputs stderr \
    --listen-client-urls "https://127.0.0.1:$etcd_port" --advertise-client-urls "https://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "taskfan=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state new \
    --cert-file "$pki/etcd-server.crt" --key-file "$pki/etcd-server.key" \
    --trusted-ca-file "$pki/etcd-ca.crt" --client-cert-auth
  start containerd --config "$conf/containerd.toml"
  wait_for etcd 30 "etcd's /health" etcd_ready
  wait_for containerd 30 "containerd's socket" containerd_ready
  done_step

  if ((nodes == 2)); then
    step "second node $node2: network namespace $node2_netns ($node2_ip, pods $node2_pod_cidr), its containerd"
    node2_network || fail_step kubelet-2 "could not make the second node's network"
    node2_cgroups || fail_step kubelet-2 "could not make the second node's cgroup root /$node2_cgroup"
    mkdir -p "$node2_sock_dir"
    start containerd-2 --config "$conf/containerd-2.toml"
    wait_for containerd-2 30 "the second node's containerd socket" ctr2 version
    done_step
  fi

  step "kube-apiserver on $node_ip:$api_port"
  # --enable-aggregator-routing: aggregated APIs (KEDA's metrics adapter) are called at their endpoints,
  # not their ClusterIP, which kube-proxy may not have programmed yet.
  # --kubelet-preferred-address-types: the host name maps to 127.0.0.1 here, kubelet listens on the node IP.
  start kube-apiserver --advertise-address "$node_ip" --bind-address "$node_ip" --secure-port "$api_port" \
    --etcd-servers "https://127.0.0.1:$etcd_port" --etcd-cafile "$pki/etcd-ca.crt" \
    --etcd-certfile "$pki/apiserver-etcd-client.crt" --etcd-keyfile "$pki/apiserver-etcd-client.key" \
    --client-ca-file "$pki/ca.crt" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" --kubelet-certificate-authority "$pki/ca.crt" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-issuer "https://kubernetes.default.svc.$cluster_domain" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$service_cidr" --allow-privileged=true \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
    --enable-aggregator-routing=true --cert-dir "$run/apiserver"
  wait_for kube-apiserver 90 "the apiserver's /readyz" api_ready
  done_step

  step "images ($IMAGE_PREFIX/pause:$PAUSE_TAG, coredns:$COREDNS_VERSION) in containerd"
  local name archive
  for archive in pause coredns; do
    case $archive in
      pause) name=$IMAGE_PREFIX/pause:$PAUSE_TAG ;;
      coredns) name=$IMAGE_PREFIX/coredns:$COREDNS_VERSION ;;
    esac
    image_present "$name" || ctr images import "$images/$archive.tar" >>"$logs/containerd.log" 2>&1 ||
      fail_step containerd "could not import $images/$archive.tar"
    ((nodes == 1)) || image_present "$name" ctr2 ||
      ctr2 images import "$images/$archive.tar" >>"$logs/containerd-2.log" 2>&1 ||
      fail_step containerd-2 "could not import $images/$archive.tar into the second node"
  done
  done_step

  step "kube-controller-manager and kube-scheduler"
  start kube-controller-manager --kubeconfig "$kcfg/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$kcfg/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$kcfg/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10257 --cert-dir "$run/controller-manager" --leader-elect=false \
    --cluster-name taskfan --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" \
    --use-service-account-credentials=true --service-cluster-ip-range "$service_cidr" --cluster-cidr "$cluster_cidr"
  start kube-scheduler --kubeconfig "$kcfg/scheduler.kubeconfig" \
    --authentication-kubeconfig "$kcfg/scheduler.kubeconfig" --authorization-kubeconfig "$kcfg/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port 10259 --cert-dir "$run/scheduler" --leader-elect=false
  wait_for kube-controller-manager 60 "the controller-manager's /healthz" healthz https://127.0.0.1:10257/healthz
  wait_for kube-scheduler 60 "the scheduler's /healthz" healthz https://127.0.0.1:10259/healthz
  done_step

  step "a guard for Service addresses kube-proxy has not programmed yet"
  guard_unproxied_services || fail_step kube-proxy "could not add the iptables guard for $service_cidr"
  ((nodes == 1)) || pods_keep_their_addresses || fail_step kube-proxy "could not exempt pod-to-pod traffic from masquerading"
  done_step

  step "kubelet and kube-proxy; node $node Ready$( ((nodes == 1)) || echo ", and $node2")"
  start kubelet --config "$conf/kubelet.yaml" --kubeconfig "$kcfg/kubelet.kubeconfig" \
    --root-dir "$run/kubelet" --node-ip "$node_ip" --hostname-override "$node"
  start kube-proxy --config "$conf/kube-proxy.yaml"
  if ((nodes == 2)); then
    start kubelet-2 --config "$conf/kubelet-2.yaml" --kubeconfig "$kcfg/kubelet-2.kubeconfig" \
      --root-dir "$node2_run/kubelet" --node-ip "$node2_ip" --hostname-override "$node2"
    start kube-proxy-2 --config "$conf/kube-proxy-2.yaml"
  fi
  wait_for kubelet 60 "the kubelet's /healthz" healthz http://127.0.0.1:10248/healthz
  wait_for kubelet 60 "node $node to be Ready" node_ready
  # The first node runs the control plane (the apiserver, etcd, ... on the host): labelled as kubeadm labels
  # such a node, so that the cluster's own services (CoreDNS, Dapr's control plane) are kept on it and a drain of
  # the second node, a worker, never takes them away (values/dapr.yaml, coredns.yaml).
  kubectl label node "$node" --overwrite node-role.kubernetes.io/control-plane= >>"$logs/kubectl.log" 2>&1 ||
    fail_step kubectl "could not label node $node as the control plane's"
  wait_for kube-proxy 60 "kube-proxy's /healthz" curl -sf --max-time 2 http://127.0.0.1:10256/healthz
  if ((nodes == 2)); then
    wait_for kubelet-2 60 "node $node2 to be Ready" node_ready "$node2"
    wait_for kube-proxy-2 60 "the second kube-proxy's /healthz" in_node2 curl -sf --max-time 2 http://127.0.0.1:10256/healthz
  fi
  done_step

  step "kube-router's network policy controller (NetworkPolicy on the bridge)"
  kubectl apply -f - <<<"$kube_router_rbac" >>"$logs/kubectl.log" 2>&1 || fail_step kubectl "kubectl apply of kube-router's RBAC failed"
  # Only the firewall: pods keep the bridge CNI network and kube-proxy keeps the Services.
  start kube-router --kubeconfig "$kcfg/kube-router.kubeconfig" --hostname-override "$node" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-ipv6=false \
    --service-cluster-ip-range "$service_cidr" --health-port "$kube_router_health_port" --metrics-port 0
  # NODE_NAME: kube-router takes the node named like the machine before any --hostname-override.
  ((nodes == 1)) || NODE_NAME=$node2 start kube-router-2 --kubeconfig "$kcfg/kube-router.kubeconfig" --hostname-override "$node2" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-ipv6=false \
    --service-cluster-ip-range "$service_cidr" --health-port "$kube_router_health_port" --metrics-port 0
  wait_for kube-router 60 "kube-router's /healthz" curl -sf --max-time 2 "http://127.0.0.1:$kube_router_health_port/healthz"
  ((nodes == 1)) || wait_for kube-router-2 60 "the second kube-router's /healthz" \
    in_node2 curl -sf --max-time 2 "http://127.0.0.1:$kube_router_health_port/healthz"
  done_step

  step "default ServiceAccount"
  wait_for kube-controller-manager 60 "the default ServiceAccount" kubectl get serviceaccount default
  done_step

  step "CoreDNS at $dns_ip"
  sed -e "s|@COREDNS_IMAGE@|$IMAGE_PREFIX/coredns:$COREDNS_VERSION|" -e "s|@DNS_IP@|$dns_ip|" \
    -e "s|@CLUSTER_DOMAIN@|$cluster_domain|" "$here/coredns.yaml" >"$conf/coredns.yaml"
  kubectl apply -f "$conf/coredns.yaml" >>"$logs/kubectl.log" 2>&1 || fail_step kubectl "kubectl apply of CoreDNS failed"
  if ! kubectl -n kube-system rollout status deployment/coredns --timeout 90s >>"$logs/kubectl.log" 2>&1; then
    kubectl -n kube-system get pods -o wide >&2 || true
    kubectl -n kube-system describe pods -l k8s-app=kube-dns 2>&1 | tail -n 20 >&2 || true
    fail_step kubelet "CoreDNS did not become ready"
  fi
  wait_for kube-proxy 30 "an answer from $dns_ip for kubernetes.default.svc.$cluster_domain" dns_answers
  done_step

  say "up in $(duration $((SECONDS - t0))); kubeconfig: $admin_kubeconfig"
}

# --- down -------------------------------------------------------------------------------------------------
# Removes every pod's containers through containerd (their network namespaces are kept in a list first).
remove_pods() {  # remove_pods ctr|ctr2: the first node's or the second's
  local ctr=$1 ids id netns
  "$ctr" version >/dev/null 2>&1 || return 0
  ids=$("$ctr" containers ls -q)
  [[ -n $ids ]] || return 0
  echo "$ids" >>"$run/containers.list"  # their CNI result caches are removed after containerd stops
  for id in $ids; do
    netns=$("$ctr" containers info "$id" 2>/dev/null |
      python3 -c 'import json,sys; print(*[n.get("path","") for n in json.load(sys.stdin)["Spec"]["linux"]["namespaces"] if n["type"]=="network"])' 2>/dev/null || true)
    [[ -z $netns ]] || echo "$netns" >>"$run/netns.list"
    "$ctr" tasks kill --all --signal SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $ids; do
    "$ctr" tasks delete --force "$id" >/dev/null 2>&1 || true
    "$ctr" containers delete "$id" >/dev/null 2>&1 || true
  done
}

# Deletes the rules that jump to KUBE-*/CNI-* chains, then the chains themselves, in every table of both
# families; chains that were there before `up` (in the host snapshot) are left alone.
sweep_iptables() {
  local family table chain rule before=$host/before/iptables
  for family in iptables ip6tables; do
    command -v "$family-save" >/dev/null || continue
    for table in $("$family-save" 2>/dev/null | sed -n 's/^\*//p'); do
      while read -r chain; do
        [[ -f $before ]] && grep -q "^:$chain " "$before" && continue
        # Rules elsewhere that jump to it, then its own rules, then the chain.
        while read -r rule; do
          eval "\"$family\" -w -t \"$table\" -D ${rule#-A }" 2>/dev/null || true
        done < <("$family-save" -t "$table" 2>/dev/null | grep -E "^-A .* -j $chain( |$)" || true)
        "$family" -w -t "$table" -F "$chain" 2>/dev/null || true
      done < <("$family-save" -t "$table" 2>/dev/null | sed -nE 's/^:((KUBE|CNI)-[^ ]+) .*/\1/p')
      for chain in $("$family-save" -t "$table" 2>/dev/null | sed -nE 's/^:((KUBE|CNI)-[^ ]+) .*/\1/p'); do
        [[ -f $before ]] && grep -q "^:$chain " "$before" && continue
        "$family" -w -t "$table" -X "$chain" 2>/dev/null || true
      done
      # iptables-nft leaves the (now empty) table behind: drop it if it was not there before `up`.
      [[ -f $before ]] || continue
      tables_in "$family" "$before" | grep -qx "$table" && continue
      "$family-save" -t "$table" 2>/dev/null | grep -qE '^(-A |:[^ ]+ - )' && continue
      nft delete table "${family%tables}" "$table" 2>/dev/null || true
    done
  done
}

# Destroys the ip sets kube-router made (every set absent from the host snapshot).
sweep_ipsets() {
  command -v ipset >/dev/null || return 0
  local set
  for set in $(ipset list -n 2>/dev/null); do
    [[ -f $host/before/ipsets ]] && grep -qx "$set" "$host/before/ipsets" && continue
    ipset destroy "$set" 2>/dev/null || say "could not destroy ip set $set"
  done
}

# The tables of one family (iptables, ip6tables) in a hostcheck snapshot's iptables file.
tables_in() {
  awk -v s="## $1-save" '/^## /{on = ($0 == s); next} on && /^\*/{print substr($0, 2)}' "$2"
}

restore_sysctls() {
  [[ -f $host/sysctls ]] || return 0
  local line key value
  local -A current=()
  while IFS= read -r line; do current[${line%% = *}]=${line#* = }; done < <(bash "$here/hostcheck.sh" sysctls)
  while IFS= read -r line; do
    key=${line%% = *} value=${line#* = }
    # Keys of interfaces that are gone, and values that did not change, need nothing.
    [[ -v current[$key] && ${current[$key]} != "$value" ]] || continue
    sysctl -q -w "$key=$value" >/dev/null 2>&1 || say "could not restore sysctl $key to $value (it is ${current[$key]})"
  done <"$host/sysctls"
}

# Unmounts everything under a directory, deepest first.
unmount_under() {
  local dir=$1 m
  [[ -e $dir ]] || return 0
  for m in $(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || say "could not unmount $m"
  done
}

# Removes a host directory that `up` created (absent from the snapshot) if it is now empty.
remove_if_new_and_empty() {
  local p
  for p in "$@"; do
    [[ -f $host/before/paths ]] && grep -qx "$p (absent)" "$host/before/paths" || continue
    find "$p" -depth -type d -empty -delete 2>/dev/null || true
  done
}

down_impl() {
  # Nothing recreates pods once the controllers and kubelet are gone.
  stop kube-controller-manager
  stop kube-scheduler
  stop kube-router  # no policy changes from here; its chains and sets are swept below
  stop kube-router-2
  stop kubelet
  stop kubelet-2
  local i
  if ! running containerd && [[ -S $containerd_sock || -d $sock_dir/containerd ]]; then
    start containerd --config "$conf/containerd.toml"  # back up only to remove what it still runs
    for ((i = 0; i < 100; i++)); do ctr version >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  if ! running containerd-2 && [[ -e /run/netns/$node2_netns && -f $conf/containerd-2.toml ]] &&
    [[ -S $node2_containerd_sock || -d $node2_sock_dir/containerd ]]; then
    start containerd-2 --config "$conf/containerd-2.toml"
    for ((i = 0; i < 100; i++)); do ctr2 version >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  remove_pods ctr
  remove_pods ctr2
  stop containerd
  stop containerd-2
  stop kube-proxy
  stop kube-proxy-2  # its rules and chains go with its network namespace
  if [[ -x $bin/kube-proxy ]]; then "$bin/kube-proxy" --cleanup >>"$logs/kube-proxy.log" 2>&1 || true; fi
  stop kube-apiserver 15
  stop etcd

  # What kube-proxy --cleanup and CNI DEL would have removed, and what nothing removes by itself.
  sweep_iptables
  sweep_ipsets  # after the rules that matched on them are gone
  # Connections of the pods and to the Services, which outlive them in the kernel's table (an established one for
  # days): a next cluster reuses the same pod and Service addresses.
  if command -v conntrack >/dev/null; then
    conntrack -D -s "$cluster_cidr" >/dev/null 2>&1 || true
    conntrack -D -d "$service_cidr" >/dev/null 2>&1 || true
    conntrack -D -d "$cluster_cidr" >/dev/null 2>&1 || true
  fi
  ip link delete "$bridge" 2>/dev/null || true
  # The second node's namespace: its veth pair, routes, bridge, iptables, ip sets and sysctls go with it.
  if [[ -e /run/netns/$node2_netns ]]; then ip netns delete "$node2_netns" || say "could not delete netns $node2_netns"; fi
  ip link delete "$node2_link" 2>/dev/null || true
  local ns
  if [[ -f $run/netns.list ]]; then
    while read -r ns; do
      # A container that joined its sandbox's namespace names it as /proc/<pid>/ns/net: not a mount, and the pid
      # may be another process's by now (seen: rm of /proc/<pid>/ns/net failed and stopped down half way).
      [[ $ns != /proc/* && -e $ns ]] || continue
      umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
      rm -f "$ns" || say "could not remove $ns"
    done <"$run/netns.list"
    rm -f "$run/netns.list"
  fi
  # Namespaces containerd made that no container record named any more (e.g. after a crash).
  for ns in /run/netns/cni-*; do
    [[ -e $ns ]] || continue
    grep -qx "${ns##*/}" "$host/before/netns" 2>/dev/null && continue
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
  # A pod's veth goes with its namespace, but a lazily unmounted namespace a dying process still holds keeps it
  # a while: delete the host ends that were not there before `up` (the other end goes with it).
  local link
  for link in $(ip -o link show type veth 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
    grep -qx "$link" "$host/before/links" 2>/dev/null || ip link delete "$link" 2>/dev/null || true
  done
  unmount_under "$run/kubelet"
  unmount_under "$sock_dir"
  unmount_under "$run/containerd"
  unmount_under "$node2_run"
  # cgroups kubelet made for pods (deepest first; they are empty once every container is gone), and the second
  # node's cgroup root with its pods' under it.
  find /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/*/"$node2_cgroup" -depth -type d -exec rmdir {} + 2>/dev/null || true
  # CNI leases, and libcni's result caches (ours and the loopback plugin's, named by container id).
  rm -rf "/var/lib/cni/networks/$cni_net" /var/lib/cni/results/"$cni_net"-* 2>/dev/null || true
  rm -rf "/var/lib/cni/networks/$node2_cni_net" /var/lib/cni/results/"$node2_cni_net"-* 2>/dev/null || true
  local id
  if [[ -f $run/containers.list ]]; then
    while read -r id; do rm -f /var/lib/cni/results/*-"$id"-*; done <"$run/containers.list"
    rm -f "$run/containers.list"
  fi
  # kubelet's device-plugin socket sits in /var/lib/kubelet whatever --root-dir says.
  rm -f /var/lib/kubelet/device-plugins/kubelet.sock /var/lib/kubelet/device-plugins/kubelet_internal_checkpoint
  find /var/log/containers -maxdepth 1 -type l \( -lname "$run/pod-logs/*" -o -lname "$node2_run/pod-logs/*" \) \
    -delete 2>/dev/null || true
  # `ip netns add` (the second node) makes /run/netns a mount of itself when it makes the directory.
  if mountpoint -q /run/netns && [[ -f $host/before/mounts ]] && ! grep -q '^/run/netns ' "$host/before/mounts"; then
    umount /run/netns 2>/dev/null || umount -l /run/netns 2>/dev/null || say "could not unmount /run/netns"
  fi
  remove_if_new_and_empty /var/lib/cni /run/netns /run/containerd /var/log/containers /var/log/pods /var/lib/kubelet
  restore_sysctls
  rm -rf "$sock_dir" "$run/etcd" "$run/kubelet" "$run/pod-logs" "$node2_run/kubelet" "$node2_run/pod-logs"
}

down() {
  local wipe=${1:-} t0=$SECONDS rc=0
  [[ -z $wipe || $wipe == --wipe ]] || die "usage: $0 down [--wipe]"
  if [[ ! -d $host/before ]] && ! any_running; then
    say "no cluster is running"
  else
    [[ $(id -u) -eq 0 ]] || die "stopping the cluster needs root"
    step "stop the cluster and clean the host"
    down_impl
    done_step
    if [[ -d $host/before ]]; then
      step "check that the host is as before up"
      if bash "$here/hostcheck.sh" compare "$host/before" >"$logs/hostcheck.diff" 2>&1; then
        done_step
        rm -rf "$host"
      else
        echo "DIFFERENT" >&2
        say "the host differs from before up (kept in $host/before):"
        sed 's/^/  | /' "$logs/hostcheck.diff" | head -n 40 >&2
        rc=1
      fi
    fi
  fi
  if [[ $wipe == --wipe ]]; then
    unmount_under "$run"
    rm -rf "$run"
    say "removed $run"
  fi
  say "down in $(duration $((SECONDS - t0)))"
  return $rc
}

# --- import -------------------------------------------------------------------------------------------------
# Images reach the node without a registry: OCI archives (deploy/images/oci.py) imported into the
# containerd namespace kubelet uses; pods refer to them with imagePullPolicy: Never or IfNotPresent.
import_images() {
  (($#)) || die "usage: $0 import ARCHIVE..."
  running containerd || die "the cluster is not up (containerd is not running)"
  local archive node2_import=""
  if running containerd-2; then  # into the second node's containerd meanwhile (2 cores: about half the time)
    (for archive in "$@"; do ctr2 images import "$archive" >&2 || exit 1; done) &
    node2_import=$!
  fi
  for archive in "$@"; do
    ctr images import "$archive" >&2 || die "could not import $archive"
  done
  [[ -z $node2_import ]] || wait "$node2_import" || die "could not import the images into $node2"
}

# --- status -----------------------------------------------------------------------------------------------
status_line() {
  local c out=()
  for c in "${components[@]}"; do
    if running "$c"; then out+=("$c:$(pid_of "$c")"); else out+=("$c:-"); fi
  done
  echo "${out[*]}"
}

status() {
  local c
  for c in "${components[@]}"; do
    if running "$c"; then printf '%-24s running (pid %s)\n' "$c" "$(pid_of "$c")"; else printf '%-24s stopped\n' "$c"; fi
  done
  if running kube-apiserver; then kubectl get nodes -o wide 2>&1 || true; fi
}

# One up or down at a time; the lock sits beside the run directory, which `down --wipe` removes.
mkdir -p "$(dirname "$run")"
exec 8>>"${run%/}.lock"
case ${1:-} in
  up) flock 8; up ;;
  down) flock 8; down "${2:-}" ;;
  status) status ;;
  kubeconfig) echo "$admin_kubeconfig" ;;
  import) shift; import_images "$@" ;;
  tag) (($# == 3)) || die "usage: $0 tag IMAGE NEW"; running containerd || die "the cluster is not up"
       ctr images tag --force "$2" "$3" >&2
       if running containerd-2; then ctr2 images tag --force "$2" "$3" >&2; fi ;;
  *) echo "usage: $0 up | down [--wipe] | status | kubeconfig | import ARCHIVE... | tag IMAGE NEW" >&2; exit 2 ;;
esac
