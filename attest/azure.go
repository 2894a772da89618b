package attest

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
)

// ErrAzureHCL: an Azure confidential VM's HCL report is malformed, is not
// an SEV-SNP one, or its runtime data names no AK.
var ErrAzureHCL = errors.New("invalid Azure HCL report")

// ErrAKNotBound: the HCL report's runtime data names another AK than the
// one that signed the TPM quote, so the SEV-SNP report vouches for some
// other vTPM.
var ErrAKNotBound = errors.New("the HCL report does not name the quote's AK")

// AzureHCLNVIndex is where an Azure confidential VM's vTPM keeps the HCL
// report its paravisor made at boot.
const AzureHCLNVIndex = 0x01400001

// Azure vTPM HCL report layout (Azure's "attestation report format" for
// confidential VMs): a 32-byte header, the hardware report in a 1184-byte
// slot, a 20-byte IGVM request header, then the runtime data (JSON).
const (
	hclHeaderSize   = 32
	hclReportSlot   = 1184
	hclRequestSize  = 20
	hclReportSNP    = 2
	hclHashSHA256   = 1
	hclSignature    = 0x414c4348 // "HCLA"
	maxHCLReportLen = 16 << 10
)

// AzureHCLReport is an Azure confidential VM's HCL report, read from the
// vTPM's NV index 0x01400001: an SEV-SNP report whose REPORT_DATA is the
// SHA-256 of the runtime data, which names the vTPM's AK ("HCLAkPub").
type AzureHCLReport struct {
	SNPReport   []byte
	RuntimeData []byte
	AK          *rsa.PublicKey
}

