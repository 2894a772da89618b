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
upload="${INPUT_UPLOAD:-auto}"
case "$upload" in
  auto|true|false) ;;
  *) echo "::error::upload must be auto, true or false, not '$upload'" >&2; exit 1 ;;
esac
cd "${GITHUB_WORKSPACE:-.}"
out="$("$agent" "${args[@]}")" || { rc=$?; printf '%s\n' "$out"; exit "$rc"; }
printf '%s\n' "$out"
[[ "$upload" == false ]] && exit 0
if [[ -z "${INPUT_GITHUB_TOKEN:-}" ]]; then
  if [[ "$upload" == true ]]; then
    echo "::error::upload: true needs a github-token" >&2
    exit 1
  fi
  echo "attestation not stored on GitHub: no github-token"
  exit 0
fi
# "bundle PATH (how it was signed)": the path, without the note.
bundle="$(sed -n 's/^bundle \(.*\) ([^()]*)$/\1/p' <<< "$out" | tail -n 1)"
if [[ -z "$bundle" ]]; then
  echo "::error::upload: the agent named no bundle" >&2
  exit 1
fi
up=(upload --bundle "$bundle")
[[ "$upload" == auto ]] && up+=(--if-permitted)
GITHUB_TOKEN="$INPUT_GITHUB_TOKEN" exec "$agent" "${up[@]}"
