package attest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/verify/trust"
)

// snpVTPM is a simulated TPM serving an SEV-SNP VM whose secure processor
// is an attesttest.SNPHost, booted as the agent boots it.
func snpVTPM(t *testing.T, host *attesttest.SNPHost) (*attest.TPMCollector, *attest.Policy) {
	t.Helper()
	c, p := attesttest.SimulatedSNPTPM(t, host)
	if err := attesttest.BootAgent(c); err != nil {
		t.Fatal(err)
	}
	return c, p
}

// snpCase is one case of an SEV-SNP vTPM table: host changes the secure
// processor, edit the policy, evidence the collected evidence; want (and
// msg) the refusal, else wantLevel.
type snpCase struct {
	name      string
	host      func(*attesttest.SNPHost)
	edit      func(*attest.Policy)
	evidence  func(*attest.Evidence, *attesttest.SNPHost)
	want      error
	msg       string
	wantLevel int
}

// snpReportCases are what every SEV-SNP report must satisfy, whatever
// binds it to the vTPM: AMD's signature and chain, the guest policy (debug,
// migration agent, SMT as allowed), the TCB minimum, a listed launch
// measurement; and the software-TPM label still wins.
var snpReportCases = []snpCase{
	{name: "SMT allowed by the guest and by the policy", host: func(h *attesttest.SNPHost) { h.GuestPolicy |= attesttest.SNPPolicySMT },
		edit: func(p *attest.Policy) { p.SNP.AllowSMT = true }, wantLevel: 3},
	{name: "report signature broken", host: func(h *attesttest.SNPHost) { h.Tamper = func(r []byte) { r[0x90] ^= 1 } }, want: attest.ErrSNPReport},
	{name: "chain not AMD's", edit: func(p *attest.Policy) { p.SNP.TrustedRoots = nil }, want: attest.ErrSNPReport},
	{name: "debug on", host: func(h *attesttest.SNPHost) { h.GuestPolicy |= attesttest.SNPPolicyDebug }, want: attest.ErrSNPDebug},
	{name: "migration agent", host: func(h *attesttest.SNPHost) { h.GuestPolicy |= attesttest.SNPPolicyMA }, want: attest.ErrSNPPolicy},
	{name: "SMT not accepted", host: func(h *attesttest.SNPHost) { h.GuestPolicy |= attesttest.SNPPolicySMT },
		edit: func(p *attest.Policy) { p.SNP.AllowSMT = false }, want: attest.ErrSNPPolicy, msg: "SMT"},
	{name: "TCB below the minimum", edit: func(p *attest.Policy) { p.SNP.MinimumTCB.SNP = 1 }, want: attest.ErrSNPTCB},
	{name: "launch measurement not listed", edit: func(p *attest.Policy) { p.Reference.Images[0].SNPMeasurements = []attest.Hex{make([]byte, 48)} },
		want: attest.ErrReferenceMismatch, msg: "MEASUREMENT"},
	{name: "image lists no SEV-SNP measurement", edit: func(p *attest.Policy) { p.Reference.Images[0].SNPMeasurements = nil },
		want: attest.ErrReferenceMismatch, msg: "lists no snpMeasurements"},
	{name: "labelled software TPM: refused", evidence: func(e *attest.Evidence, _ *attesttest.SNPHost) { e.SoftwareTPMUnsafe = true }, want: attest.ErrSoftwareTPM},
	{name: "labelled software TPM, allowed: level 0", evidence: func(e *attest.Evidence, _ *attesttest.SNPHost) { e.SoftwareTPMUnsafe = true },
		edit: func(p *attest.Policy) { p.AllowSoftwareTPMUnsafe = true }, wantLevel: 0},
}

