#!/usr/bin/env bash
# The local demo (make demo): the whole attested-runner flow on this machine,
# narrated: a fake GitHub and the gate, a machine booting on a software TPM
# (swtpm), admission, a job that builds and attests an artifact, teardown,
# and a consumer verifying the artifact (and rejecting a tampered copy).
#
# Needs: go, swtpm (scripts/prereqs.sh installs it). Under make (make demo)
# it uses the binaries `make build` just put in bin/; run directly, it
# (re)builds them there first. Either way it builds the fake Runner.Listener
# and the demo program next to them. Everything the demo creates goes to
# /tmp/attested-runner-demo-<uid>/ (replaced at each run; the unprivileged
# runner user must reach it, so it is not in the checkout, which may be
# under a private home directory).
# Usage: scripts/demo.sh [--out DIR]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v swtpm >/dev/null 2>&1; then
  echo "demo: swtpm is not installed (Debian/Ubuntu package \"swtpm\"): run scripts/prereqs.sh" >&2
  exit 1
fi
if ! command -v go >/dev/null 2>&1; then
  if [[ -x /usr/local/go/bin/go ]]; then
    export PATH="$PATH:/usr/local/go/bin"
  else
    echo "demo: the go command is not in PATH" >&2
    exit 1
  fi
fi

mkdir -p bin
export CGO_ENABLED=0
products=(./cmd/attested-runner ./cmd/jobgate ./cmd/attested-verify)
if [[ -z "${MAKELEVEL:-}" ]]; then
  echo "==> building ${products[*]} into bin/"
  go build -trimpath -o bin/ "${products[@]}"
else
  for b in attested-runner jobgate attested-verify; do
    [[ -x "bin/$b" ]] || { echo "demo: bin/$b is missing: run make build" >&2; exit 1; }
  done
fi
echo "==> building the fake Runner.Listener, the hostile client and the demo into bin/"
go build -trimpath -o bin/ ./e2e/cmd/fake-runner-listener ./e2e/cmd/hostile-client ./e2e/cmd/demo

exec bin/demo --bin bin "$@"
