#!/usr/bin/env bash
# go-install-module.sh MODULE VERSION PACKAGE OUT: builds PACKAGE (relative
# to the module root) of MODULE@VERSION with the module's own go.mod and
# go.sum, as `go install MODULE/PACKAGE@VERSION` would. Used where that
# shorter form is refused because the module proxy will not list the
# module's versions (go install looks up deprecations in that list; the
# exact version itself is served).
set -euo pipefail
if [ $# -ne 4 ]; then
	echo "usage: $0 MODULE VERSION PACKAGE OUT" >&2
	exit 2
fi
module=$1 version=$2 pkg=$3 out=$4
echo "building $module@$version $pkg (a few minutes on 2 cores)" >&2
dir=$(go mod download -json "$module@$version" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [ -z "$dir" ] || [ ! -f "$dir/go.mod" ]; then
	echo "$0: go mod download $module@$version gave no module directory" >&2
	exit 1
fi
mkdir -p "$(dirname "$out")"
(cd "$dir" && GOFLAGS=-mod=readonly CGO_ENABLED=0 go build -trimpath -o "$out" "$pkg")
echo "installed $out" >&2
