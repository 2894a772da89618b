#!/usr/bin/env bash
# Provides attested-verify for the root action.yml, from this action's own
# ref: a published release binary whose SHA-256 is pinned in this tree
# (action/verifier.sha256, written by `make release-verifier` before the
# tag), else a build of this source with the Go caches keyed on go.sum.
#
#   plan     decide (outputs mode=prebuilt|build, cache-key, gomodcache, gocache)
#   install  download and check, or build, into $ATTESTED_VERIFY_OUT
set -euo pipefail
: "${GITHUB_ACTION_PATH:?not running as a GitHub action}"
: "${ATTESTED_VERIFY_OUT:?}"

out() { if [[ -n "${GITHUB_OUTPUT:-}" ]]; then echo "$1=$2" >> "$GITHUB_OUTPUT"; fi; }
os="$(uname -s | tr '[:upper:]' '[:lower:]')"
case "$(uname -m)" in
  x86_64|amd64) arch=amd64 ;;
  aarch64|arm64) arch=arm64 ;;
  *) arch="$(uname -m)" ;;
esac
asset="attested-verify-$os-$arch"
sums="$GITHUB_ACTION_PATH/action/verifier.sha256"

# pinned: the SHA-256 this tree pins for this platform's binary ("" if none).
pinned() {
  [[ -f "$sums" ]] || return 0
  awk -v a="$asset" '$2 == a && length($1) == 64 && $1 ~ /^[0-9a-f]+$/ { print $1; exit }' "$sums"
}

build() {
  if ! command -v go >/dev/null 2>&1; then
    echo "::error::attested-runner verify publishes no binary for this ref and platform ($asset), and there is no Go toolchain to build it: add actions/setup-go before this step" >&2
    exit 1
  fi
  echo "Building attested-verify from $GITHUB_ACTION_PATH"
  local start=$SECONDS
  # GOTOOLCHAIN=auto fetches the Go version go.mod names if the runner's is older.
  (cd "$GITHUB_ACTION_PATH" && GOTOOLCHAIN=auto CGO_ENABLED=0 GOFLAGS=-mod=readonly go build -trimpath -o "$ATTESTED_VERIFY_OUT" ./cmd/attested-verify)
  echo "attested-verify built in $((SECONDS - start)) s"
}

case "${1:-}" in
plan)
  if [[ -n "$(pinned)" && -n "${GITHUB_ACTION_REPOSITORY:-}" && -n "${GITHUB_ACTION_REF:-}" ]]; then
    out mode prebuilt
  else
    out mode build
  fi
  base="${RUNNER_TEMP:-/tmp}/attested-verify-go"
  out gomodcache "$base/mod"
  out gocache "$base/build"
  sum="$(sha256sum "$GITHUB_ACTION_PATH/go.sum" | cut -c1-16)"
  goversion="$(go env GOVERSION 2>/dev/null || echo nogo)"
  out cache-key "attested-verify-$os-$arch-$goversion-$sum"
  ;;
install)
  want="$(pinned)"
  if [[ "${ATTESTED_VERIFY_MODE:-build}" == prebuilt && -n "$want" ]]; then
    url="${GITHUB_SERVER_URL:-https://github.com}/$GITHUB_ACTION_REPOSITORY/releases/download/$GITHUB_ACTION_REF/$asset"
    tmp="$ATTESTED_VERIFY_OUT.download"
    if curl -fsSL --retry 3 --max-time 120 --max-filesize 134217728 -o "$tmp" "$url"; then
      got="$(sha256sum "$tmp" | cut -d' ' -f1)"
      if [[ "$got" != "$want" ]]; then
        rm -f "$tmp"
        # Fail closed: a binary other than the pinned one is an attack or
        # a broken release, never something to run or silently replace.
        echo "::error::$url has SHA-256 $got, but this action's ref pins $want (action/verifier.sha256): refusing it" >&2
        exit 1
      fi
      chmod 0755 "$tmp"
      mv -f "$tmp" "$ATTESTED_VERIFY_OUT"
      echo "attested-verify $asset downloaded, SHA-256 $got as pinned"
    else
      rm -f "$tmp"
      echo "::warning::could not download $url: building attested-verify from this action's source instead"
      build
    fi
  else
    build
  fi
  "$ATTESTED_VERIFY_OUT" --version
  ;;
*)
  echo "usage: $0 plan|install" >&2
  exit 2
  ;;
esac
