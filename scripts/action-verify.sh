#!/usr/bin/env bash
# Runs attested-verify for the root action.yml. Inputs arrive as INPUT_*
# environment variables (never interpolated into the script).
set -euo pipefail
: "${ATTESTED_VERIFY:?}" "${INPUT_SUBJECT_PATH:?subject-path is required}"

fail() { echo "::error::$*" >&2; exit 1; }
bool() { # bool NAME VALUE: true or false, nothing else
  case "$2" in true|false) ;; *) fail "$1 must be true or false, not '$2'" ;; esac
}
bool evidence "${INPUT_EVIDENCE:=false}"
bool from-github "${INPUT_FROM_GITHUB:=false}"
case "${INPUT_FORMAT:=text}" in text|json) ;; *) fail "format must be text or json, not '$INPUT_FORMAT'" ;; esac
if [[ -z "${INPUT_REPOSITORY:-}" && -z "${INPUT_OWNER:-}" ]]; then
  fail "repository (owner/name) or owner is required: the action has no default, so that verifying another party's artifact never checks against this workflow's repository"
fi
if [[ "$INPUT_EVIDENCE" == false && -z "${INPUT_GATE_KEY:-}" ]]; then
  fail "gate-key is required (or evidence: true with reference-values)"
fi

# One pattern per line; no word splitting inside a line. globstar makes
# ** match any number of directories, none included; only regular files
# are subjects.
expand() { # expand PATTERN: the regular files it matches, into matches
  local IFS= m
  matches=()
  # Unquoted on purpose: pathname expansion, and with IFS empty no
  # word splitting.
  for m in $1; do
    [[ -f "$m" ]] && matches+=("$m")
  done
  return 0
}
shopt -s globstar nullglob
subjects=()
while IFS= read -r line; do
  line="${line#"${line%%[![:space:]]*}"}"; line="${line%"${line##*[![:space:]]}"}"
  [[ -z "$line" ]] && continue
  expand "$line"
  if [[ ${#matches[@]} -eq 0 ]]; then
    fail "subject-path '$line' matches no file"
  fi
  subjects+=("${matches[@]}")
done <<< "$INPUT_SUBJECT_PATH"
shopt -u globstar nullglob

args=(artifact "${subjects[@]}" --min-level "${INPUT_MIN_LEVEL:-2}" --format "$INPUT_FORMAT")
opt() { [[ -n "$2" ]] && args+=("$1" "$2"); return 0; }
opt --repo "${INPUT_REPOSITORY:-}"
opt --owner "${INPUT_OWNER:-}"
opt --gate-key "${INPUT_GATE_KEY:-}"
opt --trusted-root "${INPUT_TRUSTED_ROOT:-}"
if [[ "$INPUT_EVIDENCE" == true ]]; then
  args+=(--evidence)
  opt --reference-values "${INPUT_REFERENCE_VALUES:-}"
  opt --image-key "${INPUT_IMAGE_KEY:-}"
  opt --trusted-ak "${INPUT_TRUSTED_AK:-}"
fi
opt --bundle "${INPUT_BUNDLE_PATH:-}"
[[ "$INPUT_FROM_GITHUB" == true ]] && args+=(--from-github)
opt --ref "${INPUT_REF:-}"
opt --workflow "${INPUT_WORKFLOW:-}"
opt --commit "${INPUT_COMMIT:-}"
opt --run-id "${INPUT_RUN_ID:-}"
opt --builder-id "${INPUT_BUILDER_ID:-}"
opt --step-summary "${GITHUB_STEP_SUMMARY:-}"
vsa="${INPUT_VSA_PATH:-attested-verify.vsa.json}"
args+=(--vsa-out "$vsa")

export GH_TOKEN="${INPUT_GITHUB_TOKEN:-}"
if [[ "$INPUT_FORMAT" == json ]]; then
  report="${RUNNER_TEMP:-.}/attested-verify.report.json"
  rc=0
  "$ATTESTED_VERIFY" "${args[@]}" > "$report" || rc=$?
  cat "$report"
  [[ -n "${GITHUB_OUTPUT:-}" ]] && echo "report-path=$report" >> "$GITHUB_OUTPUT"
  [[ $rc -eq 0 ]] || exit "$rc"
else
  "$ATTESTED_VERIFY" "${args[@]}"
fi
if [[ -n "${GITHUB_OUTPUT:-}" ]]; then
  echo "vsa-path=$vsa" >> "$GITHUB_OUTPUT"
fi
