package attest_test

import (
	"bytes"
	"crypto/rsa"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/google/go-tpm/legacy/tpm2"
)

// azureCVM is a simulated Azure confidential VM's vTPM (HCL report in NV,
// naming its AK) whose secure processor is host.
func azureCVM(t testing.TB, host *attesttest.SNPHost) (*attest.TPMCollector, *attest.Policy) {
	t.Helper()
	c, p, err := attesttest.AzureCVM(t, host, nil)
	if err != nil {
		t.Fatal(err)
	}
	return c, p
}

// TestAzureCVMLevel3: TPM evidence from an Azure confidential VM's vTPM,
// whose HCL report chains SEV-SNP report -> runtime data -> AK, with that
// AK the quote's signer, is level 3 from hardware "sev-snp" with binding
// "azure-hcl" (BuildEnv L3.hw-quote). Each break of the chain refuses the
// evidence with its own error: the AK not in the runtime data, the runtime
// data not the report's, an HCL report of another kind, and every
// SEV-SNP report check (snpReportCases). The secure processor is
// go-sev-guest's test-only chain and the HCL report is synthetic (laid out
// as kinvolk's real one).
func TestAzureCVMLevel3(t *testing.T) {
	ch := attest.AdmissionChallenge(bytes.Repeat([]byte{9}, 32))
	otherAK := &rsaKey(t, 2).PublicKey
	hclEdit := func(f func(hcl []byte)) func(*attest.Evidence, *attesttest.SNPHost) {
		return func(e *attest.Evidence, _ *attesttest.SNPHost) { f(e.TPM.AzureHCL.Report) }
	}
	runSNPCases(t, ch, azureCVM, attest.SNPBindingAzureHCL, append([]snpCase{
		{name: "HCL report binds the quote's AK", wantLevel: 3},
		{name: "no HCL report: level 2", evidence: func(e *attest.Evidence, _ *attesttest.SNPHost) { e.TPM.AzureHCL = nil }, wantLevel: 2},
		{name: "AK not in the HCL runtime data", evidence: func(e *attest.Evidence, h *attesttest.SNPHost) {
			// A genuine, verifying HCL report of another vTPM.
			hcl, err := h.AzureHCLReport(otherAK)
			if err != nil {
				t.Fatal(err)
			}
			e.TPM.AzureHCL.Report = hcl
		}, want: attest.ErrAKNotBound, msg: "HCLAkPub"},
		{name: "runtime data not the report's", evidence: hclEdit(func(b []byte) {
			i := bytes.Index(b, []byte(`"vmUniqueId":"0`))
			b[i+len(`"vmUniqueId":"`)] = '1'
		}), want: attest.ErrNonceMismatch},
		{name: "not an SEV-SNP HCL report", evidence: hclEdit(func(b []byte) { b[32+1184+8] = 1 }), want: attest.ErrAzureHCL, msg: "SEV-SNP"},
	}, snpReportCases...))
}

