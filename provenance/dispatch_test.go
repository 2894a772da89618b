package provenance_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// certifiedRogue returns a key the env's gate certified in place of the
// env's own key (same TPM's AK, image and agent), and that certificate:
// statements it signs carry quotes whose evidence names the TPM's key.
func certifiedRogue(t *testing.T, e *provenancetest.Env) (*ecdsa.PrivateKey, []byte) {
	t.Helper()
	rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	spki, err := x509.MarshalPKIXPublicKey(rogue.Public())
	if err != nil {
		t.Fatal(err)
	}
	return rogue, e.Reissue(t, func(c *provenance.EnvCertificate) { c.EnvKey = spki })
}

func TestDispatchEnvKeyMismatch(t *testing.T) {
	e := provenancetest.NewEnv(t)
	rogue, cert := certifiedRogue(t, e)
	enc, _ := e.Admission.Encode()
	d := &provenance.Dispatch{Job: e.Job, AdmissionEvidenceSH: digest(enc), EnvCert: cert}
	raw, err := provenance.SignDispatch(context.Background(), d, rogue, e.Machine.Collector)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := provenance.VerifyDispatch(raw, []crypto.PublicKey{e.GateKey.Public()}); !errors.Is(err, provenance.ErrEnvKeyMismatch) {
		t.Fatalf("dispatch quote for another environment key: got %v, want %v", err, provenance.ErrEnvKeyMismatch)
	}
}

func TestVerifyEnvKeyMismatch(t *testing.T) {
	e := provenancetest.NewEnv(t)
	rogue, cert := certifiedRogue(t, e)
	b := e.Build(map[string][]byte{"app.tar.gz": artifact})
	b.EnvCert = cert
	raw, err := provenance.Sign(context.Background(), b, rogue, e.Machine.Collector)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := provenance.Verify(raw, digest(artifact), e.Options()); !errors.Is(err, provenance.ErrEnvKeyMismatch) || !errors.Is(err, provenance.ErrEvidence) {
		t.Fatalf("response quote for another environment key: got %v, want %v and %v", err, provenance.ErrEnvKeyMismatch, provenance.ErrEvidence)
	}
}

