package jobgate_test

import (
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/attested-runner/attested-runner/jobgate"
)

// TestLoadPolicyEKTrust: policy.trustedEKRoots, ekCRLs and trustBundles
// load into the policy's EK and AK trust, change its digest, and a CRL no
// configured CA signed, an unknown bundle or CRLs without roots are
// refused.
func TestLoadPolicyEKTrust(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rv, _ := json.Marshal(attest.ReferenceValues{Format: attest.ReferenceValuesFormat,
		Images:       []attest.Image{{ID: "img", PCRs: map[uint32]attest.Hex{4: make([]byte, 32)}}},
		AgentDigests: []attest.Hex{make([]byte, 32)}})
	rvFile := write("rv.json", rv)
	ca, _ := ekca.New("fleet")
	other, _ := ekca.New("other")
	root := write("ek-root.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}))
	crlDER, err := ca.CRL(time.Now().Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	crl := write("ek.crl", crlDER)
	otherCRLDER, _ := other.CRL(time.Now().Add(time.Hour))
	otherCRL := write("other.crl", otherCRLDER)
	load := func(pc jobgate.PolicyConfig) (*attest.Policy, string, error) {
		pc.ReferenceValues = []string{rvFile}
		c := &jobgate.Config{Policy: pc}
		return c.LoadPolicy()
	}
	_, plain, err := load(jobgate.PolicyConfig{})
	if err != nil {
		t.Fatal(err)
	}
	p, withEK, err := load(jobgate.PolicyConfig{TrustedEKRoots: []string{root}, EKCRLs: []string{crl}})
	if err != nil {
		t.Fatal(err)
	}
	if p.TrustedEKs.Empty() || !p.TrustedEKs.Roots[0].Equal(ca.Cert) || len(p.TrustedEKs.CRLs) != 1 || withEK == plain {
		t.Fatalf("EK trust %+v, digest %s (without %s)", p.TrustedEKs, withEK, plain)
	}
	p, withGCE, err := load(jobgate.PolicyConfig{TrustBundles: []string{"gce"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.TrustedAKRoots) != 2 || len(p.TrustedAKIntermediates) != 3 || len(p.TrustedEKs.Roots) != 2 || withGCE == plain {
		t.Fatalf("gce bundle: %d AK roots, %d intermediates, EK %+v", len(p.TrustedAKRoots), len(p.TrustedAKIntermediates), p.TrustedEKs)
	}
	p, _, err = load(jobgate.PolicyConfig{TrustedAKRoots: []string{root}, AKIntermediates: []string{root}})
	if err != nil || len(p.TrustedAKIntermediates) != 1 {
		t.Fatalf("AK intermediates: %+v, %v", p, err)
	}
	for _, tc := range []struct {
		name string
		pc   jobgate.PolicyConfig
		want string
	}{
		{"CRL of an unconfigured CA", jobgate.PolicyConfig{TrustedEKRoots: []string{root}, EKCRLs: []string{otherCRL}}, "not signed by any configured"},
		{"unknown bundle", jobgate.PolicyConfig{TrustBundles: []string{"azure"}}, "unknown trust bundle"},
		{"EK root file missing", jobgate.PolicyConfig{TrustedEKRoots: []string{filepath.Join(dir, "nope.pem")}}, "trustedEKRoots"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := load(tc.pc); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	c := &jobgate.Config{Policy: jobgate.PolicyConfig{EKCRLs: []string{crl}}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "need policy.trustedEKRoots") {
		t.Fatalf("CRLs without roots: %v", err)
	}
	c = &jobgate.Config{Policy: jobgate.PolicyConfig{AKIntermediates: []string{root}}}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "akIntermediates needs policy.trustedAKRoots") {
		t.Fatalf("AK intermediates without roots: %v", err)
	}
}
