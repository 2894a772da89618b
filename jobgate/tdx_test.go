package jobgate_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/internal/fakeclock"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
)

// TestAdmitTDXLevel3: a TD whose quote verifies, on a platform Intel's
// (test-root) collateral rates UpToDate, is certified at level 3 from
// hardware "tdx", and the certificate carries the collateral it was judged
// with. The same TD with stale collateral is refused with its own reason,
// and without collateral it is certified at level 2 only.
func TestAdmitTDXLevel3(t *testing.T) {
	stale := func(m *attesttest.TDXMachine) {
		c, err := m.Signer.Collateral(attesttest.CollateralOptions{Issued: time.Now().Add(-48 * time.Hour), NextUpdate: time.Now().Add(-time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		m.Policy.TDXCollateral = c
	}
	outOfDate := func(m *attesttest.TDXMachine) {
		c, err := m.Signer.Collateral(attesttest.CollateralOptions{Status: "OutOfDate"})
		if err != nil {
			t.Fatal(err)
		}
		m.Policy.TDXCollateral = c
	}
	for _, tc := range []struct {
		name      string
		edit      func(*attesttest.TDXMachine)
		wantLevel int
		wantCode  string
	}{
		{name: "UpToDate", wantLevel: 3},
		{name: "no collateral", edit: func(m *attesttest.TDXMachine) { m.Policy.TDXCollateral = nil }, wantLevel: 2},
		{name: "stale collateral", edit: stale, wantCode: "tdx_collateral_expired"},
		{name: "TCB out of date", edit: outOfDate, wantCode: "tdx_tcb_status"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := attesttest.NewTDXMachine(t, "../attest/testdata/tdx")
			if tc.edit != nil {
				tc.edit(m)
			}
			// The gate wants a TPM trust root even when it admits TDX only.
			ak, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			m.Policy.TrustedAKs = []crypto.PublicKey{ak.Public()}
			_, reg := fakeGitHub(t)
			store, err := jobgate.OpenBoltStore(filepath.Join(t.TempDir(), "gate.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			cfg := &jobgate.Config{
				Listen: "127.0.0.1:0", GateID: "https://gate.test", BuilderID: "https://gate.test/builder/v1",
				GitHub: jobgate.GitHubConfig{Org: "octo-org", Labels: []string{"self-hosted", "attested"}},
			}
			g, err := jobgate.New(jobgate.Options{Config: cfg, Store: store, Registry: reg, Policy: m.Policy,
				PolicyDigest: "test", Signer: signer, Now: fakeclock.New(time.Now()).Now})
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(g.Handler())
			t.Cleanup(srv.Close)
			client := &gateapi.Client{BaseURL: srv.URL}
			ctx := context.Background()
			ch, err := client.Challenge(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := m.Collector.Collect(attest.AdmissionChallenge(ch.Nonce))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := ev.Encode()
			resp, err := client.Admit(ctx, &gateapi.AdmitRequest{Nonce: ch.Nonce, Evidence: b})
			if tc.wantCode != "" {
				if code := rejectedCode(err); code != tc.wantCode {
					t.Fatalf("got %v (code %q), want code %q", err, code, tc.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cert, err := provenance.VerifyEnvCert(resp.EnvironmentCertificate, []crypto.PublicKey{signer.Public()})
			if err != nil {
				t.Fatal(err)
			}
			if cert.Level != tc.wantLevel || cert.Hardware != attest.HardwareTDX || cert.Kind != attest.KindTDX {
				t.Errorf("certificate: level %d from %q (%s), want %d from tdx", cert.Level, cert.Hardware, cert.Kind, tc.wantLevel)
			}
			if (cert.TDXCollateral != nil) != (tc.wantLevel == 3) || (cert.TDXTCB != nil) != (tc.wantLevel == 3) {
				t.Errorf("certificate collateral %v, TCB %+v", cert.TDXCollateral != nil, cert.TDXTCB)
			}
			if cert.TDXTCB != nil && cert.TDXTCB.Status != "UpToDate" {
				t.Errorf("TCB %+v", cert.TDXTCB)
			}
		})
	}
}
