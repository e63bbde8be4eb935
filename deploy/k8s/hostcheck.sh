#!/usr/bin/env bash
# What a local Kubernetes cluster changes on the host, as text that two runs can compare.
#
#   hostcheck.sh snapshot DIR    write the host's current state into DIR (one file per aspect)
#   hostcheck.sh compare DIR     compare the host now with DIR; prints the differences, exits 1 if any
#   hostcheck.sh sysctls         the sysctl values that are recorded (cluster.sh restores these on down)
#
# cluster.sh takes a snapshot before `up` changes anything and compares after `down`: iptables and
# ip6tables rules, ip sets, network links, addresses and routes, network namespaces, mounts, cgroups, the
# sysctls that kubelet, kube-proxy and the CNI plugins set, the files they leave in fixed host paths,
# and the cluster's processes and ports. Counters, volatile kernel values and other programs' processes
# are left out, so a Taskfan stack running beside the cluster does not show up as a difference.
set -euo pipefail

# Kernel values that change by themselves (counters, random numbers): never compared.
volatile='^(kernel\.(ns_last_pid|random\.|pty\.nr|tainted)|net\.netfilter\.nf_conntrack_count|fs\.)'
# Host paths kubelet, containerd and the CNI plugins use whatever their configuration says.
host_paths=(/var/lib/cni /run/netns /run/containerd /var/log/pods /var/log/containers /var/run/kubernetes
  /var/lib/kubelet /etc/cni /opt/cni /opt/containerd /run/taskfan-k8s)
# The cluster's processes (comm names) and ports (see cluster.sh).
process_re='^(etcd|kube-apiserver|kube-controller|kube-scheduler|kubelet|kube-proxy|kube-router|containerd|containerd-shim.*|coredns|pause)$'
ports_re=':(6443|12379|12380|10248|10249|10250|10256|10257|10259|20244)$'

sysctls() {
  sysctl -a 2>/dev/null | grep -E '^(kernel|vm|net)\.' | grep -Ev "$volatile" | grep -Ev '^net\.(ipv4|ipv6)\.(conf|neigh)\.(veth|tfk8s|cni)' || true
}

rules() {  # iptables-save without counters and comments, per family
  local tool
  for tool in iptables-save ip6tables-save; do
    command -v "$tool" >/dev/null || continue
    echo "## $tool"
    "$tool" 2>/dev/null | grep -v '^#' | sed -E 's/\[[0-9]+:[0-9]+\]$/[0:0]/' || true
  done
}

snapshot() {
  local dir=$1
  mkdir -p "$dir"
  rules >"$dir/iptables"
  { ip -o link show | awk -F': ' '{print $2}' | sed 's/@.*//'; } | sort >"$dir/links"
  ip -o addr show | awk '{print $2, $3, $4}' | sort >"$dir/addresses"
  { ip route show table all; ip -6 route show table all; ip rule; } 2>/dev/null | sort >"$dir/routes"
  { ls /run/netns 2>/dev/null || true; } | sort >"$dir/netns"
  awk '{print $5, $9}' /proc/self/mountinfo | sort >"$dir/mounts"
  { ls -d /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/*/*/kubepods* /sys/fs/cgroup/*/taskfan-node2 2>/dev/null || true; } | sort >"$dir/cgroups"
  sysctls >"$dir/sysctls"
  { ipset list -n 2>/dev/null || true; } | sort >"$dir/ipsets"  # kube-router's policy sets
  local p
  for p in "${host_paths[@]}"; do
    if [[ -e $p ]]; then find "$p" -maxdepth 3 2>/dev/null | sort; else echo "$p (absent)"; fi
  done >"$dir/paths"
  # Zombies are left out: PID 1 reaps the cluster's stopped processes a moment later.
  { ps -eo stat=,comm= | awk '$1 !~ /^Z/ {print $2}' | grep -E "$process_re" || true; } | sort | uniq -c >"$dir/processes"
  { ss -Hltnu 2>/dev/null | awk '{print $1, $5}' | grep -E "$ports_re" || true; } | sort >"$dir/ports"
}

compare() {
  local before=$1 now rc=0 f
  now=$(mktemp -d)
  snapshot "$now"
  for f in "$before"/*; do
    f=${f##*/}
    if ! diff -u --label "before/$f" --label "now/$f" "$before/$f" "$now/$f"; then rc=1; fi
  done
  rm -rf "$now"
  return $rc
}

case ${1:-} in
  snapshot) snapshot "${2:?snapshot DIR}" ;;
  compare) compare "${2:?compare DIR}" ;;
  sysctls) sysctls ;;
  *) echo "usage: $0 snapshot DIR | compare DIR | sysctls" >&2; exit 2 ;;
esac
