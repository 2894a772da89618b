package jobgate_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// FuzzAdmitBody sends arbitrary bodies to the admission endpoint, seeded
// with a real admission request: whatever arrives, the gate answers 4xx/5xx
// or admits, never panics, and mints nothing for a body it rejects.
func FuzzAdmitBody(f *testing.F) {
	h := newHarnessF(f)
	nonce, ev := h.evidence(context.Background())
	seed, _ := jsonMarshal(gateapi.AdmitRequest{Nonce: nonce, Evidence: ev})
	f.Add(seed)
	f.Add([]byte(`{"nonce":"AAAA","evidence":{"format":"` + attest.EvidenceFormat + `","kind":"tpm"}}`))
	f.Add([]byte(`{}`))
	// An EK activation request and answer: a real swtpm_setup EK
	// certificate and the simulator's real AK public area.
	ek, err := os.ReadFile("../attest/testdata/swtpm/ek-rsa2048.der")
	if err != nil {
		f.Fatal(err)
	}
	decoded, err := attest.DecodeEvidence(ev)
	if err != nil {
		f.Fatal(err)
	}
	ak, err := decoded.TPMAKPublic()
	if err != nil {
		f.Fatal(err)
	}
	act := &gateapi.Activation{EKCertificate: ek, AKPublic: ak}
	chSeed, _ := jsonMarshal(gateapi.ChallengeRequest{Activation: act})
	f.Add(chSeed)
	adSeed, _ := jsonMarshal(gateapi.AdmitRequest{Nonce: nonce, Evidence: ev, Activation: act, ActivationSecret: make([]byte, 32)})
	f.Add(adSeed)
	handler := h.gate.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		mints := h.gh.JITMints()
		for _, path := range []string{gateapi.PathAdmit, gateapi.PathDeregister, gateapi.PathChallenge} {
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body)))
			if rec.Code == http.StatusOK && path == gateapi.PathDeregister {
				t.Fatalf("deregistration accepted for a fuzzed body: %s", rec.Body)
			}
		}
		if h.gh.JITMints() > mints+1 {
			t.Fatal("more than one runner for one body")
		}
	})
}

func FuzzLoadConfig(f *testing.F) {
	f.Add([]byte(`{"listen":"127.0.0.1:8080","gateId":"g","builderId":"b","dataDir":"d","signingKey":"k",
"github":{"appId":1,"installationId":2,"privateKey":"p","org":"o","labels":["self-hosted"]},
"policy":{"referenceValues":["rv.json"],"trustedAKs":["ak.pem"]},"ttl":{"nonce":"60s"}}`))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := jobgate.LoadConfig(p)
		if err == nil && c.Validate() != nil {
			t.Fatal("loaded a config that does not validate")
		}
	})
}
