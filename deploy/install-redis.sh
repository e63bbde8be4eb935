#!/usr/bin/env bash
# Make sure a redis-server binary from Debian's package is on this machine; print its path on stdout.
# Installing prints one line on stderr, apt's output goes to the install log (see lib.sh).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"

if ! command -v redis-server >/dev/null; then
  command -v apt-get >/dev/null || fail "redis-server is missing and there is no apt-get here: install Redis yourself"
  if [[ $(id -u) -ne 0 ]]; then
    command -v sudo >/dev/null || fail "redis-server is missing; installing it with apt-get needs root or sudo"
    apt_sudo=(sudo)
    if ! sudo -n true 2>/dev/null; then
      say "apt-get install redis-server needs sudo"
      sudo -v || fail "sudo refused; install redis-server yourself (apt-get install redis-server)"
    fi
  fi
  apt_install() { apt_get update && apt_get install -y redis-server; }
  phase "apt-get install redis-server" apt_install
fi
command -v redis-server || fail "redis-server is not on PATH ($PATH) even after apt-get install redis-server"
