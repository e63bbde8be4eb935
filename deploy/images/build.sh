#!/usr/bin/env bash
# make images: OCI image archives of Taskfan's services and of the Dapr and KEDA control planes they run on
# in Kubernetes, without Docker or a registry, into .taskfan/images/*.tar (`ctr images import`, `skopeo copy`).
#
#   deploy/images/build.sh [taskfan] [dapr] [keda]     # default: all three; IMAGE_REGISTRY=localhost
#
# Taskfan: ONE image, $IMAGE_REGISTRY/taskfan/taskfan:<version of pyproject.toml>, for the five services (the
# name deploy/helm/taskfan expects); each Deployment picks its service by its command, as dapr.yaml and the
# chart give it (`python3 -m services.<app>.app`; python and python3 are the venv's).
# The five share one package and one dependency set and are released together: five images would be five
# copies of the same bytes that differ only in a default command, pulled and stored five times per node (a
# service's image would share no layer with another's unless built the same way), scanned five times, and could
# run mixed versions of the contracts they share. Three layers, each rebuilt only when its inputs change:
#   1. Debian $suite minbase + python3 (mmdebstrap), cached per machine under
#      ${TASKFAN_CACHE:-~/.cache/taskfan}/images/<suite>-<python>/ and keyed by its recipe; TASKFAN_IMAGES_REFRESH=1
#      bootstraps it again (security updates);
#   2. /opt/venv with exactly the wheels of deploy/images/requirements.txt (the virtualenv's versions, hash-checked,
#      installed offline by pip inside the rootfs), cached per machine, keyed by the base and that file;
#   3. Taskfan's code (src/taskfan, services) in the venv's site-packages, per clone, keyed by its content.
# Byte code: each layer carries the .pyc of its own modules, compiled once at build time as unchecked-hash
# files (valid whatever the layer's clamped file times say; the only byte code in the image). Without them every
# container start compiles in memory what it imports, since the root is read-only and PYTHONDONTWRITEBYTECODE is
# set: measured here, importing the workflow, ingest and scorer modules took 3.3 s of CPU without them and 1.1 s
# with them, for 35 MB more before compression. TASKFAN_IMAGE_PYC=0 leaves them out. User 65532; writable: /tmp.
#
# Dapr (the pinned version, deploy/install-dapr.sh) and KEDA (deploy/keda/go.mod, deploy/install-keda.sh):
# one image per binary, as upstream publishes them and as Dapr's Helm chart asks for
# ({registry}/{operator,sentry,injector,placement,scheduler,daprd}:{tag}, entrypoint /<name>; the injector gives
# sidecars {registry}/daprd:{tag} with /daprd), so each node pulls only what its pods run. Each has two layers:
# one shared by all nine (CA bundle, /etc/passwd and /etc/group with user 65532, nsswitch.conf, zoneinfo, /tmp)
# and the static binary.
#
# Packed layers are cached under ${TASKFAN_CACHE:-~/.cache/taskfan}/images/layers (deploy/images/oci.py), so a new
# clone assembles its archives in seconds; an archive is rewritten only when its image changed. Prints one line
# per step with its time and a table of the archives at the end; the output of mmdebstrap, pip and go goes to
# .taskfan/logs/images.log. Needs root (mmdebstrap, mount, chroot) and installs mmdebstrap with apt if missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
export TASKFAN_LOG=$root/.taskfan/logs/images.log TASKFAN_LOG_PREFIX=images
# shellcheck source=../lib.sh
source "$here/../lib.sh"
# shellcheck source=../../src/taskfan/versions.env
source "$root/src/taskfan/versions.env"

