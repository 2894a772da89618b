package provenance_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"testing"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// TestSignatureTwinsAgree: the direct ECDSA DSSE check and sigstore-go's
// Verifier accept the same bundle and refuse each broken one (one thing
// broken at a time), the direct one with ErrSignature.
func TestSignatureTwinsAgree(t *testing.T) {
	e := provenancetest.NewEnv(t)
	raw := e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact}))
	envKey, ok := e.Machine.Collector.Signer().Public().(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("environment key is %T", e.Machine.Collector.Signer().Public())
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edit := func(f func(env map[string]any, b map[string]any)) []byte {
		var b map[string]any
		if err := json.Unmarshal(raw, &b); err != nil {
			t.Fatal(err)
		}
		f(b["dsseEnvelope"].(map[string]any), b)
		out, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	sigs := func(env map[string]any) []any { return env["signatures"].([]any) }
	for _, tc := range []struct {
		name    string
		bundle  []byte
		key     *ecdsa.PublicKey
		subject []byte
		ok      bool
	}{
		{"valid", raw, envKey, digest(artifact), true},
		{"another subject", raw, envKey, digest([]byte("other")), false},
		{"another key", raw, &other.PublicKey, digest(artifact), false},
		{"signature altered", edit(func(env, _ map[string]any) {
			s := sigs(env)[0].(map[string]any)
			b, _ := base64.StdEncoding.DecodeString(s["sig"].(string))
			b[len(b)-1] ^= 1
			s["sig"] = base64.StdEncoding.EncodeToString(b)
		}), envKey, digest(artifact), false},
		{"two signatures", edit(func(env, _ map[string]any) { env["signatures"] = append(sigs(env), sigs(env)[0]) }), envKey, digest(artifact), false},
		{"payload altered", edit(func(env, _ map[string]any) {
			p, _ := base64.StdEncoding.DecodeString(env["payload"].(string))
			var st map[string]any
			json.Unmarshal(p, &st)
			st["predicateType"] = "https://slsa.dev/provenance/v1?"
			p, _ = json.Marshal(st)
			env["payload"] = base64.StdEncoding.EncodeToString(p)
		}), envKey, digest(artifact), false},
		{"key hint of another key", edit(func(_, b map[string]any) {
			b["verificationMaterial"].(map[string]any)["publicKey"] = map[string]any{"hint": "AAAA"}
		}), envKey, digest(artifact), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			direct, sig := provenance.VerifySignatureTwinsForTest(tc.bundle, tc.key, tc.subject)
			if (direct == nil) != tc.ok || (sig == nil) != tc.ok {
				t.Fatalf("direct %v, sigstore-go %v, want ok=%v", direct, sig, tc.ok)
			}
			if !tc.ok && !errors.Is(direct, provenance.ErrSignature) {
				t.Errorf("direct: %v is not ErrSignature", direct)
			}
		})
	}
}
