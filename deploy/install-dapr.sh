#!/usr/bin/env bash
# Build the pinned Dapr runtime (daprd, placement, scheduler, sentry) from the Go module proxy, once per machine.
#
#   deploy/install-dapr.sh                       # the four commands the local stack runs
#   deploy/install-dapr.sh operator injector     # those four and the Kubernetes control plane's two more
#                                                # (deploy/images/build.sh: the images Dapr's Helm chart runs)
#
# The binaries live outside the clone, keyed by version, so every clone on the machine (CI's included)
# reuses one build: ${TASKFAN_CACHE:-~/.cache/taskfan}/dapr/<version>/bin. A lock keeps two clones from
# building at once. Prints the bin directory on stdout (its last line); one line per step on stderr, the
# output of go in the install log (see lib.sh). Prints nothing on stderr when the runtime is already built.
# A cache that lacks some commands (one built before sentry was added) gets only the missing ones built:
# the binaries present are kept as long as their daprd reports the pinned version. The patches in
# deploy/dapr/patches (each documents itself) are applied to a copy of the module they name before building.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../src/taskfan/versions.env
source "$here/../src/taskfan/versions.env"
# shellcheck source=lib.sh
source "$here/lib.sh"

prefix="$cache_root/dapr/$DAPR_VERSION"
bin="$prefix/bin"
commands=(daprd placement scheduler sentry)
# Extra commands asked for on the command line; operator and injector only run on Kubernetes, so the local
# stack (make run, make test, CI) does not wait for them.
for c in "$@"; do
  case $c in
    daprd | placement | scheduler | sentry) ;;
    operator | injector) [[ " ${commands[*]} " == *" $c "* ]] || commands+=("$c") ;;
    *) echo "install-dapr.sh: unknown Dapr command '$c' (daprd placement scheduler sentry operator injector)" >&2; exit 2 ;;
  esac
done