// runSNPCases runs cases on the vTPM open builds around each case's host:
// evidence for ch through the wire format, verified; at level 3 the
// claims must name hardware sev-snp, binding and the host's measurement.
func runSNPCases(t *testing.T, ch attest.Challenge, open func(testing.TB, *attesttest.SNPHost) (*attest.TPMCollector, *attest.Policy), binding string, cases []snpCase) {
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			host := attesttest.NewSNPHost(t)
			if tc.host != nil {
				tc.host(host)
			}
			c, p := open(t, host)
			if err := attesttest.BootAgent(c); err != nil {
				t.Fatal(err)
			}
			if tc.edit != nil {
				tc.edit(p)
			}
			var edit func(*attest.Evidence)
			if tc.evidence != nil {
				edit = func(e *attest.Evidence) { tc.evidence(e, host) }
			}
			claims, err := verifyCollected(t, c, ch, p, edit)
			if refusedAs(t, err, tc.want, tc.msg) {
				return
			}
			if claims.Level != tc.wantLevel {
				t.Errorf("level %d, want %d", claims.Level, tc.wantLevel)
			}
			switch {
			case tc.wantLevel == 2 && (claims.Hardware != attest.HardwareTPM || claims.SNP != nil):
				t.Errorf("without a report: hardware %q, SNP %+v", claims.Hardware, claims.SNP)
			case tc.wantLevel == 3 && (claims.Hardware != attest.HardwareSEVSNP || claims.SNP == nil ||
				claims.SNP.Binding != binding || !bytes.Equal(claims.SNP.Measurement, host.Measurement)):
				t.Errorf("level 3: hardware %q, SNP %+v", claims.Hardware, claims.SNP)
			}
		})
	}
}

// TestSNPVTPMLevel3: TPM evidence with an SEV-SNP report that binds the
// challenge, both keys and the quote's AK, from a launch measurement the
// image lists, is level 3 from hardware "sev-snp" with binding
// "report-data" (BuildEnv L3.hw-quote). Each way the report can fail
// refuses the evidence with its own error (snpReportCases, and the
// binding's own: another AK, another challenge); without a report the
// same TPM is level 2; labelled a software TPM, 0. The secure processor
// is go-sev-guest's test-only chain (no SEV-SNP hardware here).
func TestSNPVTPMLevel3(t *testing.T) {
	ch := attest.AdmissionChallenge(bytes.Repeat([]byte{7}, 32))
	otherAK, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherAKSPKI, _ := x509.MarshalPKIXPublicKey(otherAK.Public())
	runSNPCases(t, ch, attesttest.SimulatedSNPTPM, attest.SNPBindingReportData, append([]snpCase{
		{name: "report binds this attestation", wantLevel: 3},
		{name: "no report: level 2", evidence: func(e *attest.Evidence, _ *attesttest.SNPHost) { e.TPM.SNP = nil }, wantLevel: 2},
		{name: "AK not the one the report binds", evidence: func(e *attest.Evidence, h *attesttest.SNPHost) {
			// What a guest that is not this vTPM's would send: everything
			// bound but another AK.
			raw, err := h.Report(ch.SNPReportData(e.EnvKey, e.HPKEPublicKey, otherAKSPKI))
			if err != nil {
				t.Fatal(err)
			}
			e.TPM.SNP.Report = raw
		}, want: attest.ErrNonceMismatch, msg: "REPORT_DATA"},
		{name: "report of another challenge", host: func(h *attesttest.SNPHost) { h.Edit = func(r []byte) { r[0x50] ^= 1 } }, want: attest.ErrNonceMismatch},
	}, snpReportCases...))
}

