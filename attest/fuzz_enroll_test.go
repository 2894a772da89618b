package attest_test

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/attest"
	"google.golang.org/protobuf/proto"
)

// realCertificates are the real EK and AK certificates with ECC keys held
// in testdata (swtpm's, Compute Engine's), DER. Those with RSA keys are
// left out: parsing an RSA public key sets up its modulus arithmetic, which
// under the fuzzer's instrumentation takes seconds per input.
func realCertificates(f *testing.F) [][]byte {
	var out [][]byte
	b, err := os.ReadFile("testdata/swtpm/ek-secp384r1.der")
	if err != nil {
		f.Fatal(err)
	}
	out = append(out, b)
	pems, _ := filepath.Glob("testdata/gotpmtools/*_ecc_*_cert.pem")
	for _, p := range pems {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		if blk, _ := pem.Decode(b); blk != nil {
			out = append(out, blk.Bytes)
		}
	}
	return out
}

// FuzzVerifyEKCertificate: EK certificates come from the agent, untrusted.
func FuzzVerifyEKCertificate(f *testing.F) {
	for _, b := range realCertificates(f) {
		f.Add(b)
	}
	// The trusted CA is the fleet's kind (ECDSA); its certificate for an
	// ECC EK is the seed that verifies.
	ca, err := ekca.New("fuzz EK CA")
	if err != nil {
		f.Fatal(err)
	}
	mine, err := ca.Issue(mustECDSA(f).Public(), 0x53575450, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(mine)
	trust := &attest.EKTrust{Roots: []*x509.Certificate{ca.Cert}}
	at := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, b []byte) {
		ek, err := attest.VerifyEKCertificate(b, trust, at)
		if err == nil && !bytes.Equal(ek.Cert.Raw, b) {
			t.Fatal("accepted a certificate other than the bytes given")
		}
		if trimmed, err := attest.TrimDER(b); err == nil && len(trimmed) > len(b) {
			t.Fatal("TrimDER grew its input")
		}
	})
}

// FuzzCheckAKPublic: AK public areas come from the agent, untrusted.
func FuzzCheckAKPublic(f *testing.F) {
	raw, err := os.ReadFile("testdata/gotpmtools/gce-cos-85-nonce9009.pb")
	if err != nil {
		f.Fatal(err)
	}
	var att pb.Attestation
	if err := proto.Unmarshal(raw, &att); err != nil {
		f.Fatal(err)
	}
	f.Add(att.GetAkPub())
	f.Add(akArea(f, client.AKTemplateECC(), mustECDSA(f).Public()))
	f.Fuzz(func(t *testing.T, b []byte) {
		ak, err := attest.CheckAKPublic(b)
		if err != nil {
			return
		}
		if match, err := ak.Name.MatchesPublic(ak.Public); err != nil || !match {
			t.Fatal("accepted an area its name does not match")
		}
		if _, err := attest.MakeCredential(&rsaKey(t, 0).PublicKey, ak, []byte("0123456789abcdef")); err != nil {
			t.Fatalf("accepted AK cannot be given a credential: %v", err)
		}
	})
}