// ParseAzureHCLReport decodes an HCL report without verifying anything.
func ParseAzureHCLReport(b []byte) (*AzureHCLReport, error) {
	if len(b) > maxHCLReportLen {
		return nil, fmt.Errorf("%w: HCL report is %d bytes", ErrTooLarge, len(b))
	}
	fixed := hclHeaderSize + hclReportSlot + hclRequestSize
	if len(b) < fixed {
		return nil, fmt.Errorf("%w: %d bytes, shorter than its fixed part", ErrAzureHCL, len(b))
	}
	le := binary.LittleEndian
	if le.Uint32(b) != hclSignature {
		return nil, fmt.Errorf("%w: no HCLA signature", ErrAzureHCL)
	}
	req := b[hclHeaderSize+hclReportSlot:]
	if typ := le.Uint32(req[8:]); typ != hclReportSNP {
		return nil, fmt.Errorf("%w: hardware report type %d, want %d (SEV-SNP)", ErrAzureHCL, typ, hclReportSNP)
	}
	if h := le.Uint32(req[12:]); h != hclHashSHA256 {
		return nil, fmt.Errorf("%w: runtime data hash type %d, want SHA-256", ErrAzureHCL, h)
	}
	n := int(le.Uint32(req[16:]))
	if n == 0 || n > len(b)-fixed {
		return nil, fmt.Errorf("%w: runtime data of %d bytes", ErrAzureHCL, n)
	}
	r := &AzureHCLReport{SNPReport: b[hclHeaderSize : hclHeaderSize+hclReportSlot], RuntimeData: b[fixed : fixed+n]}
	var rt struct {
		Keys []struct {
			Kid string `json:"kid"`
			Kty string `json:"kty"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(r.RuntimeData, &rt); err != nil {
		return nil, fmt.Errorf("%w: runtime data: %v", ErrAzureHCL, err)
	}
	for _, k := range rt.Keys {
		if k.Kid != "HCLAkPub" || k.Kty != "RSA" {
			continue
		}
		nb, err1 := base64.RawURLEncoding.DecodeString(k.N)
		eb, err2 := base64.RawURLEncoding.DecodeString(k.E)
		e := new(big.Int).SetBytes(eb)
		if err1 != nil || err2 != nil || len(nb) < 256 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31 {
			return nil, fmt.Errorf("%w: HCLAkPub is not an RSA-2048+ key", ErrAzureHCL)
		}
		r.AK = &rsa.PublicKey{N: new(big.Int).SetBytes(nb), E: int(e.Int64())}
	}
	if r.AK == nil {
		return nil, fmt.Errorf("%w: runtime data names no HCLAkPub", ErrAzureHCL)
	}
	return r, nil
}

// VerifyAzureHCLReport checks the chain SNP report -> runtime data -> AK:
// the SEV-SNP report verifies (VerifySNPReport with p: AMD signature and
// chain, MEASUREMENT, TCB, guest policy) with REPORT_DATA = SHA-256(runtime
// data) || 32 zero bytes (ErrNonceMismatch otherwise), so the AK the
// runtime data names is the confidential VM's vTPM AK. The caller then
// verifies the TPM quote with that AK (and only that one) and its nonce.
//
// Not checked here: freshness (the HCL report is made at boot; freshness
// comes from the TPM quote's nonce), and the runtime data's other claims
// (vm-configuration), which are reported, not relied on.
func VerifyAzureHCLReport(hcl, vcekDER []byte, p *SNPPolicy) (*AzureHCLReport, *SNPClaims, error) {
	r, err := ParseAzureHCLReport(hcl)
	if err != nil {
		return nil, nil, err
	}
	var want [64]byte
	d := sha256.Sum256(r.RuntimeData)
	copy(want[:], d[:])
	c, err := VerifySNPReport(r.SNPReport, vcekDER, want, p)
	if err != nil {
		return nil, nil, err
	}
	return r, c, nil
}

// CheckBinding checks, on the (not yet verified) SNP report, that
// REPORT_DATA is SHA-256(runtime data) || 32 zero bytes (ErrNonceMismatch).
// VerifyAzureHCLReport checks the same after the report's signature.
func (r *AzureHCLReport) CheckBinding() error {
	snp, err := ParseSNPReport(r.SNPReport)
	if err != nil {
		return err
	}
	var want [64]byte
	d := sha256.Sum256(r.RuntimeData)
	copy(want[:], d[:])
	if !bytes.Equal(snp.GetReportData(), want[:]) {
		return fmt.Errorf("%w: SEV-SNP REPORT_DATA is not the SHA-256 of the HCL runtime data", ErrNonceMismatch)
	}
	return nil
}

// ReadAzureHCLReport reads the HCL report from the vTPM's NV index
// AzureHCLNVIndex and parses it. On a machine that is no Azure
// confidential VM the index is missing, and the error says so.
func ReadAzureHCLReport(rw io.ReadWriter) ([]byte, *AzureHCLReport, error) {
	b, err := readNV(rw, AzureHCLNVIndex, maxHCLReportLen)
	if err != nil {
		return nil, nil, fmt.Errorf("no Azure HCL report (is this an Azure confidential VM?): %w", err)
	}
	r, err := ParseAzureHCLReport(b)
	if err != nil {
		return nil, nil, err
	}
	return b, r, nil
}

// AzureIMDS is the instance metadata service of Azure VMs.
const AzureIMDS = "http://169.254.169.254"

// maxTHIMResponse bounds the IMDS answer: a VCEK and the ASK/ARK chain in
// PEM are about 6 KiB.
const maxTHIMResponse = 64 << 10

// FetchAzureVCEK asks Azure's instance metadata service (base: AzureIMDS)
// for the VCEK of the host the VM runs on (THIM, /metadata/THIM/amd/
// certification) and returns its DER certificate. Microsoft serves the
// VCEK there, not in the vTPM. Whatever the answer, nothing is trusted
// here: the verifier checks the VCEK against AMD's roots.
func FetchAzureVCEK(ctx context.Context, client *http.Client, base string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/metadata/THIM/amd/certification", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Metadata", "true")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("VCEK from Azure's instance metadata service: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTHIMResponse+1))
	if err != nil {
		return nil, fmt.Errorf("VCEK from Azure's instance metadata service: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("VCEK from Azure's instance metadata service: HTTP %d", resp.StatusCode)
	}
	if len(body) > maxTHIMResponse {
		return nil, fmt.Errorf("%w: the instance metadata service's VCEK answer is over %d bytes", ErrTooLarge, maxTHIMResponse)
	}
	var thim struct {
		VCEKCert string `json:"vcekCert"`
	}
	if err := json.Unmarshal(body, &thim); err != nil {
		return nil, fmt.Errorf("VCEK from Azure's instance metadata service: %w", err)
	}
	block, _ := pem.Decode([]byte(thim.VCEKCert))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("VCEK from Azure's instance metadata service: vcekCert holds no PEM certificate")
	}
	if _, err := x509.ParseCertificate(block.Bytes); err != nil {
		return nil, fmt.Errorf("VCEK from Azure's instance metadata service: %w", err)
	}
	return block.Bytes, nil
}

// AKMatches reports whether ak is the AK the HCL report's runtime data names.
func (r *AzureHCLReport) AKMatches(ak *rsa.PublicKey) bool {
	return ak != nil && r.AK.E == ak.E && bytes.Equal(r.AK.N.Bytes(), ak.N.Bytes())
}
