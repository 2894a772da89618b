#!/usr/bin/env bash
# Job side of attested-runner (action/attest/action.yml). Runs as the job's
# user; the agent does the hashing and signing.
set -euo pipefail
: "${INPUT_SUBJECT_PATH:?subject-path is required}"

agent="${ATTESTED_RUNNER_AGENT:-}"
socket="${ATTESTED_RUNNER_SOCKET:-}"
if [[ -z "$agent" || -z "$socket" || ! -x "$agent" || ! -S "$socket" ]]; then
  echo "::error::this job is not running on an attested runner (no attested-runner agent socket): use runs-on: [self-hosted, attested]" >&2
  exit 1
fi

args=(attest --socket "$socket" --subject-path "$INPUT_SUBJECT_PATH" --keyless "${INPUT_KEYLESS:-auto}")
if [[ -n "${INPUT_BUNDLE_PATH:-}" ]]; then
  args+=(--bundle-path "$INPUT_BUNDLE_PATH")
fi
cd "${GITHUB_WORKSPACE:-.}"
exec "$agent" "${args[@]}"
