package attest_test

import (
	"bytes"
	"crypto/x509"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
)

// TestEnvKeyCannotBeRecreated: a process with TPM access in the same boot
// (same null-hierarchy seed) tries to make the environment key again from
// every template the code uses, in every hierarchy, while the key is live
// and after the collector destroyed it. It never gets the same key: the
// key's template had a random unique field that only GenerateKeys saw.
func TestEnvKeyCannotBeRecreated(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	envKey := m.Collector.EnvKey()
	// The key verifies as before: the random unique field does not change
	// what TPM2_Certify attests (attributes, null hierarchy).
	ch := attest.AdmissionChallenge(bytes.Repeat([]byte{7}, 32))
	ev, err := m.Collector.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.Verify(ev, ch, m.Policy); err != nil {
		t.Fatalf("evidence with a unique-field environment key: %v", err)
	}
	templates := map[string]tpm2.Public{
		"environment key": attest.EnvKeyTemplate(),
		"ECC AK":          client.AKTemplateECC(),
	}
	hierarchies := map[string]tpmutil.Handle{"null": tpm2.HandleNull, "owner": tpm2.HandleOwner, "endorsement": tpm2.HandleEndorsement}
	tryAll := func(when string) {
		t.Helper()
		for tn, tmpl := range templates {
			for hn, h := range hierarchies {
				k, err := client.NewKey(m.TPM, h, tmpl)
				if err != nil {
					t.Fatalf("%s: %s template in the %s hierarchy: %v", when, tn, hn, err)
				}
				got, err := x509.MarshalPKIXPublicKey(k.PublicKey())
				k.Close()
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Equal(got, envKey) {
					t.Errorf("%s: the %s template in the %s hierarchy re-creates the environment key", when, tn, hn)
				}
			}
		}
	}
	tryAll("while live")
	if err := m.Collector.Close(); err != nil {
		t.Fatal(err)
	}
	tryAll("after teardown")

}
