package provenance

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/verify"
	"github.com/sigstore/sigstore/pkg/signature"
)

// MaxBundleSize bounds a bundle (provenance with its embedded evidence and
// certificate is ~150 KiB).
const MaxBundleSize = 4 << 20

// parsedBundle is a sigstore bundle holding a DSSE in-toto statement, parsed
// but NOT verified. The statement is decoded once, generically (numbers kept
// as written): fields are read from doc, and the canonical digest the
// response-time quote answers is computed from it (canonical.go).
type parsedBundle struct {
	b       *bundle.Bundle
	payload []byte
	doc     map[string]any
}

// parseBundle checks size and format, and parses the statement inside.
func parseBundle(raw []byte) (*parsedBundle, error) {
	if len(raw) > MaxBundleSize {
		return nil, fmt.Errorf("%w: bundle is %d bytes, limit %d", ErrTooLarge, len(raw), MaxBundleSize)
	}
	var b bundle.Bundle
	if err := b.UnmarshalJSON(raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	env, err := b.Envelope()
	if err != nil || env == nil {
		return nil, fmt.Errorf("%w: bundle holds no DSSE envelope (a message signature?)", ErrNotAttestedRunner)
	}
	raw0 := env.RawEnvelope()
	if raw0.PayloadType != InTotoPayloadType {
		return nil, fmt.Errorf("%w: payload type %q", ErrNotAttestedRunner, raw0.PayloadType)
	}
	payload, err := raw0.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	doc, err := decodeJSON(payload)
	if err != nil {
		return nil, err
	}
	if err := validateStatement(doc); err != nil {
		return nil, err
	}
	return &parsedBundle{b: &b, payload: payload, doc: doc}, nil
}

// validateStatement applies in-toto's Statement.Validate rules to the
// generic document.
func validateStatement(doc map[string]any) error {
	switch str(doc["_type"]) {
	case intoto.StatementTypeUri, "https://in-toto.io/Statement/v0.1":
	default:
		return fmt.Errorf("%w: statement type %q", ErrMalformed, str(doc["_type"]))
	}
	subjects := list(doc["subject"])
	if len(subjects) == 0 {
		return fmt.Errorf("%w: statement has no subject", ErrMalformed)
	}
	for _, s := range subjects {
		if len(obj(s)) == 0 || len(obj(obj(s)["digest"])) == 0 {
			return fmt.Errorf("%w: subject without digest", ErrMalformed)
		}
	}
	if str(doc["predicateType"]) == "" || obj(doc["predicate"]) == nil {
		return fmt.Errorf("%w: statement without predicate", ErrMalformed)
	}
	return nil
}

func (p *parsedBundle) predicateType() string     { return str(p.doc["predicateType"]) }
func (p *parsedBundle) predicate() map[string]any { return obj(p.doc["predicate"]) }
func (p *parsedBundle) subjects() []any           { return list(p.doc["subject"]) }

// verifySignature verifies the bundle's DSSE signature with exactly one
// trusted key and that digest is one of the statement's subjects.
func (p *parsedBundle) verifySignature(pub crypto.PublicKey, subjectSHA256 []byte) (*verify.VerificationResult, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	tm := root.NewTrustedPublicKeyMaterialFromMapping(map[string]*root.ExpiringKey{
		KeyID(spki): root.NewExpiringKey(v, timeZero, timeZero),
	})
	// The statement is parsed once, generically, by parseBundle: sigstore-go
	// need not parse it again into protobuf.
	verifier, err := verify.NewVerifier(tm, verify.WithNoObserverTimestamps(), verify.WithoutStatementPredicate())
	if err != nil {
		return nil, err
	}
	vr, err := verifier.Verify(p.b, verify.NewPolicy(verify.WithArtifactDigest("sha256", subjectSHA256), verify.WithKey()))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	return vr, nil
}

func (p *parsedBundle) hasSubject(sha256Digest []byte) bool {
	want := hex.EncodeToString(sha256Digest)
	for _, s := range p.subjects() {
		if str(obj(obj(s)["digest"])["sha256"]) == want {
			return true
		}
	}
	return false
}

// LoadTrustedRoots reads gate public keys (PEM "PUBLIC KEY" blocks, as
// served by the gate's GET /v1/roots) from a file.
func LoadTrustedRoots(path string) ([]crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	keys, err := ParseTrustedRoots(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

// ParseTrustedRoots parses PEM public keys. No key is an error.
func ParseTrustedRoots(b []byte) ([]crypto.PublicKey, error) {
	var keys []crypto.PublicKey
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "PUBLIC KEY" {
			return nil, fmt.Errorf("PEM block %q, want PUBLIC KEY", block.Type)
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, errors.New("no PEM public key")
	}
	return keys, nil
}
