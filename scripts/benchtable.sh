#!/usr/bin/env bash
# Formats `go test -bench` output (stdin) as a table: package, benchmark,
# ns/op and every custom metric (x-<name> metrics are ratios to a baseline
# measured in the same process: see internal/benchratio).
set -euo pipefail
awk '
/^pkg: / { pkg = $2; sub(/.*attested-runner\//, "", pkg); next }
/^Benchmark/ {
  name = $1; sub(/-[0-9]+$/, "", name)
  line = sprintf("%-22s %-44s", pkg, name)
  for (i = 3; i < NF; i += 2) line = line sprintf("  %s %s", $i, $(i+1))
  print line
}
/^(FAIL|--- FAIL)/ { print; failed = 1 }
END { exit failed }
'
