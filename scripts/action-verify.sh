#!/usr/bin/env bash
# Runs attested-verify for the root action.yml. Inputs arrive as INPUT_*
# environment variables (never interpolated into the script).
set -euo pipefail
: "${ATTESTED_VERIFY:?}" "${INPUT_SUBJECT_PATH:?subject-path is required}" "${INPUT_GATE_KEY:?gate-key is required}"
: "${INPUT_REPOSITORY:?repository is required}"

subjects=()
while IFS= read -r line; do
  line="${line#"${line%%[![:space:]]*}"}"; line="${line%"${line##*[![:space:]]}"}"
  [[ -z "$line" ]] && continue
  # Expand the glob deliberately (one pattern per line; no word splitting
  # inside a line).
  shopt -s nullglob
  IFS=$'\n' read -r -d '' -a matches < <(compgen -G "$line" && printf '\0') || true
  shopt -u nullglob
  if [[ ${#matches[@]} -eq 0 ]]; then
    echo "::error::subject-path '$line' matches no file" >&2
    exit 1
  fi
  subjects+=("${matches[@]}")
done <<< "$INPUT_SUBJECT_PATH"

args=(artifact "${subjects[@]}" --gate-key "$INPUT_GATE_KEY" --repo "$INPUT_REPOSITORY" --min-level "${INPUT_MIN_LEVEL:-2}")
[[ -n "${INPUT_TRUSTED_ROOT:-}" ]] && args+=(--trusted-root "$INPUT_TRUSTED_ROOT")
[[ -n "${INPUT_BUNDLE_PATH:-}" ]] && args+=(--bundle "$INPUT_BUNDLE_PATH")
[[ -n "${INPUT_REF:-}" ]] && args+=(--ref "$INPUT_REF")
[[ -n "${INPUT_WORKFLOW:-}" ]] && args+=(--workflow "$INPUT_WORKFLOW")
[[ -n "${INPUT_COMMIT:-}" ]] && args+=(--commit "$INPUT_COMMIT")
[[ -n "${INPUT_BUILDER_ID:-}" ]] && args+=(--builder-id "$INPUT_BUILDER_ID")
[[ -n "${GITHUB_STEP_SUMMARY:-}" ]] && args+=(--step-summary "$GITHUB_STEP_SUMMARY")
vsa="${INPUT_VSA_PATH:-attested-verify.vsa.json}"
args+=(--vsa-out "$vsa")

"$ATTESTED_VERIFY" "${args[@]}"
if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
  echo "vsa-path=$vsa" >> "$GITHUB_OUTPUT"
fi
