package attest_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/attest"
	"github.com/google/go-tpm/legacy/tpm2"
)

// softAK is a software P-256 key presented as an attestation key: its public
// area claims the attributes of a restricted signing key. A policy that
// trusts it (as an enrolled AK) lets a test sign TPMS_ATTEST structures no
// TPM would: it is how the checks after the signature are reached with
// content a genuine AK never signs.
type softAK struct {
	key *ecdsa.PrivateKey
	// public is the encoded TPMT_PUBLIC area.
	public []byte
}

func newSoftAK(t testing.TB) *softAK {
	t.Helper()
	k, err := ecdsaKey()
	if err != nil {
		t.Fatal(err)
	}
	area := client.AKTemplateECC()
	area.ECCParameters.Point = eccPoint(&k.PublicKey)
	pub, err := area.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &softAK{key: k, public: pub}
}

func eccPoint(k *ecdsa.PublicKey) tpm2.ECPoint {
	b, err := k.Bytes() // 0x04 || X || Y
	if err != nil || len(b) != 65 {
		panic(fmt.Sprintf("eccPoint: not a P-256 key: %v", err))
	}
	return tpm2.ECPoint{XRaw: b[1:33], YRaw: b[33:]}
}

// sign returns the TPMT_SIGNATURE (ECDSA, SHA-256) of data.
func (a *softAK) sign(t testing.TB, data []byte) []byte {
	t.Helper()
	d := sha256.Sum256(data)
	r, s, err := ecdsa.Sign(rand.Reader, a.key, d[:])
	if err != nil {
		t.Fatal(err)
	}
	b, err := tpm2.Signature{Alg: tpm2.AlgECDSA, ECC: &tpm2.SignatureECC{HashAlg: tpm2.AlgSHA256, R: r, S: s}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// resign makes a the evidence's AK: it replaces the AK public area, signs
// every quote again and signs the certification, after edit (if not nil)
// has changed it.
func (a *softAK) resign(t testing.TB, ev *attest.Evidence, edit func(*tpm2.AttestationData)) {
	t.Helper()
	editAttestation(t, ev, func(att *pb.Attestation) {
		att.AkPub = a.public
		for _, q := range att.Quotes {
			q.RawSig = a.sign(t, q.Quote)
		}
	})
	if edit != nil {
		ad, err := tpm2.DecodeAttestationData(ev.TPM.CertifyInfo)
		if err != nil {
			t.Fatal(err)
		}
		edit(ad)
		if ev.TPM.CertifyInfo, err = ad.Encode(); err != nil {
			t.Fatal(err)
		}
	}
	ev.TPM.CertifySignature = a.sign(t, ev.TPM.CertifyInfo)
}

// trust makes a the policy's only trusted AK.
func (a *softAK) trust(p *attest.Policy) {
	p.TrustedAKs = []crypto.PublicKey{&a.key.PublicKey}
}

// envKeyPublicArea is the public area of an environment key (the template
// the collector uses) holding k.
func envKeyPublicArea(t testing.TB, k *ecdsa.PublicKey) []byte {
	t.Helper()
	area := attest.EnvKeyTemplate()
	area.ECCParameters.Point = eccPoint(k)
	b, err := area.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
