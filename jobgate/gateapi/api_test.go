package gateapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
)

// TestVerifyDelivery: the signed admission answer verifies only with a
// pinned key, for the nonce and evidence the agent sent, with every field
// as the gate signed it.
func TestVerifyDelivery(t *testing.T) {
	gate, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	nonce, evidence := []byte("nonce-0123456789abcdef0123456789"), []byte(`{"evidence":1}`)
	sign := func(r *AdmitResponse) {
		sig, err := gate.Sign(rand.Reader, DeliveryDigest(nonce, evidence, r), crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		r.DeliverySignature = sig
	}
	valid := func() *AdmitResponse {
		r := &AdmitResponse{RunnerName: "attested-abc", RunnerID: 42, SealedJITConfig: []byte("sealed"), EnvironmentCertificate: []byte(`{"cert":1}`),
			Sigstore: &Sigstore{FulcioURL: "https://fulcio.example", RekorURL: "https://rekor.example"}}
		sign(r)
		return r
	}
	pinned := []crypto.PublicKey{other.Public(), gate.Public()}
	if err := VerifyDelivery(pinned, nonce, evidence, valid()); err != nil {
		t.Fatalf("valid answer: %v", err)
	}
	for name, c := range map[string]struct {
		keys            []crypto.PublicKey
		nonce, evidence []byte
		edit            func(*AdmitResponse)
	}{
		"no pinned key":             {keys: []crypto.PublicKey{}},
		"another gate's key":        {keys: []crypto.PublicKey{other.Public()}},
		"unsigned":                  {edit: func(r *AdmitResponse) { r.DeliverySignature = nil }},
		"sealed config swapped":     {edit: func(r *AdmitResponse) { r.SealedJITConfig = []byte("attacker's") }},
		"certificate swapped":       {edit: func(r *AdmitResponse) { r.EnvironmentCertificate = []byte(`{"cert":2}`) }},
		"runner renamed":            {edit: func(r *AdmitResponse) { r.RunnerName = "attested-abd" }},
		"runner id changed":         {edit: func(r *AdmitResponse) { r.RunnerID = 43 }},
		"answer for other nonce":    {nonce: []byte("nonce-other-456789abcdef0123456789")},
		"answer for other evidence": {evidence: []byte(`{"evidence":2}`)},
		"fulcio redirected":         {edit: func(r *AdmitResponse) { r.Sigstore.FulcioURL = "https://fulcio.attacker" }},
		"rekor redirected":          {edit: func(r *AdmitResponse) { r.Sigstore.RekorURL = "https://rekor.attacker" }},
		"issuer changed":            {edit: func(r *AdmitResponse) { r.Sigstore.OIDCIssuer = "https://issuer.attacker" }},
		"sigstore dropped":          {edit: func(r *AdmitResponse) { r.Sigstore = nil }},
		"signature truncated":       {edit: func(r *AdmitResponse) { r.DeliverySignature = r.DeliverySignature[:len(r.DeliverySignature)-1] }},
	} {
		t.Run(name, func(t *testing.T) {
			keys, n, ev := pinned, nonce, evidence
			if c.keys != nil {
				keys = c.keys
			}
			if c.nonce != nil {
				n = c.nonce
			}
			if c.evidence != nil {
				ev = c.evidence
			}
			r := valid()
			if c.edit != nil {
				c.edit(r)
			}
			if err := VerifyDelivery(keys, n, ev, r); !errors.Is(err, ErrDeliveryForged) {
				t.Fatalf("got %v, want ErrDeliveryForged", err)
			}
		})
	}
}