# Patches to the pinned modules (deploy/dapr/patches/*.patch, each naming its module and version on a
# `module:` line): every command is built against a patched copy of its module (apply_patches below).
shopt -s nullglob
patches=("$here"/dapr/patches/*.patch)
shopt -u nullglob

# How daprd is built (deploy/dapr/cmd/daprd/main.go: Dapr's stable components plus the SQLite name resolver)
# and the patches every command is built with. A cache built another way (a clone from before, with
# allcomponents or without a patch) is built again, every command of it.
# The files' content, not their paths: every clone on the machine shares one build.
recipe="stablecomponents+sqlite $(cat "$here/dapr/cmd/daprd/main.go" "$here/dapr/go.mod" "${patches[@]}" |
  sha256sum | cut -c1-16)"

daprd_current() {
  [[ -x "$bin/daprd" && $(cat "$bin/RECIPE" 2>/dev/null) == "$recipe" ]] &&
    "$bin/daprd" --version 2>/dev/null | grep -qx "$DAPR_VERSION"
}

built() {
  for c in "${commands[@]}"; do [[ -x "$bin/$c" ]] || return 1; done
  daprd_current
}

if built; then echo "$bin"; exit 0; fi

command -v go >/dev/null || fail "Go >= 1.26.4 is required to build the Dapr runtime (README, Requirements)"
(( ${#patches[@]} == 0 )) || command -v patch >/dev/null ||
  fail "patch is required to build the Dapr runtime (apt-get install patch)"
mkdir -p "$prefix"
build_lock "$prefix/.lock" "Dapr $DAPR_VERSION"
if built; then echo "$bin"; exit 0; fi

# The commands to build: all of them, unless the cache holds a current daprd, in which case only those missing
# from it (the daprd build is by far the longest).
missing=()
if daprd_current; then
  for c in "${commands[@]}"; do [[ -x "$bin/$c" ]] || missing+=("$c"); done
else
  missing=("${commands[@]}")
fi

src="$prefix/src"
rm -rf "$src" "$prefix/bin.tmp"
mkdir -p "$src" "$prefix/bin.tmp"
cp -r "$here/dapr/go.mod" "$here/dapr/tools.go" "$here/dapr/cmd" "$src/"
[[ -f "$here/dapr/go.sum" ]] && cp "$here/dapr/go.sum" "$src/"

# sum.golang.org is not reachable here; the committed go.sum pins every module hash instead.
export GOSUMDB=off GOFLAGS=-mod=mod CGO_ENABLED=0
ldflags="-s -w -X github.com/dapr/dapr/pkg/buildinfo.version=$DAPR_VERSION"
if (( ${#missing[@]} == ${#commands[@]} )); then
  say "building Dapr $DAPR_VERSION into $bin, once per machine (about 10 min on 2 cores); output in $install_log"
else
  say "adding ${missing[*]} of Dapr $DAPR_VERSION to $bin (about 1 min per command); output in $install_log"
fi
cd "$src"
# daprd is ./cmd/daprd of the wrapper module (stablecomponents + the SQLite resolver), the others Dapr's own.
package_of() { if [[ $1 == daprd ]]; then echo ./cmd/daprd; else echo "github.com/dapr/dapr/cmd/$1"; fi; }
packages=()
for c in "${missing[@]}"; do packages+=("$(package_of "$c")"); done
# Loading every package the builds need downloads exactly their modules (`go mod download` would fetch
# only go.mod files and leave the ~430 module downloads to the first build); the log ends with their list.
download_modules() {
  go list -deps -tags stablecomponents -f '{{with .Module}}{{.Path}} {{.Version}}{{end}}' "${packages[@]}" | sort -u
}
phase "download Go modules for Dapr $DAPR_VERSION" download_modules
# Each patched module is built from a copy of it (src/patched/<module>) with its patch applied, through a
# `replace` in the build's own copy of go.mod (`go build -overlay` refuses files of the module cache). A patch
# written for another version of its module than the build uses stops the build.
apply_patches() {
  local p mod version have dir copy
  for p in "${patches[@]}"; do
    read -r mod version < <(awk '$1 == "module:" { print $2, $3; exit }' "$p") &&
      [[ -n $mod && -n $version ]] || { echo "$p: no 'module: PATH VERSION' line"; return 1; }
    have=$(go list -m -f '{{.Version}}' "$mod") && dir=$(go list -m -f '{{.Dir}}' "$mod") || return 1
    [[ $have == "$version" ]] ||
      { echo "$p is written for $mod $version, the build uses $have: port the patch or drop it"; return 1; }
    [[ -d $dir ]] || { echo "$mod $have is not in the module cache"; return 1; }
    copy=$src/patched/$mod
    [[ -d $copy ]] || { mkdir -p "$copy" && cp -r "$dir/." "$copy" && chmod -R u+w "$copy"; } || return 1
    patch -d "$copy" -p1 --forward --batch -i "$p" || { echo "$p does not apply to $mod $have"; return 1; }
    go mod edit -replace "$mod=./patched/$mod" || return 1
    echo "patched $mod $have with ${p##*/}"
  done
}
(( ${#patches[@]} == 0 )) ||
  phase "apply ${#patches[@]} patch(es) to Dapr $DAPR_VERSION (deploy/dapr/patches)" apply_patches
for c in "${missing[@]}"; do
  phase "build $c" go build -tags stablecomponents -trimpath -ldflags "$ldflags" -o "$prefix/bin.tmp/$c" \
    "$(package_of "$c")"
done
[[ " ${missing[*]} " != *" daprd "* ]] || echo "$recipe" >"$prefix/bin.tmp/RECIPE"
if (( ${#missing[@]} == ${#commands[@]} )); then
  rm -rf "$bin"
  mv "$prefix/bin.tmp" "$bin"
else
  # Each binary lands under its final name atomically (rename within one directory tree).
  for c in "${missing[@]}"; do mv "$prefix/bin.tmp/$c" "$bin/$c"; done
  [[ ! -f "$prefix/bin.tmp/RECIPE" ]] || mv "$prefix/bin.tmp/RECIPE" "$bin/RECIPE"
  rm -rf "$prefix/bin.tmp"
fi
built || fail "the daprd just built does not report version $DAPR_VERSION ($bin/daprd --version)"
echo "$bin"
