# shellcheck shell=bash
# Sourced by deploy/install-*.sh: run each install step quietly, with one line per step on stderr.
#
#   phase "build daprd" go build ...
#
# prints `install: build daprd ... ` when the step starts and its elapsed time when it ends, and appends the
# command's full output to the install log (.taskfan/logs/install.log, or $RUN_DIR/logs/install.log; $TASKFAN_LOG
# names another file, as deploy/images/build.sh does; $TASKFAN_LOG_PREFIX replaces the word `install`).
# If the command fails, the line ends in FAILED, the log's path and the step's last 20 lines of output
# follow, and the script exits with the command's status.
#
# errexit does not apply inside a step (bash ignores `set -e` in a function run as a condition), so a
# step that is a shell function must chain its commands with &&.

install_log=${TASKFAN_LOG:-${RUN_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.taskfan}/logs/install.log}
log_prefix=${TASKFAN_LOG_PREFIX:-install}
_phase_open=
trap '[[ -z $_phase_open ]] || echo "interrupted; output in $install_log" >&2' EXIT

say() { echo "$log_prefix: $*" >&2; }

fail() { say "$*"; exit 1; }

duration() {
  if (( $1 < 60 )); then echo "$1s"; else printf '%dm%02ds\n' $(($1 / 60)) $(($1 % 60)); fi
}

phase() {
  local what=$1 start=$SECONDS first=0 rc=0
  shift
  mkdir -p "${install_log%/*}"
  [[ ! -f $install_log ]] || first=$(wc -l <"$install_log")
  printf '\n== %s  %s\n$ %s\n' "$(date '+%F %T')" "$what" "$*" >>"$install_log"
  printf '%s: %s ... ' "$log_prefix" "$what" >&2
  _phase_open=1
  "$@" >>"$install_log" 2>&1 </dev/null || rc=$?
  _phase_open=
  if (( rc == 0 )); then
    duration $((SECONDS - start)) >&2
    return 0
  fi
  echo "FAILED after $(duration $((SECONDS - start))) (exit status $rc)" >&2
  say "full output in $install_log; the step's last lines:"
  tail -n +"$((first + 2))" "$install_log" | tail -n 20 | sed 's/^/  | /' >&2
  exit "$rc"
}

# The per-machine cache every clone shares (built runtimes, images), keyed by version below it.
cache_root=${TASKFAN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskfan}

# build_lock FILE WHAT: one clone builds into the cache at a time; another one waits, and says so. The lock
# is held on file descriptor 9 until the script exits.
build_lock() {
  exec 9>"$1"
  flock -n 9 || { say "another clone is building $2; waiting for its lock ($1)"; flock 9; }
}

# apt_get ARGS...: apt-get, non-interactive; another apt-get running (a clone installing redis-server, the
# background build of `make test`) is waited for, up to 10 min, instead of failing on its lock. As root, or
# through sudo when $apt_sudo is (sudo): `env` because sudo drops DEBIAN_FRONTEND from the environment.
apt_sudo=()
apt_get() {
  local try
  for try in {1..120}; do
    "${apt_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 "$@" && return 0
    pgrep -x 'apt-get|dpkg' >/dev/null || return 1  # a real failure, not a held lock
    echo "apt-get $1: waiting for another apt-get to finish ($try)"
    sleep 5
  done
  return 1
}

# required_version GO_MOD MODULE: the version (without its v) a wrapper module's go.mod requires of MODULE.
required_version() {
  local version
  version=$(awk -v m="$2" '$1 == "require" && $2 == m { sub(/^v/, "", $3); print $3 }' "$1")
  [[ -n $version ]] || fail "no 'require $2 vX' line in $1"
  echo "$version"
}

# build_go_command WRAPPER NAME MODULE PACKAGE WHAT ESTIMATE: build one Go command from a wrapper module of this
# folder (deploy/WRAPPER: go.mod requiring MODULE, go.sum, tools.go) into the per-machine cache, once:
# $cache_root/WRAPPER/<MODULE's version>/bin/NAME. Like install-dapr.sh: keyed by version, so every clone reuses
# one build; a lock keeps two clones from building at once; one line per step on stderr, go's output in the
# install log, nothing on stderr when it is built. Prints the bin directory on stdout.
build_go_command() {
  local wrapper=$1 name=$2 module=$3 package=$4 what=$5 estimate=$6 deploy version prefix bin src
  deploy=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  version=$(required_version "$deploy/$wrapper/go.mod" "$module")
  prefix="$cache_root/$wrapper/$version"
  bin="$prefix/bin"
  if [[ -x $bin/$name ]]; then echo "$bin"; return 0; fi
  # TASKFAN_CHECK_ONLY=1: only tell whether it is built (exit 3: not yet), build nothing.
  [[ ${TASKFAN_CHECK_ONLY:-} == 1 ]] && return 3
  command -v go >/dev/null || fail "Go >= 1.26 is required to build $what (README, Requirements)"
  mkdir -p "$bin"
  build_lock "$prefix/.lock" "$what $version"
  if [[ -x $bin/$name ]]; then echo "$bin"; return 0; fi
  src="$prefix/src"
  rm -rf "$src" && mkdir -p "$src"
  cp "$deploy/$wrapper/go.mod" "$deploy/$wrapper/go.sum" "$deploy/$wrapper/tools.go" "$src/"
  # sum.golang.org is not reachable here; the committed go.sum pins every module hash instead.
  export GOSUMDB=off GOFLAGS=-mod=mod CGO_ENABLED=0
  say "building $what $version into $bin, once per machine ($estimate); output in $install_log"
  cd "$src"
  _modules_of() { go list -deps -f '{{with .Module}}{{.Path}} {{.Version}}{{end}}' "$package" | sort -u; }
  phase "download Go modules for $what $version" _modules_of
  phase "build $name" go build -trimpath -ldflags "-s -w" -o "$prefix/$name.tmp" "$package"
  mv "$prefix/$name.tmp" "$bin/$name"
  cd "$deploy" && rm -rf "$src"
  echo "$bin"
}
