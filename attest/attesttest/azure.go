//go:build cgo

package attesttest

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/big"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
)

// AzureHCLReport is an HCL report as an Azure confidential VM's paravisor
// writes it to NV index attest.AzureHCLNVIndex at boot, laid out as the
// real one in attest/testdata/azure (header "HCLA", the SEV-SNP report, the
// IGVM request header, the runtime data, zero padding to 2048 bytes). Its
// runtime data names ak as HCLAkPub, and its SEV-SNP report, made by h,
// has REPORT_DATA = SHA-256(runtime data). Synthetic: no Azure VM made it.
func (h *SNPHost) AzureHCLReport(ak *rsa.PublicKey) ([]byte, error) {
	runtime, err := json.Marshal(map[string]any{
		"keys": []map[string]any{{
			"kid": "HCLAkPub", "key_ops": []string{"sign"}, "kty": "RSA",
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(ak.E)).Bytes()),
			"n": base64.RawURLEncoding.EncodeToString(ak.N.Bytes()),
		}},
		"vm-configuration": map[string]any{"console-enabled": false, "secure-boot": true, "tpm-enabled": true, "vmUniqueId": "00000000-0000-4000-8000-000000000000"},
	})
	if err != nil {
		return nil, err
	}
	var rd [64]byte
	d := sha256.Sum256(runtime)
	copy(rd[:], d[:])
	report, err := h.Report(rd)
	if err != nil {
		return nil, err
	}
	const header, request = 32, 20
	b := make([]byte, 2048)
	if header+abi.ReportSize+request+len(runtime) > len(b) {
		return nil, fmt.Errorf("HCL runtime data of %d bytes does not fit", len(runtime))
	}
	le := binary.LittleEndian
	le.PutUint32(b, 0x414c4348) // "HCLA"
	le.PutUint32(b[4:], 2)      // version
	le.PutUint32(b[8:], 2)      // report type: SEV-SNP
	copy(b[header:], report)
	req := b[header+abi.ReportSize:]
	le.PutUint32(req, uint32(request+len(runtime)))
	le.PutUint32(req[4:], 1)  // version
	le.PutUint32(req[8:], 2)  // SEV-SNP
	le.PutUint32(req[12:], 1) // SHA-256
	le.PutUint32(req[16:], uint32(len(runtime)))
	copy(req[request:], runtime)
	return b, nil
}

// AzureCVM is a simulated Azure SEV-SNP confidential VM's vTPM: a fresh
// simulator with the boot replayed, Azure's RSA AK persistent at
// attest.AzureAKHandle, and in NV attest.AzureHCLNVIndex the HCL report
// host makes for hclAK(that AK) (nil: the AK itself). It returns the
// collector on it (not labelled software, as a cloud vTPM is not; it has
// done nothing yet) and the policy that admits it: the AK trusted, host's
// measurement on the image, host's test-only AMD chain, SMT allowed (as
// Azure runs its CVMs), software TPMs refused. The error is
// attest.NewTPMCollector's.
func AzureCVM(t testing.TB, host *SNPHost, hclAK func(*rsa.PublicKey) *rsa.PublicKey) (*attest.TPMCollector, *attest.Policy, error) {
	t.Helper()
	sim := Simulator(t)
	p, err := Policy(sim)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := client.NewKey(sim, tpm2.HandleEndorsement, client.AKTemplateRSA())
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	if err := tpm2.EvictControl(sim, "", tpm2.HandleOwner, ak.Handle(), attest.AzureAKHandle); err != nil {
		t.Fatal(err)
	}
	pub := ak.PublicKey().(*rsa.PublicKey)
	named := pub
	if hclAK != nil {
		named = hclAK(pub)
	}
	hcl, err := host.AzureHCLReport(named)
	if err != nil {
		t.Fatal(err)
	}
	if err := ekca.WriteOwnerNV(sim, attest.AzureHCLNVIndex, tpm2.AttrOwnerWrite|tpm2.AttrOwnerRead|tpm2.AttrAuthRead|tpm2.AttrNoDA, hcl); err != nil {
		t.Fatal(err)
	}
	c, err := attest.NewTPMCollector(sim, attest.TPMOptions{
		EventLog:  func() ([]byte, error) { return BootLog(), nil },
		AKHandle:  attest.AzureAKHandle,
		AzureVCEK: host.Signer.Vcek.Raw,
	})
	if err != nil {
		return nil, nil, err
	}
	t.Cleanup(func() { c.Close() })
	p.TrustedAKs = []crypto.PublicKey{pub}
	p.Reference.Images[0].SNPMeasurements = []attest.Hex{host.Measurement}
	p.SNP.TrustedRoots = host.Roots
	p.SNP.AllowSMT = true
	p.AllowSoftwareTPMUnsafe = false
	return c, p, nil
}
