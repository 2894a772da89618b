#!/usr/bin/env bash
# make mutate: mutation testing of the security checks (not part of .ci/run:
# it takes an hour or more on 2 cores).
#
#  1. gremlins (github.com/go-gremlins/gremlins, pinned below) inverts and
#     shifts the conditions of the scoped files, running each package's own
#     tests per mutant;
#  2. scripts/mutate removes each guard clause (an `if` that returns an
#     error) one at a time and runs the tests that must notice.
#
# Scope: the verifiers and the trust boundaries. Output: mutate-report.txt
# (every mutant and its status) and a summary on stdout. Exit status 1 if
# any mutant of the removal pass lived (gremlins' own LIVED mutants are
# listed, to be reviewed: some are equivalent mutants).
set -uo pipefail
cd "$(dirname "$0")/.."

GREMLINS_VERSION=v0.6.0
gobin=$(go env GOPATH)/bin
if ! go version -m "$gobin/gremlins" 2>/dev/null | grep -qE "^\s+mod\s+github.com/go-gremlins/gremlins\s+$GREMLINS_VERSION\b"; then
  echo "==> installing gremlins $GREMLINS_VERSION"
  go install "github.com/go-gremlins/gremlins/cmd/gremlins@$GREMLINS_VERSION" || exit 2
fi

# package : files in scope : test packages that must kill the mutants
scope=(
  "attest:verify.go verify_tpm.go verify_tdx.go verify_snp.go tdx_collateral.go ek.go akpublic.go aksig.go azure.go policy.go cel.go:./attest/"
  "provenance:verify.go envcert.go dispatch.go image.go launch.go keyless.go keylesssign.go dsse.go:./provenance/ ./cmd/attested-verify/"
  "jobgate:server.go activation.go:./jobgate/"
  "jobgate/fleet:webhook.go image.go fleet.go reconcile.go config.go:./jobgate/fleet/"
  "jobgate/gateapi:api.go:./jobgate/gateapi/ ./runner/"
  "runner:socket.go jobs.go subject.go workerlog.go:./runner/"
)
report=${MUTATE_REPORT:-mutate-report.txt}
: >"$report"
status=0
for entry in "${scope[@]}"; do
  IFS=: read -r pkg files tests <<<"$entry"
  # MUTATE_ONLY=pkg[,pkg]: one package's mutants (while killing survivors).
  if [[ -n "${MUTATE_ONLY:-}" && ",$MUTATE_ONLY," != *",$pkg,"* ]]; then continue; fi
  excludes=(-E '/' -E '_test\.go$')
  for f in $(cd "$pkg" && ls *.go); do
    case " $files " in *" $f "*) ;; *) excludes+=(-E "^${f//./\\.}\$") ;; esac
  done
  echo "==> gremlins: $pkg ($files)" | tee -a "$report"
  "$gobin/gremlins" unleash --workers "${MUTATE_WORKERS:-1}" --invert-logical --timeout-coefficient 4 "${excludes[@]}" "./$pkg" 2>&1 \
    | grep -E '^\s*(KILLED|LIVED|TIMED OUT|NOT COVERED|NOT VIABLE)|Killed:|Efficacy|coverage' | tee -a "$report"
  echo "==> check removal: $pkg" | tee -a "$report"
  paths=()
  for f in $files; do paths+=("$pkg/$f"); done
  go run ./scripts/mutate -timeout 90s -tests "$tests" "${paths[@]}" 2>&1 | tee -a "$report" || status=1
done
echo
echo "==> summary ($report)"
grep -E 'Killed:|Efficacy|check removal:' "$report"
echo "lived:"
grep -E '^\s*LIVED' "$report" || echo "  none"
exit $status