groups=("$@")
(( ${#groups[@]} )) || groups=(taskfan dapr keda)
for g in "${groups[@]}"; do
  [[ $g == taskfan || $g == dapr || $g == keda ]] || fail "unknown image group '$g' (taskfan, dapr, keda)"
done
wants() { [[ " ${groups[*]} " == *" $1 "* ]]; }

registry=${IMAGE_REGISTRY:-localhost}
suite=bookworm
python=python3.11 # bookworm's python3; checked after the bootstrap
icache=$cache_root/images/$suite-$python
layers=$cache_root/images/layers
out=$root/.taskfan/images
work=$out/work
site=opt/venv/lib/$python/site-packages
arch=$(uname -m)
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/pyproject.toml" | head -n 1)
[[ -n $version ]] || fail "no version in pyproject.toml"
# pip itself only runs inside the rootfs while the deps layer is made; it is not in the image.
pip_pin="pip==26.3 --hash=sha256:f3b60b20ffaadd4415ed7957212a38ac63fa4c5fa375bd0f4a797777940fad13"
lock=$here/requirements.txt
pyc=${TASKFAN_IMAGE_PYC:-1}
[[ $pyc == 0 || $pyc == 1 ]] || fail "TASKFAN_IMAGE_PYC is 0 or 1, not '$pyc'"
compile=(-m compileall -q --invalidation-mode unchecked-hash)
# The interpreter itself, not a version manager's shim that costs a second per call.
host_python=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)') ||
  fail "${PYTHON:-python3} is needed (oci.py, and its pip downloads the image's wheels; set PYTHON=...)"
mkdir -p "$icache" "$layers" "$out" "$work"
used_trees=()
table=$work/table.tsv
: >"$table"

(( $(id -u) == 0 )) || fail "building images needs root (mmdebstrap, mount --bind, chroot); run it as root"
# One build at a time on the machine: the trees and wheels under $icache are shared by every clone.
exec 8>"$icache/.lock"
if ! flock -n 8; then
  say "another clone is building images; waiting for its lock ($icache/.lock)"
  flock 8
fi

# Mounts made for a chroot step, unmounted in reverse order on any exit.
mounts=()
unmount_all() {
  local i
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" || true; done
  mounts=()
}
cleanup() {
  unmount_all
  [[ -z $_phase_open ]] || echo "interrupted; output in $install_log" >&2
}
trap cleanup EXIT

hash_of() { sha256sum | cut -c1-16; }

# --- tools ------------------------------------------------------------------------------------------------
if ! command -v mmdebstrap >/dev/null; then
  apt_install() { apt_get update && apt_get install -y --no-install-recommends mmdebstrap; }
  phase "apt-get install mmdebstrap" apt_install
fi

# --- the Debian base rootfs (per machine) -----------------------------------------------------------------
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
security_mirror=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
# merged-usr hook: /bin etc. as symlinks like debootstrap does, without the usrmerge package (and its perl).
# redis-server too (Debian's, ~2 MB): the chart's Redis runs from the Taskfan image, one base for everything.
base_args=(--mode=root --variant=minbase --format=directory --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --include=python3,ca-certificates,redis-server --aptopt='APT::Install-Recommends "false"'
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/lintian/*')
sources=("deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security_mirror $suite-security main")
# v<N>: bump when finish_base changes.
base_key=$(printf '%s\n' v2 "pyc=$pyc" "${base_args[@]}" "${sources[@]}" | hash_of)
base=$icache/base-$base_key

# What the image needs no copy of: device nodes (the runtime mounts /dev), apt's lists and caches, logs, the
# byte code of Debian's postinst (timestamp .pyc files go stale once the layer clamps file times: the standard
# library is compiled again, see above), setuid/setgid bits; and a user 65532 with /tmp as its home.
finish_base() {
  local r=${1:?}
  rm -rf "${r:?}"/dev/* "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/* "$r"/var/cache/debconf/*-old \
    "$r"/var/lib/dpkg/*-old "$r"/var/log/* "$r"/tmp/* "$r"/root/.cache &&
    find "$r/usr" -depth -name __pycache__ -type d -exec rm -rf {} + &&
    { ((!pyc)) || chroot "$r" /usr/bin/python3 "${compile[@]}" -x '/tests?/' "/usr/lib/$python"; } &&
    find "$r" -xdev -type f -perm /6000 -exec chmod ug-s {} + &&
    chmod 1777 "$r/tmp" &&
    echo "nonroot:x:65532:65532:nonroot:/tmp:/usr/sbin/nologin" >>"$r/etc/passwd" &&
    echo "nonroot:x:65532:" >>"$r/etc/group" &&
    [[ $(chroot "$r" /usr/bin/python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])') == "$python" ]]
}
bootstrap() {
  rm -rf "$base.tmp" && mmdebstrap "${base_args[@]}" "$suite" "$base.tmp" "${sources[@]}" &&
    finish_base "$base.tmp" && mv "$base.tmp" "$base"
}
need_base() {
  [[ -z ${TASKFAN_IMAGES_REFRESH:-} ]] || rm -rf "$base" "$icache/static-$base_key" "$icache/deps-"*
  [[ -d $base ]] || phase "Debian $suite minbase + python3 rootfs (mmdebstrap, once per machine)" bootstrap
  used_trees+=("$base")
}

# A tree for the image's user-facing static files, from the base rootfs: the bottom layer of the Go images.
static=$icache/static-$base_key
make_static() {
  local s=$static.tmp
  rm -rf "$s" && mkdir -p "$s/etc/ssl/certs" "$s/usr/share" "$s/tmp" &&
    cp "$base/etc/ssl/certs/ca-certificates.crt" "$s/etc/ssl/certs/" &&
    cp -a "$base/usr/share/zoneinfo" "$s/usr/share/" &&
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/tmp:/sbin/nologin\n' >"$s/etc/passwd" &&
    printf 'root:x:0:\nnonroot:x:65532:\n' >"$s/etc/group" &&
    echo 'hosts: files dns' >"$s/etc/nsswitch.conf" &&
    chmod 1777 "$s/tmp" && chmod -R go-w "$s/etc" "$s/usr" && mv "$s" "$static"
}

# --- the packer ------------------------------------------------------------------------------------------
oci() { # oci ARCHIVE NAME TREE... -- OPTIONS... : write (or keep) one archive and add it to the table
  local archive=$1 name=$2
  shift 2
  local trees=() opts=()
  while [[ $1 != -- ]]; do trees+=("$1"); shift; done
  shift
  opts=("$@")
  local layer_args=() t
  for t in "${trees[@]:1}"; do layer_args+=(--layer "$t"); done
  "$host_python" "$here/oci.py" "${trees[0]}" "$archive" --name "$name" "${layer_args[@]}" \
    --layer-cache "$layers" "${opts[@]}" >"$work/packed" && cat "$work/packed"
}

image() { # image ARCHIVE NAME TREE... -- OPTIONS...: one timed step, and a row of the table
  local archive=$1 name=$2 digest
  phase "pack $name" oci "$@"
  read -r _ _ digest <"$work/packed" # oci.py prints: archive name digest
  printf '%s\t%s\t%s\t%s\n' "$name" "$digest" "$(du -m --apparent-size "$archive" | cut -f1)" "${archive#"$root"/}" \
    >>"$table"
}

# --- Taskfan's services ----------------------------------------------------------------------------------
# Runs COMMAND... inside the overlay of LOWER (colon-separated, top first) with UPPER capturing every change;
# /dev from the host, /tmp a fresh tmpfs, /mnt the wheelhouse and /srv the staging directory, read-only.
in_rootfs() { # in_rootfs LOWER UPPER STAGE -- COMMAND...
  local lower=$1 upper=$2 stage=$3 merged=$work/merged ovl=$work/ovl-work rc=0
  shift 4
  rm -rf "$ovl" && mkdir -p "$upper" "$ovl" "$merged" || return 1
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$upper,workdir=$ovl" "$merged" && mounts+=("$merged") &&
    mount --bind /dev "$merged/dev" && mounts+=("$merged/dev") &&
    mount -t tmpfs tmpfs "$merged/tmp" && mounts+=("$merged/tmp") &&
    mount --bind -o ro "$wheels" "$merged/mnt" && mounts+=("$merged/mnt") &&
    mount --bind -o ro "$stage" "$merged/srv" && mounts+=("$merged/srv") || rc=1
  ((rc)) || chroot "$merged" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 "$@" || rc=$?
  unmount_all
  rm -rf "$ovl"
  return "$rc"
}

wheels=$icache/wheels
# The wheels for the image's Python and glibc (bookworm: 2.36), whatever Python runs pip here; the hashes make
# sure they are the very files the lock names.
download_wheels() {
  local platforms=() i
  for ((i = 36; i >= 17; i--)); do platforms+=(--platform "manylinux_2_${i}_$arch"); done
  platforms+=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch")
  mkdir -p "$wheels" && printf '%s\n' "$pip_pin" >"$work/pip.txt" &&
    "$host_python" -m pip download --disable-pip-version-check --no-deps --only-binary=:all: \
      "${platforms[@]}" --implementation cp --python-version "${python#python}" \
      --abi "cp${python//[a-z.]/}" --abi abi3 --abi none \
      --require-hashes -r "$lock" -r "$work/pip.txt" -d "$wheels"
}

make_deps() {
  local stage=$work/stage-deps
  rm -rf "$deps.tmp" "$stage" && mkdir -p "$stage" && cp "$lock" "$stage/requirements.txt" &&
    in_rootfs "$base" "$deps.tmp" "$stage" -- /bin/sh -ec "
      /usr/bin/python3 -m venv --without-pip /opt/venv
      /opt/venv/bin/python /mnt/$(basename "$pip_wheel")/pip install --no-index --find-links /mnt \
        --require-hashes --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        -r /srv/requirements.txt
      if [ $pyc = 1 ]; then /opt/venv/bin/python ${compile[*]} /opt/venv/lib; fi" &&
    rm -rf "$deps.tmp/tmp" && mv "$deps.tmp" "$deps"
}

# Taskfan's code as setuptools would install it (pyproject: packages taskfan*, services*, package data
# versions.env), copied straight into site-packages: no build backend, no network.
taskfan_sources() {
  local f
  (cd "$root" && git ls-files -co --exclude-standard -- src/taskfan services |
    while IFS= read -r f; do [[ -f $f && $f != */__pycache__/* ]] && echo "$f"; done)
}
make_app() {
  local f dest
  rm -rf "$app.tmp" && mkdir -p "$app.tmp/$site" || return 1
  while IFS= read -r f; do
    [[ -f $root/$f ]] || continue
    dest=$app.tmp/$site/${f#src/}
    mkdir -p "${dest%/*}" && cp "$root/$f" "$dest" || return 1
  done < <(taskfan_sources)
  # Byte code is the same within a minor version: the host's Python compiles them if it is the image's.
  if ((pyc)); then
    if [[ $("$host_python" -c 'import sys; print("python%d.%d" % sys.version_info[:2])') == "$python" ]]; then
      "$host_python" "${compile[@]}" -s "$app.tmp" -p / "$app.tmp/$site" || return 1
    else
      say "warning: $host_python is not $python: Taskfan's own modules go without byte code"
    fi
  fi
  chmod -R u=rwX,go=rX "$app.tmp" && mv "$app.tmp" "$app"
}

need_base

if wants taskfan; then
  command -v "$host_python" >/dev/null && "$host_python" -m pip --version >/dev/null 2>&1 ||
    fail "$host_python with pip is needed to download the image's wheels (set PYTHON=...)"
  lock_key=$(printf '%s\n' "$pip_pin" | cat - "$lock" | hash_of)
  [[ -f $wheels/.complete-$lock_key ]] || {
    phase "download the pinned wheels (deploy/images/requirements.txt)" download_wheels
    touch "$wheels/.complete-$lock_key"
  }
  pip_wheel=$(ls "$wheels"/pip-26.3-*.whl)
  deps=$icache/deps-$(printf '%s\n' v2 "$base_key" "$lock_key" | hash_of)
  [[ -d $deps ]] || phase "install the pinned wheels into /opt/venv (offline, hash-checked)" make_deps
  used_trees+=("$deps")
  app_key=$( (echo "pyc=$pyc" && cd "$root" && taskfan_sources | tr '\n' '\0' | xargs -0 sha256sum) | hash_of)
  app=$work/app-$app_key
  if [[ ! -d $app ]]; then
    rm -rf "$work"/app-*
    phase "Taskfan's code into the venv (src/taskfan, services)" make_app
  fi
  # Readable by the image's non-root user whatever changed the tree's modes since it was made.
  chmod -R u=rwX,go=rX "$app"
  # With the virtualenv's drift from the lock, the image would not run what the tests ran.
  if [[ -x $root/.venv/bin/python ]]; then
    drift=$("$root/.venv/bin/python" - "$lock" <<'EOF'
import re, sys
from importlib.metadata import PackageNotFoundError, version
for line in open(sys.argv[1]):
    m = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
    if m:
        try:
            have = version(m[1])
        except PackageNotFoundError:
            have = "missing"
        if have != m[2]:
            print(f"{m[1]} {m[2]} (venv: {have})", end="; ")
EOF
)
    [[ -z $drift ]] || say "warning: .venv and deploy/images/requirements.txt differ: $drift; run .venv/bin/python deploy/images/lock.py"
  fi
  name=$registry/taskfan/taskfan:$version
  image "$out/taskfan-taskfan-$version.tar" "$name" "$base" "$deps" "$app" -- \
    --cmd '["python", "-c", "raise SystemExit(\"taskfan: give the service to run as the command, as dapr.yaml and the Helm chart do: python3 -m services.<ingest|workflow|validator|enricher|scorer>.app\")"]' \
    --user 65532:65532 --workdir /tmp \
    --env PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env VIRTUAL_ENV=/opt/venv --env HOME=/tmp --env LANG=C.UTF-8 \
    --env PYTHONDONTWRITEBYTECODE=1 --env PYTHONUNBUFFERED=1
fi

# --- Dapr and KEDA -----------------------------------------------------------------------------------------
static_image() { # static_image GROUP NAME TAG BINARY [ENTRYPOINT JSON]
  local group=$1 name=$2 tag=$3 binary=$4 entrypoint=${5:-} tree=$work/bin-$1-$2
  [[ -n $entrypoint ]] || entrypoint="[\"/$name\"]"
  rm -rf "$tree" && mkdir -p "$tree"
  # A hard link when the cache is on the same file system: no 200 MB copy.
  ln "$binary" "$tree/$name" 2>/dev/null || cp -p "$binary" "$tree/$name"
  image "$out/$group-$name-$tag.tar" "$registry/$group/$name:$tag" "$static" "$tree" -- \
    --entrypoint "$entrypoint" --user 65532:65532 --workdir /
  rm -rf "$tree"
}

if wants dapr || wants keda; then
  [[ -d $static ]] || phase "static files of the Go images (CA bundle, passwd, zoneinfo)" make_static
  used_trees+=("$static")
fi
if wants dapr; then
  dapr_bin=$(bash "$root/deploy/install-dapr.sh" operator injector | tail -n 1)
  for c in operator injector sentry placement scheduler daprd; do
    static_image dapr "$c" "$DAPR_VERSION" "$dapr_bin/$c"
  done
fi
if wants keda; then
  keda_bin=$(bash "$root/deploy/install-keda.sh" | tail -n 1)
  keda_version=${keda_bin%/bin}
  keda_version=${keda_version##*/}
  # Entrypoints as in KEDA's own Dockerfiles.
  static_image keda keda "$keda_version" "$keda_bin/keda" '["/keda", "--zap-log-level=info", "--zap-encoder=console"]'
  static_image keda keda-adapter "$keda_version" "$keda_bin/keda-adapter" \
    '["/keda-adapter", "--secure-port=6443", "--zap-log-level=info", "--zap-encoder=console"]'
  static_image keda keda-admission-webhooks "$keda_version" "$keda_bin/keda-admission-webhooks" \
    '["/keda-admission-webhooks", "--zap-log-level=info", "--zap-encoder=console"]'
fi

# Packed layers and trees unused for 30 days (oci.py marks each use of a layer, this each use of a tree) belong
# to images nobody builds any more.
for t in "${used_trees[@]}"; do touch "$t"; done
find "$layers" -type f -mtime +30 -delete
find "$icache" -mindepth 1 -maxdepth 1 -type d \( -name 'base-*' -o -name 'deps-*' -o -name 'static-*' \) -mtime +30 \
  -exec rm -rf {} +
{
  printf 'IMAGE\tDIGEST\tMB\tARCHIVE\n'
  cat "$table"
} | awk -F'\t' '{ printf "%-46s %-71s %5s  %s\n", $1, $2, $3, $4 }' >&2
rm -f "$table"