func TestSignDispatchRefusesIncomplete(t *testing.T) {
	e := provenancetest.NewEnv(t)
	enc, _ := e.Admission.Encode()
	for name, d := range map[string]*provenance.Dispatch{
		"no environment certificate":            {Job: e.Job, AdmissionEvidenceSH: digest(enc)},
		"admission evidence digest not SHA-256": {Job: e.Job, AdmissionEvidenceSH: digest(enc)[:31], EnvCert: e.EnvCert},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := provenance.SignDispatch(context.Background(), d, e.Machine.Collector.Signer(), e.Machine.Collector); !errors.Is(err, provenance.ErrNoExpectation) {
				t.Fatalf("got %v, want %v", err, provenance.ErrNoExpectation)
			}
		})
	}
	valid := func() *provenance.Dispatch {
		return &provenance.Dispatch{Job: e.Job, AdmissionEvidenceSH: digest(enc), EnvCert: e.EnvCert}
	}
	t.Run("job record incomplete", func(t *testing.T) {
		d := valid()
		d.Job.Repository = ""
		if _, err := provenance.SignDispatch(context.Background(), d, e.Machine.Collector.Signer(), e.Machine.Collector); err == nil || !strings.Contains(err.Error(), "job record lacks repository") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("signer not P-256", func(t *testing.T) {
		_, ed, _ := ed25519.GenerateKey(rand.Reader)
		if _, err := provenance.SignDispatch(context.Background(), valid(), ed, e.Machine.Collector); err == nil || !strings.Contains(err.Error(), "want ECDSA P-256") {
			t.Fatalf("got %v", err)
		}
	})
	t.Run("no hardware quote", func(t *testing.T) {
		errTPM := errors.New("TPM: device busy")
		if _, err := provenance.SignDispatch(context.Background(), valid(), e.Machine.Collector.Signer(), failingQuoter{errTPM}); !errors.Is(err, errTPM) {
			t.Fatalf("got %v, want %v", err, errTPM)
		}
	})
}

// failingQuoter is a TPM that cannot quote.
type failingQuoter struct{ err error }

func (q failingQuoter) Collect(attest.Challenge) (*attest.Evidence, error) { return nil, q.err }

// TestVerifyDispatchRejections: a valid dispatch attestation with one
// thing broken. Edits are re-signed with the environment key (a
// compromised agent): only the hardware quote and the checks stop them.
func TestVerifyDispatchRejections(t *testing.T) {
	e := provenancetest.NewEnv(t)
	enc, _ := e.Admission.Encode()
	good, err := provenance.SignDispatch(context.Background(), &provenance.Dispatch{Job: e.Job, AdmissionEvidenceSH: digest(enc), EnvCert: e.EnvCert},
		e.Machine.Collector.Signer(), e.Machine.Collector)
	if err != nil {
		t.Fatal(err)
	}
	roots := []crypto.PublicKey{e.GateKey.Public()}
	if _, _, err := provenance.VerifyDispatch(good, roots); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	subject := func(st map[string]any) map[string]any { return st["subject"].([]any)[0].(map[string]any) }
	attributes := func(st map[string]any) []any { return st["predicate"].(map[string]any)["attributes"].([]any) }
	setAttributes := func(st map[string]any, a []any) { st["predicate"].(map[string]any)["attributes"] = a }
	without := func(attr string) func(map[string]any) {
		return func(st map[string]any) {
			var kept []any
			for _, a := range attributes(st) {
				if a.(map[string]any)["attribute"] != attr {
					kept = append(kept, a)
				}
			}
			setAttributes(st, kept)
		}
	}
	quote := func(st map[string]any) map[string]any {
		for _, a := range attributes(st) {
			if a := a.(map[string]any); a["attribute"] == provenance.AttrHardwareQuot {
				return a["evidence"].(map[string]any)
			}
		}
		t.Fatal("no dispatch quote")
		return nil
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		want error
	}{
		{"empty input", nil, provenance.ErrMalformed},
		{"signed by a key the gate never certified", func() []byte {
			rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			raw, err := provenance.SignDispatch(context.Background(), &provenance.Dispatch{Job: e.Job, AdmissionEvidenceSH: digest(enc), EnvCert: e.EnvCert},
				rogue, e.Machine.Collector)
			if err != nil {
				t.Fatal(err)
			}
			return raw
		}(), provenance.ErrSignature},
		{"provenance, not a dispatch", e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact})), provenance.ErrNotAttestedRunner},
		{"two subjects", resign(t, e, good, func(st map[string]any) { st["subject"] = append(st["subject"].([]any), subject(st)) }),
			provenance.ErrNotAttestedRunner},
		{"subject digest not hex", resign(t, e, good, func(st map[string]any) { subject(st)["digest"] = map[string]any{"sha256": "zz"} }),
			provenance.ErrMalformed},
		{"subject digest not SHA-256", resign(t, e, good, func(st map[string]any) {
			subject(st)["digest"] = map[string]any{"sha256": strings.Repeat("ab", 31)}
		}), provenance.ErrMalformed},
		{"subject digest not the build id's", resign(t, e, good, func(st map[string]any) { subject(st)["name"] = "another build" }),
			provenance.ErrMalformed},
		{"no environment certificate", resign(t, e, good, without(provenance.AttrCertified)), provenance.ErrUntrustedEnvironment},
		{"no dispatch quote", resign(t, e, good, without(provenance.AttrHardwareQuot)), provenance.ErrMissingEvidence},
		{"dispatch quote not evidence", resign(t, e, good, func(st map[string]any) {
			quote(st)["content"] = base64.StdEncoding.EncodeToString([]byte(`{"format":"x"}`))
		}), attest.ErrMalformedEvidence},
		// Attributes added after the quote was taken are covered by no
		// quote: only the dispatch quote itself is left out of the digest.
		{"unquoted hardware-quote attribute added", resign(t, e, good, func(st map[string]any) {
			setAttributes(st, append(attributes(st), map[string]any{"attribute": provenance.AttrHardwareQuot,
				"evidence": map[string]any{"name": "attested-runner/other", "digest": map[string]any{"sha256": strings.Repeat("00", 32)}}}))
		}), attest.ErrNonceMismatch},
		{"unquoted attribute named as the quote added", resign(t, e, good, func(st map[string]any) {
			setAttributes(st, append(attributes(st), map[string]any{"attribute": "BUILDENV_EXTRA",
				"evidence": map[string]any{"name": "attested-runner/dispatch-quote", "digest": map[string]any{"sha256": strings.Repeat("00", 32)}}}))
		}), attest.ErrNonceMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := provenance.VerifyDispatch(tc.raw, roots); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}
