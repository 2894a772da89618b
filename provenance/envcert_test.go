package provenance_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// TestEnvCertCacheKeyFraming: the verification cache is keyed by the
// certificate's bytes and the trusted keys. Without length framing,
// (cert, [gate, other]) and (cert || SPKI(gate), [other]) hash the same
// bytes, so once the first verified, the second (not a bundle at all, and
// trusting only a key that never signed it) was served from the cache.
func TestEnvCertCacheKeyFraming(t *testing.T) {
	e := provenancetest.NewEnv(t)
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, err := provenance.VerifyEnvCert(e.EnvCert, []crypto.PublicKey{e.GateKey.Public(), other.Public()}); err != nil {
		t.Fatal(err)
	}
	gateSPKI, err := x509.MarshalPKIXPublicKey(e.GateKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	// The shifted bytes: the key as is (no framing at all), or with a
	// length prefix (keys framed, certificate not).
	framed := binary.BigEndian.AppendUint64(nil, uint64(len(gateSPKI)))
	for _, shift := range [][]byte{gateSPKI, append(framed, gateSPKI...)} {
		shifted := append(append([]byte(nil), e.EnvCert...), shift...)
		if c, err := provenance.VerifyEnvCert(shifted, []crypto.PublicKey{other.Public()}); !errors.Is(err, provenance.ErrUntrustedEnvironment) {
			t.Fatalf("bytes shifted from the keys into the certificate: got %+v, %v; want %v", c, err, provenance.ErrUntrustedEnvironment)
		}
	}
	// The genuine pair is still verified (and cached) as before.
	if _, err := provenance.VerifyEnvCert(e.EnvCert, []crypto.PublicKey{e.GateKey.Public(), other.Public()}); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyEnvCertRejections: statements the trusted gate's key signed
// that are not a valid environment certificate (the gate signs other
// statements too, launch VSAs among them; a certificate edited outside
// IssueEnvCert) are refused, each for its own reason.
func TestVerifyEnvCertRejections(t *testing.T) {
	e := provenancetest.NewEnv(t)
	roots := []crypto.PublicKey{e.GateKey.Public()}
	if _, err := provenance.VerifyEnvCert(e.EnvCert, roots); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	subject := func(st map[string]any) map[string]any { return st["subject"].([]any)[0].(map[string]any) }
	annotations := func(st map[string]any) map[string]any { return subject(st)["annotations"].(map[string]any) }
	predicate := func(st map[string]any) map[string]any { return st["predicate"].(map[string]any) }
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p384SPKI, err := x509.MarshalPKIXPublicKey(p384.Public())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(st map[string]any)
	}{
		{"another predicate type", func(st map[string]any) { st["predicateType"] = provenance.ProvenancePredicate }},
		{"two subjects", func(st map[string]any) { st["subject"] = append(st["subject"].([]any), subject(st)) }},
		{"subject not an environment", func(st map[string]any) { subject(st)["name"] = "app.tar.gz" }},
		{"subject digest not the key's", func(st map[string]any) {
			subject(st)["digest"] = map[string]any{"sha256": strings.Repeat("ab", 32)}
		}},
		{"no key in the subject", func(st map[string]any) {
			delete(subject(st), "content")
			subject(st)["digest"] = map[string]any{"sha256": attest.KeyDigest(nil)}
		}},
		{"environment key not P-256", func(st map[string]any) {
			subject(st)["content"] = base64.StdEncoding.EncodeToString(p384SPKI)
			subject(st)["digest"] = map[string]any{"sha256": attest.KeyDigest(p384SPKI)}
		}},
		{"unknown annotation", func(st map[string]any) { annotations(st)["admin"] = true }},
		{"verification FAILED", func(st map[string]any) { predicate(st)["verificationResult"] = "FAILED" }},
		{"verifier is another gate", func(st map[string]any) {
			predicate(st)["verifier"] = map[string]any{"id": "https://other-gate.example.test"}
		}},
		{"two verified levels", func(st map[string]any) {
			predicate(st)["verifiedLevels"] = []any{provenance.LevelName(0), provenance.LevelName(3)}
		}},
		{"verified level is not the certified one", func(st map[string]any) {
			predicate(st)["verifiedLevels"] = []any{provenance.LevelName(3)}
		}},
		{"no gate id", func(st map[string]any) {
			annotations(st)["gateId"] = ""
			predicate(st)["verifier"] = map[string]any{"id": ""}
		}},
		{"no runner name", func(st map[string]any) { annotations(st)["runnerName"] = "" }},
		{"no builder id", func(st map[string]any) { annotations(st)["builderId"] = "" }},
		{"not issued", func(st map[string]any) { annotations(st)["issuedAt"] = time.Time{}.Format(time.RFC3339) }},
		{"empty validity", func(st map[string]any) { annotations(st)["notAfter"] = annotations(st)["issuedAt"] }},
		{"no image", func(st map[string]any) { annotations(st)["image"].(map[string]any)["id"] = "" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := signEdited(t, e.EnvCert, e.GateKey, tc.edit)
			if c, err := provenance.VerifyEnvCert(raw, roots); !errors.Is(err, provenance.ErrUntrustedEnvironment) {
				t.Fatalf("got %+v, %v; want %v", c, err, provenance.ErrUntrustedEnvironment)
			}
		})
	}
}

// TestIssueEnvCertRefusesIncomplete: the gate signs no certificate that
// VerifyEnvCert would refuse.
func TestIssueEnvCertRefusesIncomplete(t *testing.T) {
	e := provenancetest.NewEnv(t)
	if _, err := provenance.IssueEnvCert(context.Background(), e.GateKey, e.Cert); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	for name, edit := range map[string]func(*provenance.EnvCertificate){
		"no gate id":            func(c *provenance.EnvCertificate) { c.GateID = "" },
		"no environment key":    func(c *provenance.EnvCertificate) { c.EnvKey = nil },
		"environment key junk":  func(c *provenance.EnvCertificate) { c.EnvKey = []byte("not a key") },
		"no runner name":        func(c *provenance.EnvCertificate) { c.RunnerName = "" },
		"no builder id":         func(c *provenance.EnvCertificate) { c.BuilderID = "" },
		"not issued":            func(c *provenance.EnvCertificate) { c.IssuedAt = time.Time{} },
		"empty validity":        func(c *provenance.EnvCertificate) { c.NotAfter = c.IssuedAt },
		"validity ends earlier": func(c *provenance.EnvCertificate) { c.NotAfter = c.IssuedAt.Add(-time.Second) },
		"no image":              func(c *provenance.EnvCertificate) { c.Image.ID = "" },
		"no hardware path":      func(c *provenance.EnvCertificate) { c.Hardware = "" },
		"level 4":               func(c *provenance.EnvCertificate) { c.Level = 4 },
		// Level 3 is earned by a TEE report: a TPM certificate cannot say 3.
		"level 3 from a TPM": func(c *provenance.EnvCertificate) { c.Level, c.Hardware, c.SoftwareTPM = 3, attest.HardwareTPM, false },
		"TDX level 3 without its collateral": func(c *provenance.EnvCertificate) {
			c.Level, c.Hardware, c.SoftwareTPM, c.TDXCollateral = 3, attest.HardwareTDX, false, nil
		},
		"SEV-SNP level 3 without the report's verdict": func(c *provenance.EnvCertificate) {
			c.Level, c.Hardware, c.SoftwareTPM, c.SEVSNP = 3, attest.HardwareSEVSNP, false, nil
			c.Image.SNPMeasurements = []attest.Hex{make([]byte, 48)}
		},
		"SEV-SNP level 3 without the image's SEV-SNP measurements": func(c *provenance.EnvCertificate) {
			c.Level, c.Hardware, c.SoftwareTPM, c.SEVSNP = 3, attest.HardwareSEVSNP, false, &attest.SNPClaims{Binding: attest.SNPBindingAzureHCL}
			c.Image.SNPMeasurements = nil
		},
		"SEV-SNP level 3 without its binding": func(c *provenance.EnvCertificate) {
			c.Level, c.Hardware, c.SoftwareTPM, c.SEVSNP = 3, attest.HardwareSEVSNP, false, &attest.SNPClaims{}
			c.Image.SNPMeasurements = []attest.Hex{make([]byte, 48)}
		},
	} {
		t.Run(name, func(t *testing.T) {
			c := *e.Cert
			edit(&c)
			if _, err := provenance.IssueEnvCert(context.Background(), e.GateKey, &c); !errors.Is(err, provenance.ErrNoExpectation) {
				t.Fatalf("got %v, want %v", err, provenance.ErrNoExpectation)
			}
		})
	}
}
