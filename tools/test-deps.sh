#!/usr/bin/env bash
# Installs the Debian packages that `make test` uses, when they are missing: redis-server (shared cache and render
# state tests), postgresql (the spend ledger's PostgreSQL tests start a throwaway cluster from its binaries) and
# docker-compose (validates docker-compose.yml). The tests start their own servers on free loopback ports; nothing
# here starts a system service. Without apt-get (not Debian), it says what to install and fails.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
((${#missing[@]})) || exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "make test needs these packages: ${missing[*]}; install them with your package manager" >&2
    exit 1
fi
sudo=()
((EUID == 0)) || sudo=(sudo)
echo "installing Debian packages for the tests: ${missing[*]}"
timeout 600 "${sudo[@]}" apt-get update -qq
DEBIAN_FRONTEND=noninteractive timeout 900 "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
