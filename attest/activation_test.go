package attest_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/attest"
	"github.com/google/go-tpm/legacy/tpm2"
	"google.golang.org/protobuf/proto"
)

// akArea is the encoded public area of tmpl with key's public key.
func akArea(t testing.TB, tmpl tpm2.Public, key any) []byte {
	t.Helper()
	switch k := key.(type) {
	case *rsa.PublicKey:
		p := *tmpl.RSAParameters
		p.KeyBits = uint16(k.N.BitLen())
		p.ModulusRaw = k.N.Bytes()
		tmpl.RSAParameters = &p
	case *ecdsa.PublicKey:
		p := *tmpl.ECCParameters
		size := (k.Curve.Params().BitSize + 7) / 8
		raw, err := k.Bytes() // 0x04 || X || Y
		if err != nil {
			t.Fatal(err)
		}
		p.Point = tpm2.ECPoint{XRaw: raw[1 : 1+size], YRaw: raw[1+size:]}
		if k.Curve == elliptic.P384() {
			p.CurveID = tpm2.CurveNISTP384
		}
		tmpl.ECCParameters = &p
	}
	b, err := tmpl.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCheckAKPublic: restricted signing keys that stay in their TPM pass;
// each attribute or parameter that makes an AK something else fails with
// ErrAKAttributes, and malformed areas with their own errors.
func TestCheckAKPublic(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	rsa1024, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsaPub := &rsaKey(t, 0).PublicKey
	ecc := func(edit func(*tpm2.Public)) []byte {
		tmpl := client.AKTemplateECC()
		if edit != nil {
			edit(&tmpl)
		}
		return akArea(t, tmpl, ecKey.Public())
	}
	without := func(f tpm2.KeyProp) []byte { return ecc(func(p *tpm2.Public) { p.Attributes &^= f }) }
	var gce pb.Attestation
	raw, err := os.ReadFile("testdata/gotpmtools/gce-cos-85-nonce9009.pb")
	if err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(raw, &gce); err != nil {
		t.Fatal(err)
	}
	good := ecc(nil)
	for _, tc := range []struct {
		name string
		area []byte
		want error
	}{
		{name: "ECDSA P-256 AK", area: good},
		{name: "RSASSA AK", area: akArea(t, client.AKTemplateRSA(), rsaPub)},
		{name: "RSA-PSS AK", area: akArea(t, attesttest.AKTemplateRSAPSS(), rsaPub)},
		{name: "real GCE RSA AK", area: gce.GetAkPub()},
		{name: "not restricted", area: without(tpm2.FlagRestricted), want: attest.ErrAKAttributes},
		{name: "not a signing key", area: without(tpm2.FlagSign), want: attest.ErrAKAttributes},
		{name: "not fixedTPM", area: without(tpm2.FlagFixedTPM), want: attest.ErrAKAttributes},
		{name: "not fixedParent", area: without(tpm2.FlagFixedParent), want: attest.ErrAKAttributes},
		{name: "not sensitiveDataOrigin", area: without(tpm2.FlagSensitiveDataOrigin), want: attest.ErrAKAttributes},
		{name: "also a decryption key", area: ecc(func(p *tpm2.Public) { p.Attributes |= tpm2.FlagDecrypt }), want: attest.ErrAKAttributes},
		{name: "SHA-1 name", area: ecc(func(p *tpm2.Public) { p.NameAlg = tpm2.AlgSHA1 }), want: attest.ErrAKAttributes},
		{name: "no signature scheme", area: ecc(func(p *tpm2.Public) { p.ECCParameters.Sign = nil }), want: attest.ErrAKAttributes},
		{name: "SHA-384 scheme", area: ecc(func(p *tpm2.Public) { p.ECCParameters.Sign = &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA384} }), want: attest.ErrAKAttributes},
		{name: "ECC P-384 AK", area: akArea(t, client.AKTemplateECC(), p384.Public()), want: attest.ErrAKAttributes},
		{name: "RSA 1024 AK", area: akArea(t, client.AKTemplateRSA(), &rsa1024.PublicKey), want: attest.ErrAKAttributes},
		{name: "trailing byte", area: append(append([]byte(nil), good...), 0), want: attest.ErrMalformedEvidence},
		{name: "truncated", area: good[:len(good)-3], want: attest.ErrMalformedEvidence},
		{name: "garbage", area: []byte{0xff, 0xff, 0xff}, want: attest.ErrMalformedEvidence},
		{name: "oversized", area: make([]byte, attest.MaxAKPublicSize+1), want: attest.ErrTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ak, err := attest.CheckAKPublic(tc.area)
			if tc.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if match, err := ak.Name.MatchesPublic(ak.Public); err != nil || !match || len(ak.NameBytes()) != 34 {
					t.Fatalf("name %x does not name the area", ak.NameBytes())
				}
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestCredentialActivation runs both sides on the simulator: a TPM
// manufactured with an EK certificate (RSA and ECC EKs, ECC and RSA AKs)
// recovers the secret of a credential the gate side made for its AK under
// its certified EK; a credential for another AK, under another EK, or
// corrupted is refused by the TPM.
func TestCredentialActivation(t *testing.T) {
	ca, err := ekca.New("test EK CA")
	if err != nil {
		t.Fatal(err)
	}
	trust := &attest.EKTrust{Roots: []*x509.Certificate{ca.Cert}}
	for _, tc := range []struct {
		name string
		kind ekca.Kind
		ak   *tpm2.Public
	}{
		{"RSA EK, ECC AK", ekca.RSA, nil},
		{"ECC EK, RSA AK", ekca.ECC, ptr(client.AKTemplateRSA())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sim := attesttest.Simulator(t)
			defer sim.Close()
			c, err := attest.NewTPMCollector(sim, attest.TPMOptions{AKTemplate: tc.ak, SoftwareTPM: true})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if req, err := c.ActivationRequest(); err != nil || req != nil {
				t.Fatalf("a TPM without an EK certificate: %+v, %v", req, err)
			}
			der, err := ekca.Provision(sim, ca, tc.kind)
			if err != nil {
				t.Fatal(err)
			}
			req, err := c.ActivationRequest()
			if err != nil || req == nil || !bytes.Equal(req.EKCertificate, der) {
				t.Fatalf("activation request %+v, %v", req, err)
			}
			ek, err := attest.VerifyEKCertificate(req.EKCertificate, trust, time.Now())
			if err != nil {
				t.Fatal(err)
			}
			ak, err := attest.CheckAKPublic(req.AKPublic)
			if err != nil {
				t.Fatal(err)
			}
			secret := nonce(t)
			cred, err := attest.MakeCredential(ek.PublicKey, ak, secret)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.ActivateCredential(cred)
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("activation: %x, %v", got, err)
			}

			otherAK, err := attest.CheckAKPublic(akArea(t, client.AKTemplateECC(), mustECDSA(t).Public()))
			if err != nil {
				t.Fatal(err)
			}
			otherEK := any(&rsaKey(t, 2).PublicKey)
			if tc.kind == ekca.ECC {
				otherEK = mustECDSA(t).Public()
			}
			for _, bad := range []struct {
				name string
				cred func() *attest.Credential
			}{
				{"credential for another AK", func() *attest.Credential { return mustCred(t, ek.PublicKey, otherAK, secret) }},
				{"credential under another EK", func() *attest.Credential { return mustCred(t, otherEK, ak, secret) }},
				{"ID object flipped", func() *attest.Credential {
					c := mustCred(t, ek.PublicKey, ak, secret)
					c.IDObject[len(c.IDObject)-1] ^= 1
					return c
				}},
				{"encrypted secret flipped", func() *attest.Credential {
					c := mustCred(t, ek.PublicKey, ak, secret)
					c.EncryptedSecret[len(c.EncryptedSecret)-1] ^= 1
					return c
				}},
			} {
				t.Run(bad.name, func(t *testing.T) {
					if got, err := c.ActivateCredential(bad.cred()); err == nil {
						t.Fatalf("the TPM released %x", got)
					}
				})
			}
			for _, bad := range []*attest.Credential{
				{IDObject: []byte{0, 5, 1}, EncryptedSecret: cred.EncryptedSecret},
				{IDObject: cred.IDObject, EncryptedSecret: []byte{0}},
				{IDObject: make([]byte, 2000), EncryptedSecret: cred.EncryptedSecret},
				nil,
			} {
				if _, err := c.ActivateCredential(bad); !errors.Is(err, attest.ErrMalformedEvidence) && !errors.Is(err, attest.ErrTooLarge) {
					t.Errorf("malformed credential: %v", err)
				}
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func mustECDSA(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCred(t testing.TB, ek any, ak *attest.AKPublicArea, secret []byte) *attest.Credential {
	t.Helper()
	c, err := attest.MakeCredential(ek, ak, secret)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestMakeCredentialRefuses: a credential is made only for an AK with a
// name and a secret of 1 to 32 bytes, under an EK key credactivation can
// use; TPMAKPublic finds the AK only in TPM evidence that names one.
func TestMakeCredentialRefuses(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ak, err := attest.CheckAKPublic(akArea(t, client.AKTemplateECC(), ecKey.Public()))
	if err != nil {
		t.Fatal(err)
	}
	ek := &rsaKey(t, 0).PublicKey
	if c, err := attest.MakeCredential(ek, ak, make([]byte, 32)); err != nil || len(c.IDObject) == 0 || len(c.EncryptedSecret) == 0 {
		t.Fatalf("credential: %+v, %v", c, err)
	}
	for _, tc := range []struct {
		name   string
		ek     any
		ak     *attest.AKPublicArea
		secret []byte
		want   string
	}{
		{"no AK", ek, nil, []byte("s"), "no AK name"},
		{"an AK without a name", ek, &attest.AKPublicArea{}, []byte("s"), "no AK name"},
		{"no secret", ek, ak, nil, "want 1 to 32"},
		{"a secret over 32 bytes", ek, ak, make([]byte, 33), "want 1 to 32"},
		{"an EK that is no key", "not a key", ak, []byte("s"), "making the credential"},
	} {
		if c, err := attest.MakeCredential(tc.ek, tc.ak, tc.secret); err == nil || c != nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %+v, %v (want %q)", tc.name, c, err, tc.want)
		}
	}

	noAK, _ := proto.Marshal(&pb.Attestation{})
	for name, e := range map[string]*attest.Evidence{
		"no evidence":               nil,
		"TDX evidence":              {Kind: attest.KindTDX},
		"TPM kind without TPM":      {Kind: attest.KindTPM},
		"attestation not protobuf":  {Kind: attest.KindTPM, TPM: &attest.TPMEvidence{Attestation: []byte{0xff, 0xff, 0xff}}},
		"attestation without an AK": {Kind: attest.KindTPM, TPM: &attest.TPMEvidence{Attestation: noAK}},
	} {
		if b, err := e.TPMAKPublic(); !errors.Is(err, attest.ErrMalformedEvidence) || b != nil {
			t.Errorf("%s: %x, %v", name, b, err)
		}
	}
}
