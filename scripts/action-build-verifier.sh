#!/usr/bin/env bash
# Builds attested-verify from the action's checked-out source (root action.yml).
set -euo pipefail
: "${GITHUB_ACTION_PATH:?not running as a GitHub action}"
: "${ATTESTED_VERIFY_OUT:?}"
if ! command -v go >/dev/null 2>&1; then
  echo "::error::attested-runner verify needs a Go toolchain to build the verifier from its source: add actions/setup-go before this step" >&2
  exit 1
fi
echo "Building attested-verify from $GITHUB_ACTION_PATH"
cd "$GITHUB_ACTION_PATH"
# GOTOOLCHAIN=auto fetches the Go version go.mod names if the runner's is older.
GOTOOLCHAIN=auto CGO_ENABLED=0 go build -trimpath -o "$ATTESTED_VERIFY_OUT" ./cmd/attested-verify
"$ATTESTED_VERIFY_OUT" --version
