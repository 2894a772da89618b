package attest_test

import (
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
)

// azureTPM makes a swtpm look like an Azure trusted-launch vTPM: an RSA
// AK persistent at AzureAKHandle and a certificate of it, issued by
// issuer, in an owner NV index at AzureAKCertNVIndex. No real Azure VM was
// used: the layout (handle, index) is Azure's documented one, the
// certificate is synthetic. certFor, if set, is the key certified instead
// of the AK.
func azureTPM(t *testing.T, issuer *testAuthority, certFor func(ak any) any) *attesttest.SWTPM {
	t.Helper()
	attesttest.RequireSWTPM(t)
	tpm, err := attesttest.BootSWTPM(context.Background(), t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm.Stop() })
	if err := tpm.With(func(rw io.ReadWriter) error {
		ak, err := client.NewKey(rw, tpm2.HandleEndorsement, client.AKTemplateRSA())
		if err != nil {
			return err
		}
		defer ak.Close()
		if err := tpm2.EvictControl(rw, "", tpm2.HandleOwner, ak.Handle(), attest.AzureAKHandle); err != nil {
			return err
		}
		var pub any = ak.PublicKey()
		if certFor != nil {
			pub = certFor(pub)
		}
		der := issuer.issue(t, pub, func(c *x509.Certificate) {
			c.Subject = pkix.Name{CommonName: "synthetic Azure vTPM AK"}
			c.KeyUsage = x509.KeyUsageDigitalSignature
		})
		return ekca.WriteOwnerNV(rw, attest.AzureAKCertNVIndex, tpm2.AttrOwnerWrite|tpm2.AttrOwnerRead|tpm2.AttrAuthRead|tpm2.AttrNoDA, der)
	}); err != nil {
		t.Fatal(err)
	}
	return tpm
}

// azureCollector opens the agent's collector on the TPM, over the TPM's
// one connection (swtpm serves one client at a time), also returned.
func azureCollector(t *testing.T, tpm *attesttest.SWTPM) (*attest.TPMCollector, io.ReadWriter, error) {
	t.Helper()
	conn, err := tpm.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c, err := attest.NewTPMCollector(conn, attest.TPMOptions{
		EventLog: func() ([]byte, error) { return attesttest.BootLog(), nil }, SoftwareTPM: true,
		AKHandle: attest.AzureAKHandle, AKCertNVIndex: attest.AzureAKCertNVIndex,
	})
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, conn, err
}

// TestAzureAKCertificate: a swtpm laid out as an Azure vTPM (synthetic AK
// certificate in NV 0x01C101D0, chained to a test root) is trusted through
// its AK certificate with no AK enrolled; under another root it is not,
// and a certificate in NV for another key is refused by the collector.
func TestAzureAKCertificate(t *testing.T) {
	root := newAuthority(t)
	inter := root.intermediate(t, nil)
	tpm := azureTPM(t, inter, nil)
	c, conn, err := azureCollector(t, tpm)
	if err != nil {
		t.Fatal(err)
	}
	p, err := attesttest.Policy(conn)
	if err != nil {
		t.Fatal(err)
	}
	if err := attesttest.BootAgent(c); err != nil {
		t.Fatal(err)
	}
	p.TrustedAKs = nil
	p.TrustedAKRoots, p.TrustedAKIntermediates = []*x509.Certificate{root.cert}, []*x509.Certificate{inter.cert}
	ch := attest.AdmissionChallenge(nonce(t))
	ev, err := c.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.Verify(ev, ch, p); err != nil {
		t.Fatalf("Azure-layout vTPM refused: %v", err)
	}
	other := *p
	other.TrustedAKRoots = []*x509.Certificate{newAuthority(t).cert}
	if _, err := attest.Verify(ev, ch, &other); !errors.Is(err, attest.ErrUntrustedAK) {
		t.Fatalf("under another root: %v, want %v", err, attest.ErrUntrustedAK)
	}
	noInter := *p
	noInter.TrustedAKIntermediates = nil
	if _, err := attest.Verify(ev, ch, &noInter); !errors.Is(err, attest.ErrUntrustedAK) {
		t.Fatalf("without the intermediate: %v, want %v", err, attest.ErrUntrustedAK)
	}

	wrongKey := azureTPM(t, inter, func(any) any { return &rsaKey(t, 2).PublicKey })
	if _, _, err := azureCollector(t, wrongKey); !errors.Is(err, attest.ErrUntrustedAK) {
		t.Fatalf("AK certificate for another key: %v, want %v", err, attest.ErrUntrustedAK)
	}
}