// TestSNPVTPMCollection: a host that supplies no VCEK, or fails, makes
// collection fail with a message saying so, and the evidence's SEV-SNP
// part is refused on decoding when a part is missing or oversized.
func TestSNPVTPMCollection(t *testing.T) {
	ch := attest.AdmissionChallenge(bytes.Repeat([]byte{7}, 32))
	t.Run("VCEK from AMD's KDS", func(t *testing.T) {
		host := attesttest.NewSNPHost(t)
		host.NoCertificates = true
		kds, err := host.FakeKDS()
		if err != nil {
			t.Fatal(err)
		}
		host.KDS = kds
		c, p := snpVTPM(t, host)
		claims, err := verifyCollected(t, c, ch, p, nil)
		if err != nil || claims.Level != 3 || claims.SNP.VCEKDigest == "" {
			t.Fatalf("level %v: %v", claims, err)
		}
	})
	for name, tc := range map[string]struct {
		kds  trust.HTTPSGetter
		want string
	}{
		"KDS unreachable":      {kdsAnswer{err: errors.New("no route to host")}, "AMD's KDS did not give it (https://kdsintf.amd.com/vcek/v1/Milan/"},
		"KDS answers no VCEK":  {kdsAnswer{body: []byte("<html>")}, "AMD's KDS answered no VCEK certificate"},
		"KDS answers too much": {kdsAnswer{body: make([]byte, attest.MaxSNPCertSize+1)}, "input exceeds size limit"},
	} {
		t.Run(name, func(t *testing.T) {
			host := attesttest.NewSNPHost(t)
			host.NoCertificates, host.KDS = true, tc.kds
			c, _ := snpVTPM(t, host)
			if _, err := c.Collect(ch); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
	t.Run("no VCEK from the host", func(t *testing.T) {
		host := attesttest.NewSNPHost(t)
		host.NoCertificates = true
		c, _ := snpVTPM(t, host)
		if _, err := c.Collect(ch); !errors.Is(err, attest.ErrMalformedEvidence) || !strings.Contains(err.Error(), "fetching it from AMD's KDS is off") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("host fails", func(t *testing.T) {
		host := attesttest.NewSNPHost(t)
		host.Err = errors.New("EIO")
		c, _ := snpVTPM(t, host)
		if _, err := c.Collect(ch); err == nil || !strings.Contains(err.Error(), "SEV-SNP report: EIO") {
			t.Fatalf("got %v", err)
		}
	})
	for name, tc := range map[string]struct {
		answer []byte
		msg    string
	}{
		"answer shorter than a report":  {make([]byte, 100), "report and certificates are 100 bytes"},
		"certificate table not a table": {append(make([]byte, abi.ReportSize), bytes.Repeat([]byte{0xff}, 64)...), "report and certificates: "},
	} {
		t.Run(name, func(t *testing.T) {
			host := attesttest.NewSNPHost(t)
			host.Answer = tc.answer
			c, _ := snpVTPM(t, host)
			if _, err := c.Collect(ch); !errors.Is(err, attest.ErrMalformedEvidence) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want %v (%q)", err, attest.ErrMalformedEvidence, tc.msg)
			}
		})
	}
	host := attesttest.NewSNPHost(t)
	c, _ := snpVTPM(t, host)
	ev, err := c.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*attest.SNPEvidence)
		want error
	}{
		{name: "report one byte short", edit: func(s *attest.SNPEvidence) { s.Report = s.Report[:len(s.Report)-1] }, want: attest.ErrMalformedEvidence},
		{name: "report one byte long", edit: func(s *attest.SNPEvidence) { s.Report = append(s.Report, 0) }, want: attest.ErrTooLarge},
		{name: "no VCEK", edit: func(s *attest.SNPEvidence) { s.VCEK = nil }, want: attest.ErrMalformedEvidence},
		{name: "VCEK over the limit", edit: func(s *attest.SNPEvidence) { s.VCEK = make([]byte, attest.MaxSNPCertSize+1) }, want: attest.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := decodeEdited(t, ev, func(e *attest.TPMEvidence) { tc.edit(e.SNP) }); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestLoadSNPRoots: an AMD KDS cert_chain (ASK, then ARK) loads under the
// ARK's product line; a file whose ARK does not parse, or whose second
// certificate is no ARK, is refused with an error naming why, not a panic.
func TestLoadSNPRoots(t *testing.T) {
	host := attesttest.NewSNPHost(t)
	dir := t.TempDir()
	write := func(name string, certs ...[]byte) string {
		var b []byte
		for _, c := range certs {
			b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c})...)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	roots, err := attest.LoadSNPRoots(write("chain.pem", host.Signer.Ask.Raw, host.Signer.Ark.Raw))
	if err != nil || len(roots["Milan"]) != 1 || !roots["Milan"][0].ProductCerts.Ark.Equal(host.Signer.Ark) {
		t.Fatalf("roots %v: %v", roots, err)
	}
	for name, tc := range map[string]struct {
		path, want string
	}{
		"ARK does not parse":        {write("junk-ark.pem", host.Signer.Ask.Raw, []byte("junk")), "does not parse"},
		"second certificate no ARK": {write("ask-twice.pem", host.Signer.Ask.Raw, host.Signer.Ask.Raw), "not ARK-<product line>"},
		"no file":                   {filepath.Join(dir, "none.pem"), "no such file"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := attest.LoadSNPRoots(tc.path); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// kdsAnswer is an AMD KDS that answers every request with body or err.
type kdsAnswer struct {
	body []byte
	err  error
}

func (k kdsAnswer) Get(string) ([]byte, error) { return k.body, k.err }
