package provenance

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"

	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/secure-systems-lab/go-securesystemslib/dsse"
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
	b *bundle.Bundle
	// env is b's DSSE envelope (b.Envelope re-encodes the payload on
	// every call: keep the one parse).
	env     *dsse.Envelope
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
	return &parsedBundle{b: &b, env: raw0, payload: payload, doc: doc}, nil
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
//
// An ECDSA key (every key this project signs with: environment, gate,
// image builder) is checked directly, as sigstore-go's key path does it,
// over the payload parseBundle already decoded: the bundle's key hint
// names this key, the envelope holds exactly one signature, and it is an
// ASN.1 ECDSA signature over SHA-256(PAE(payloadType, payload)) (DSSE
// v1). sigstore-go's Verifier would decode and parse the ~100 KiB
// statement twice more (verifyTwinsAgree in tests shows both agree).
// Other keys go through sigstore-go.
func (p *parsedBundle) verifySignature(pub crypto.PublicKey, subjectSHA256 []byte) (*verify.VerificationResult, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if ek, ok := pub.(*ecdsa.PublicKey); ok {
		return p.verifyECDSA(ek, KeyID(spki), subjectSHA256)
	}
	return p.verifySigstore(pub, spki, subjectSHA256)
}

func (p *parsedBundle) verifyECDSA(pub *ecdsa.PublicKey, keyID string, subjectSHA256 []byte) (*verify.VerificationResult, error) {
	vc, err := p.b.VerificationContent()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSignature, err)
	}
	if vc.Certificate() != nil || vc.PublicKey() == nil {
		return nil, fmt.Errorf("%w: the bundle carries no public-key hint", ErrSignature)
	}
	hint := vc.PublicKey().Hint()
	if hint != keyID {
		return nil, fmt.Errorf("%w: key hint %q is not the trusted key %s", ErrSignature, hint, keyID)
	}
	raw := p.env
	// A DSSE envelope in a Sigstore bundle holds exactly one signature.
	if len(raw.Signatures) != 1 {
		return nil, fmt.Errorf("%w: %d DSSE signatures, want 1", ErrSignature, len(raw.Signatures))
	}
	sig, err := base64.StdEncoding.DecodeString(raw.Signatures[0].Sig)
	if err != nil {
		return nil, fmt.Errorf("%w: signature is not base64", ErrSignature)
	}
	h := sha256.Sum256(dsse.PAE(raw.PayloadType, p.payload))
	if !ecdsa.VerifyASN1(pub, h[:], sig) {
		return nil, fmt.Errorf("%w: DSSE signature does not verify with key %s", ErrSignature, keyID)
	}
	if !p.hasSubject(subjectSHA256) {
		return nil, fmt.Errorf("%w: sha256:%x is not a subject of the signed statement", ErrSignature, subjectSHA256)
	}
	vr := verify.NewVerificationResult()
	id := []byte(hint)
	vr.Signature = &verify.SignatureVerificationResult{PublicKeyID: &id}
	vr.Statement = p.summary()
	return vr, nil
}

// summary is the statement without its predicate, as sigstore-go's
// WithoutStatementPredicate reports it.
func (p *parsedBundle) summary() *intoto.Statement {
	st := &intoto.Statement{Type: str(p.doc["_type"]), PredicateType: p.predicateType()}
	for _, s := range p.subjects() {
		d := map[string]string{}
		for alg, v := range obj(obj(s)["digest"]) {
			d[alg] = str(v)
		}
		st.Subject = append(st.Subject, &intoto.ResourceDescriptor{Name: str(obj(s)["name"]), Digest: d})
	}
	return st
}

// verifySigstore is verifySignature through sigstore-go's Verifier.
func (p *parsedBundle) verifySigstore(pub crypto.PublicKey, spki, subjectSHA256 []byte) (*verify.VerificationResult, error) {
	v, err := signature.LoadVerifier(pub, crypto.SHA256)
	if err != nil {
		return nil, err
	}
	tm := root.NewTrustedPublicKeyMaterialFromMapping(map[string]*root.ExpiringKey{
		KeyID(spki): root.NewExpiringKey(v, timeZero, timeZero),
	})
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
