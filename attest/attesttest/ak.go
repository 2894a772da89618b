//go:build cgo

package attesttest

import (
	"crypto"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
)

// AKTemplateRSAPSS is go-tpm-tools' RSA AK template with the RSA-PSS
// scheme instead of RSASSA.
func AKTemplateRSAPSS() tpm2.Public {
	t := client.AKTemplateRSA()
	t.RSAParameters.Sign = &tpm2.SigScheme{Alg: tpm2.AlgRSAPSS, Hash: tpm2.AlgSHA256}
	return t
}

// SimulatedMachineWithAK is SimulatedMachine whose agent attests with an
// attestation key made from tmpl (a primary key of the endorsement
// hierarchy: an RSA AK, an RSA-PSS AK), which its policy trusts by key.
func SimulatedMachineWithAK(t testing.TB, tmpl tpm2.Public) *Machine {
	t.Helper()
	sim := simulatorWithLog(t, BootLog())
	p, err := Policy(sim)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := client.NewKey(sim, tpm2.HandleEndorsement, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	p.TrustedAKs = []crypto.PublicKey{ak.PublicKey()}
	ak.Close()
	c, err := attest.NewTPMCollector(sim, attest.TPMOptions{
		EventLog:    func() ([]byte, error) { return BootLog(), nil },
		SoftwareTPM: true,
		AKTemplate:  &tmpl,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := BootAgent(c); err != nil {
		t.Fatal(err)
	}
	return &Machine{TPM: sim, Collector: c, Policy: p}
}
