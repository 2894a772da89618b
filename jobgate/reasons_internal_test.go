package jobgate

import (
	"fmt"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
)

// TestEvidenceReasons: every attest refusal the gate names gets its own
// audit code, also when wrapped as Verify wraps it, so that no refusal is
// reported as another (e.g. an Azure HCL report naming another AK as a
// malformed one); an unknown error is "evidence_rejected".
func TestEvidenceReasons(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range evidenceReasons {
		if seen[r.code] {
			t.Errorf("code %s given twice", r.code)
		}
		seen[r.code] = true
		if got := evidenceError(fmt.Errorf("step: %w: detail", r.err)); got.code != r.code {
			t.Errorf("%v: code %s, want %s", r.err, got.code, r.code)
		}
	}
	for err, code := range map[error]string{attest.ErrAKNotBound: "hcl_ak_not_bound", attest.ErrAzureHCL: "azure_hcl", fmt.Errorf("other"): "evidence_rejected"} {
		if got := evidenceError(err); got.code != code {
			t.Errorf("%v: code %s, want %s", err, got.code, code)
		}
	}
}
