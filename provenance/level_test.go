package provenance_test

import (
	"errors"
	"github.com/attested-runner/attested-runner/attest"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// TestSoftwareTPMLevel: the BuildEnv level never rests on the evidence's
// own software-TPM label. The env is a software TPM the gate certified at
// level 0 (SoftwareTPM); "unlabelled" bundles are signed by whoever holds
// its state, with the label dropped from the response-time evidence.
func TestSoftwareTPMLevel(t *testing.T) {
	e := provenancetest.NewEnv(t)
	arts := map[string][]byte{"app.tar.gz": artifact}
	labelled := e.Sign(t, e.Build(arts))
	unlabelled := e.SignUnlabelled(t, e.Build(arts))
	withCert := func(sign func(testing.TB, *provenance.Build) []byte, edit func(*provenance.EnvCertificate)) []byte {
		b := e.Build(arts)
		b.EnvCert = e.Reissue(t, edit)
		return sign(t, b)
	}
	// Certified at level 0 without the software-TPM flag, and at level 2
	// with it: each shows one of the two certificate rules alone.
	level0Cert := withCert(e.SignUnlabelled, func(c *provenance.EnvCertificate) { c.Level, c.SoftwareTPM = 0, false })
	softwareL2Cert := withCert(e.SignUnlabelled, func(c *provenance.EnvCertificate) { c.Level, c.SoftwareTPM = 2, true })
	// A gate that took the environment for hardware, and evidence that
	// says software TPM: the label lowers the level (not an evidence error).
	hardwareCertLabelled := withCert(e.Sign, func(c *provenance.EnvCertificate) { c.Level, c.SoftwareTPM = 2, false })

	gate := func(insecure bool, minLevel int) provenance.VerifyOptions {
		o := e.Options()
		o.AllowSoftwareTPMInsecure, o.MinLevel = insecure, minLevel
		return o
	}
	// Evidence mode. The simulator's policy allows software TPMs;
	// hardwarePolicy is a consumer who enrolled the same AK as hardware.
	hardwarePolicy := *e.Machine.Policy
	hardwarePolicy.AllowSoftwareTPMUnsafe = false
	evidence := func(insecure bool, minLevel int, hardware bool) provenance.VerifyOptions {
		o := provenance.VerifyOptions{ExpectedRepository: e.Job.Repository, ReferenceValues: e.Machine.Policy,
			AllowSoftwareTPMInsecure: insecure, MinLevel: minLevel}
		if hardware {
			o.ReferenceValues = &hardwarePolicy
		}
		return o
	}

	tests := []struct {
		name      string
		bundle    []byte
		opts      provenance.VerifyOptions
		want      error  // nil: verifies
		wantLevel int    // when it verifies
		wantText  string // in the error
	}{
		// Gate mode.
		{name: "label dropped, certificate says software TPM", bundle: unlabelled, opts: gate(false, 0),
			want: provenance.ErrSoftwareTPM, wantText: "--insecure-allow-software-tpm"},
		{name: "label dropped, insecure mode", bundle: unlabelled, opts: gate(true, 0), wantLevel: 0},
		{name: "label dropped, insecure mode, explicit --min-level 2", bundle: unlabelled, opts: gate(true, 2),
			want: provenance.ErrSoftwareTPM, wantText: "not an explicit --min-level"},
		{name: "labelled, insecure mode, explicit --min-level 2", bundle: labelled, opts: gate(true, 2),
			want: provenance.ErrSoftwareTPM, wantText: "not an explicit --min-level"},
		{name: "labelled, insecure mode", bundle: labelled, opts: gate(true, 0), wantLevel: 0},
		{name: "labelled, no insecure mode", bundle: labelled, opts: gate(false, 0),
			want: provenance.ErrSoftwareTPM, wantText: "--insecure-allow-software-tpm"},
		{name: "certificate level 0 caps unlabelled evidence", bundle: level0Cert, opts: gate(true, 0),
			want: provenance.ErrLevelTooLow},
		{name: "certificate software flag, level 2, unlabelled evidence", bundle: softwareL2Cert, opts: gate(false, 0),
			want: provenance.ErrSoftwareTPM},
		{name: "hardware certificate, labelled evidence", bundle: hardwareCertLabelled, opts: gate(false, 0),
			want: provenance.ErrSoftwareTPM},
		{name: "hardware certificate, labelled evidence, insecure mode", bundle: hardwareCertLabelled, opts: gate(true, 0), wantLevel: 0},
		{name: "minimum level out of range", bundle: labelled, opts: gate(true, 4), want: provenance.ErrNoExpectation},
		{name: "negative minimum level", bundle: labelled, opts: gate(true, -1), want: provenance.ErrNoExpectation},

		// Evidence mode.
		{name: "evidence mode, label dropped, policy allows software TPMs", bundle: unlabelled, opts: evidence(false, 0, false),
			want: provenance.ErrSoftwareTPM, wantText: "--insecure-allow-software-tpm"},
		{name: "evidence mode, label dropped, insecure mode", bundle: unlabelled, opts: evidence(true, 0, false), wantLevel: 0},
		{name: "evidence mode, label dropped, insecure mode, explicit --min-level 2", bundle: unlabelled, opts: evidence(true, 2, false),
			want: provenance.ErrSoftwareTPM},
		{name: "evidence mode, labelled, consumer's policy says hardware", bundle: labelled, opts: evidence(false, 0, true),
			want: provenance.ErrSoftwareTPM, wantText: "--insecure-allow-software-tpm"},
		// The consumer enrolled this AK as hardware: its own policy decides.
		{name: "evidence mode, label dropped, consumer's policy says hardware", bundle: unlabelled, opts: evidence(false, 0, true), wantLevel: 2},
		{name: "evidence mode, hardware, --min-level 2", bundle: unlabelled, opts: evidence(false, 2, true), wantLevel: 2},
		{name: "evidence mode, hardware, --min-level 3", bundle: unlabelled, opts: evidence(false, 3, true), want: provenance.ErrLevelTooLow},
		// Level 3 is earned by a TEE report: a gate certificate that says
		// level 3 does not lift the TPM response-time evidence above 2.
		{name: "certificate claims level 3 for TPM evidence", bundle: withCert(e.SignUnlabelled, func(c *provenance.EnvCertificate) {
			c.Level, c.Hardware, c.SoftwareTPM, c.TDXCollateral = 3, attest.HardwareTDX, false, &attest.TDXCollateral{}
		}), opts: gate(false, 3), want: provenance.ErrLevelTooLow, wantText: "LEVEL_2 < SLSA_BUILDENV_LEVEL_3"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := provenance.Verify(tc.bundle, digest(artifact), tc.opts)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if r.Level != tc.wantLevel || r.SoftwareTPM != (tc.wantLevel == 0) {
					t.Fatalf("level %d, software TPM %v; want level %d", r.Level, r.SoftwareTPM, tc.wantLevel)
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if errors.Is(tc.want, provenance.ErrSoftwareTPM) && !errors.Is(err, provenance.ErrLevelTooLow) {
				t.Errorf("%v does not also wrap ErrLevelTooLow", err)
			}
			if errors.Is(err, provenance.ErrSoftwareTPM) != errors.Is(tc.want, provenance.ErrSoftwareTPM) {
				t.Errorf("%v: software TPM named wrongly", err)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("%q does not say %q", err, tc.wantText)
			}
			if n := len(r.Checks); n == 0 || r.Checks[n-1].OK {
				t.Errorf("last check should record the failure: %+v", r.Checks)
			}
		})
	}
}
