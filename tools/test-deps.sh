#!/usr/bin/env bash
# Installs the Debian packages that `make test` uses, when they are missing: redis-server (shared cache and render
# state tests), postgresql (the spend ledger's PostgreSQL tests start a throwaway cluster from its binaries),
# docker-compose (validates docker-compose.yml), and what builds the Go client offline and generates Java with buf
# (tests/e2e/test_go_client.py, tests/unit/test_codegen.py): Go, the protoc plugins, and Debian's Go modules for
# grpc and protobuf (protobuf 1.5, not the 1.3 that grpc's dependency would otherwise pick: 1.3 cannot read the
# generated messages), and Debian's Chromium with its chromedriver for the studio's browser test
# (tests/e2e/test_studio_browser.py, driven by selenium). The tests start their own servers on free loopback ports;
# nothing here starts a system service. Without apt-get (not Debian), it says what to install and fails.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
command -v docker-compose >/dev/null 2>&1 || missing+=(docker-compose)
command -v go >/dev/null 2>&1 || missing+=(golang-go)
command -v protoc-gen-go >/dev/null 2>&1 || missing+=(protoc-gen-go)
command -v protoc-gen-go-grpc >/dev/null 2>&1 || missing+=(protoc-gen-go-grpc)
command -v protoc >/dev/null 2>&1 || missing+=(protobuf-compiler)
command -v grpc_java_plugin >/dev/null 2>&1 || missing+=(protobuf-compiler-grpc-java-plugin)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
gocode=/usr/share/gocode/src
[[ -d $gocode/google.golang.org/grpc ]] || missing+=(golang-google-grpc-dev)
[[ -d $gocode/google.golang.org/protobuf ]] || missing+=(golang-google-protobuf-dev)
dpkg-query -W -f='${Status}' golang-github-golang-protobuf-1-5-dev 2>/dev/null | grep -q 'ok installed' ||
    missing+=(golang-github-golang-protobuf-1-5-dev)
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
