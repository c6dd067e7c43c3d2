#!/usr/bin/env bash
# Builds scenecast-go with no network: generates the contract's Go code with buf and Debian's protoc-gen-go and
# protoc-gen-go-grpc, and takes the Go modules from Debian's packages (/usr/share/gocode/src, from
# golang-google-grpc-dev and golang-google-protobuf-dev) as a vendor folder instead of the module proxy.
# Everything happens in a temporary copy, so the checkout is left as it was.
# Usage: clients/go/build-offline.sh OUTPUT_BINARY   (uses the usual GOCACHE; set it to keep the cache elsewhere)
set -euo pipefail
out=$(realpath -m "${1:?usage: build-offline.sh OUTPUT_BINARY}")
client=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$client/../.." && pwd)
gocode=/usr/share/gocode/src
[[ -d $gocode/google.golang.org/grpc ]] || { echo "install golang-google-grpc-dev and golang-google-protobuf-dev" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# buf.gen.yaml writes Go into clients/go/gen (and Java and TypeScript beside it), here under the temporary folder.
(cd "$root" && node_modules/.bin/buf generate --output "$work")
cp "$client/go.mod" "$client"/*.go "$work/clients/go/"

# -mod=vendor reads packages from vendor/ and checks only that vendor/modules.txt lists go.mod's requirements; the
# code there is Debian's version of each module, which go.mod's minimum versions are chosen to match.
vendor=$work/clients/go/vendor
mkdir "$vendor"
for host in "$gocode"/*; do ln -s "$host" "$vendor/"; done
awk '/^require \($/ { inside = 1; next } inside && /^\)$/ { inside = 0 } inside && NF >= 2 { print "# " $1 " " $2 "\n## explicit" }' \
    "$client/go.mod" > "$vendor/modules.txt"

cd "$work/clients/go"
GOFLAGS=-mod=vendor GOPROXY=off go build -trimpath -o "$out" .