// TestAzureCVMCollection: the collector refuses, at start, an HCL report
// naming another AK, a vTPM without an HCL report, and a direct SEV-SNP
// report besides; decoding refuses an HCL part that is empty, oversized,
// or next to an SEV-SNP part.
func TestAzureCVMCollection(t *testing.T) {
	t.Run("HCL report names another AK", func(t *testing.T) {
		other := &rsaKey(t, 2).PublicKey
		_, _, err := attesttest.AzureCVM(t, attesttest.NewSNPHost(t), func(*rsa.PublicKey) *rsa.PublicKey { return other })
		if !errors.Is(err, attest.ErrAKNotBound) {
			t.Fatalf("got %v, want %v", err, attest.ErrAKNotBound)
		}
	})
	t.Run("no HCL report in the vTPM", func(t *testing.T) {
		_, err := attest.NewTPMCollector(attesttest.Simulator(t), attest.TPMOptions{AzureVCEK: []byte{1}})
		if err == nil || !strings.Contains(err.Error(), "no Azure HCL report") || !strings.Contains(err.Error(), "0x1400001") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("NV holds no HCL report", func(t *testing.T) {
		sim := attesttest.Simulator(t)
		if err := ekca.WriteOwnerNV(sim, attest.AzureHCLNVIndex, tpm2.AttrOwnerWrite|tpm2.AttrOwnerRead|tpm2.AttrAuthRead|tpm2.AttrNoDA, make([]byte, 2048)); err != nil {
			t.Fatal(err)
		}
		if _, err := attest.NewTPMCollector(sim, attest.TPMOptions{AzureVCEK: []byte{1}}); !errors.Is(err, attest.ErrAzureHCL) {
			t.Fatalf("got %v, want %v", err, attest.ErrAzureHCL)
		}
	})
	t.Run("direct SEV-SNP report besides", func(t *testing.T) {
		_, err := attest.NewTPMCollector(attesttest.Simulator(t), attest.TPMOptions{AzureVCEK: []byte{1}, SNP: attesttest.NewSNPHost(t)})
		if err == nil || !strings.Contains(err.Error(), "give at most one") {
			t.Fatalf("got %v", err)
		}
	})

	host := attesttest.NewSNPHost(t)
	c, _ := azureCVM(t, host)
	if err := attesttest.BootAgent(c); err != nil {
		t.Fatal(err)
	}
	ev, err := c.Collect(attest.AdmissionChallenge(bytes.Repeat([]byte{9}, 32)))
	if err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		edit func(*attest.TPMEvidence)
		want error
	}{
		"HCL report empty":  {func(e *attest.TPMEvidence) { e.AzureHCL.Report = nil }, attest.ErrMalformedEvidence},
		"VCEK empty":        {func(e *attest.TPMEvidence) { e.AzureHCL.VCEK = nil }, attest.ErrMalformedEvidence},
		"HCL report 16 KiB": {func(e *attest.TPMEvidence) { e.AzureHCL.Report = make([]byte, 16<<10+1) }, attest.ErrTooLarge},
		"VCEK oversized":    {func(e *attest.TPMEvidence) { e.AzureHCL.VCEK = make([]byte, attest.MaxSNPCertSize+1) }, attest.ErrTooLarge},
		"SEV-SNP part too":  {func(e *attest.TPMEvidence) { e.SNP = &attest.SNPEvidence{Report: make([]byte, 1184), VCEK: []byte{1}} }, attest.ErrMalformedEvidence},
	} {
		t.Run(name, func(t *testing.T) {
			if err := decodeEdited(t, ev, tc.edit); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestFetchAzureVCEK: the VCEK comes from the instance metadata service's
// THIM endpoint, asked with the Metadata header; an error status, an
// answer without a PEM certificate, one that is not JSON and one over the
// limit are each refused.
func TestFetchAzureVCEK(t *testing.T) {
	host := attesttest.NewSNPHost(t)
	vcekPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: host.Signer.Vcek.Raw}))
	answer := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := answer(map[string]string{"vcekCert": vcekPEM, "certificateChain": "", "tcbm": "0", "cacheControl": "86400"})
	for _, tc := range []struct {
		name string
		body []byte
		msg  string
	}{
		{name: "VCEK", body: good},
		{name: "no PEM certificate", body: answer(map[string]string{"vcekCert": "MIIB"}), msg: "no PEM certificate"},
		{name: "not a certificate", body: answer(map[string]string{"vcekCert": string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}))}), msg: "x509"},
		{name: "not JSON", body: []byte("<html>"), msg: "invalid character"},
		{name: "oversized", body: append(bytes.Clone(good), bytes.Repeat([]byte(" "), 64<<10)...), msg: "over 65536 bytes"},
		{name: "error status", msg: "HTTP 400"},
		{name: "answer cut short", msg: "unexpected EOF"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.name == "answer cut short" {
					// Promise more than is sent, then hang up.
					conn, buf, _ := w.(http.Hijacker).Hijack()
					buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"vcekCert\"")
					buf.Flush()
					conn.Close()
					return
				}
				if r.URL.Path != "/metadata/THIM/amd/certification" || r.Header.Get("Metadata") != "true" || tc.body == nil {
					http.Error(w, "bad request", http.StatusBadRequest)
					return
				}
				w.Write(tc.body)
			}))
			defer srv.Close()
			der, err := attest.FetchAzureVCEK(t.Context(), srv.Client(), srv.URL+"/")
			if tc.msg != "" {
				if err == nil || !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("got %v, want %q", err, tc.msg)
				}
				return
			}
			if err != nil || !bytes.Equal(der, host.Signer.Vcek.Raw) {
				t.Fatalf("got %d bytes, %v", len(der), err)
			}
		})
	}
}

// TestFetchAzureVCEKUnreachable: a base URL that is no URL, and a service
// that is not there, are errors naming the service.
func TestFetchAzureVCEKUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	for base, want := range map[string]string{"http://[::1": "missing ']'", url: "instance metadata service"} {
		if _, err := attest.FetchAzureVCEK(t.Context(), http.DefaultClient, base); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", base, err, want)
		}
	}
}
