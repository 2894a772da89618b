package provenance_test

import (
	"context"
	"crypto"
	"os"
	"testing"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

func FuzzVerify(f *testing.F) {
	e := provenancetest.NewEnv(f)
	good := e.Sign(f, e.Build(map[string][]byte{"app.tar.gz": artifact}))
	f.Add(good)
	for _, name := range []string{"testdata/sigstore-go-dsse.sigstore.json", "testdata/npm-sigstore-js-2.0.0-provenance.sigstore.json"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	opts := e.Options()
	d := digest(artifact)
	f.Fuzz(func(t *testing.T, raw []byte) {
		r, err := provenance.Verify(raw, d, opts)
		if err == nil && string(raw) != string(good) {
			// Anything else that verifies must at least name our job.
			if r.Job.Repository != e.Job.Repository {
				t.Fatalf("verified a bundle for %q", r.Job.Repository)
			}
		}
	})
}

func FuzzVerifyEnvCert(f *testing.F) {
	e := provenancetest.NewEnv(f)
	f.Add(e.EnvCert)
	roots := []crypto.PublicKey{e.GateKey.Public()}
	f.Fuzz(func(t *testing.T, raw []byte) {
		_, _ = provenance.VerifyEnvCert(raw, roots)
	})
}

func FuzzParseTrustedRoots(f *testing.F) {
	f.Add([]byte("-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := provenance.ParseTrustedRoots(b)
		if err == nil && len(keys) == 0 {
			t.Fatal("no key and no error")
		}
	})
}

func FuzzVerifyImage(f *testing.F) {
	key := imageKey(f)
	good, err := provenance.SignImage(context.Background(), imageBuild(f), key)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	for _, name := range []string{"testdata/sigstore-go-dsse.sigstore.json", "testdata/npm-sigstore-js-2.0.0-provenance.sigstore.json"} {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	trusted := []crypto.PublicKey{key.Public()}
	f.Fuzz(func(t *testing.T, raw []byte) {
		v, err := provenance.VerifyImage(raw, trusted)
		if err == nil && (v.ReferenceValues == nil || len(v.Subjects) == 0) {
			t.Fatal("verified image provenance without reference values or subjects")
		}
	})
}
