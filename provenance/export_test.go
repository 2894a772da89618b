package provenance

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
)

// SkipIdentityCheckForTest makes SignKeyless sign under any certificate
// identity, as a subverted agent could.
func SkipIdentityCheckForTest(k *Keyless) { k.unsafeSkipIdentityCheck = true }

// SignPayloadForTest exposes signPayload to the tests.
var SignPayloadForTest = signPayload

// CanonicalJSONForTest decodes any JSON value the way statements are
// decoded and returns its RFC 8785 form.
func CanonicalJSONForTest(b []byte) ([]byte, error) {
	v, err := decodeAnyForTest(b)
	if err != nil {
		return nil, err
	}
	return canonicalJSON(v)
}

// decodeAnyForTest decodes any JSON value, numbers as written.
func decodeAnyForTest(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	return v, err
}

// StatementDigestForTest is the digest a provenance bundle's response
// quote must answer.
func StatementDigestForTest(bundle []byte) ([]byte, error) {
	p, err := parseBundle(bundle)
	if err != nil {
		return nil, err
	}
	return statementDigest(p.doc, provenanceQuote.remove)
}

// VerifySignatureTwinsForTest verifies a bundle's signature both ways:
// the direct ECDSA path and sigstore-go's Verifier.
func VerifySignatureTwinsForTest(bundle []byte, pub *ecdsa.PublicKey, subject []byte) (direct, sigstore error) {
	p, err := parseBundle(bundle)
	if err != nil {
		return err, err
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return err, err
	}
	_, direct = p.verifyECDSA(pub, KeyID(spki), subject)
	_, sigstore = p.verifySigstore(pub, spki, subject)
	return direct, sigstore
}

// CanonicalJSONOracleForTest is the RFC 8785 form by cyberphone's
// whole-document Transform over Go's encoding of the decoded value: the
// path canonicalJSON replaced, kept as the oracle.
func CanonicalJSONOracleForTest(b []byte) ([]byte, error) {
	v, err := decodeAnyForTest(b)
	if err != nil {
		return nil, err
	}
	m, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsoncanonicalizer.Transform(m)
}
