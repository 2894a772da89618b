package gateapi

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"
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
	edKey, _, _ := ed25519.GenerateKey(rand.Reader)
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
		"pinned key not ECDSA":      {keys: []crypto.PublicKey{edKey}},
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

// TestDeregisterMessage: the signed deregistration message changes with
// every field, is domain-separated, and names the signing time in UTC
// (the same instant in another zone is the same message).
func TestDeregisterMessage(t *testing.T) {
	at := time.Date(2026, 11, 29, 12, 0, 0, 123, time.UTC)
	base := DeregisterMessage("attested-abc", "done", "job completed", at)
	if !bytes.HasPrefix(base, []byte("attested-runner/v2/deregister\n")) {
		t.Fatalf("message %q lacks the domain", base)
	}
	for name, m := range map[string][]byte{
		"runner":  DeregisterMessage("attested-abd", "done", "job completed", at),
		"outcome": DeregisterMessage("attested-abc", "failed", "job completed", at),
		"reason":  DeregisterMessage("attested-abc", "done", "job failed", at),
		"time":    DeregisterMessage("attested-abc", "done", "job completed", at.Add(time.Nanosecond)),
		"shifted": DeregisterMessage("attested-abc", "", "done\njob completed", at),
	} {
		if bytes.Equal(m, base) {
			t.Errorf("another %s, the same message %q", name, m)
		}
	}
	if m := DeregisterMessage("attested-abc", "done", "job completed", at.In(time.FixedZone("CET", 3600))); !bytes.Equal(m, base) {
		t.Errorf("the same instant in another zone: %q, want %q", m, base)
	}
}
