#!/usr/bin/env bash
# Make sure a redis-server binary from Debian's package is on this machine; print its path.
set -euo pipefail
if ! command -v redis-server >/dev/null; then
  echo "install-redis: installing Debian's redis-server package" >&2
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >&2
fi
command -v redis-server
