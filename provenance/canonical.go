package provenance

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"unicode/utf8"

	"github.com/cyberphone/json-canonicalization/go/src/webpki.org/jsoncanonicalizer"
)

// decodeJSON decodes a JSON object generically, keeping numbers as written
// so that re-encoding does not change them.
func decodeJSON(b []byte) (map[string]any, error) {
	// RFC 8785 canonicalizes I-JSON (RFC 7493): UTF-8 only. Go's decoder
	// would replace invalid bytes with U+FFFD, so another implementation
	// would digest other text: refuse them instead.
	if !utf8.Valid(b) {
		return nil, fmt.Errorf("%w: statement is not valid UTF-8", ErrMalformed)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("%w: statement JSON: %v", ErrMalformed, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the statement", ErrMalformed)
	}
	return v, nil
}

// statementDigest is what a response-time quote answers: the SHA-256 of the
// statement with the quote removed (by remove, per statement kind), in its
// RFC 8785 (JSON Canonicalization Scheme) form: object keys sorted by
// UTF-16 code units, strings with JCS escaping, numbers in ECMAScript
// form, no whitespace. docs/build-type.md gives the algorithm step by
// step, so that any JCS implementation recomputes it. protojson output is
// deliberately unstable across runs, so the digest never depends on the
// exact bytes, only on the values. remove must not modify doc in place
// beyond the maps it copies (see copyPath).
func statementDigest(doc map[string]any, remove func(map[string]any) map[string]any) ([]byte, error) {
	canon, err := canonicalJSON(remove(doc))
	if err != nil {
		return nil, err
	}
	d := sha256.Sum256(canon)
	return d[:], nil
}

// canonicalJSON is the RFC 8785 form of a decoded JSON value. Go's
// encoding/json writes it as valid JSON (numbers as written), and
// cyberphone's jsoncanonicalizer, by the author of RFC 8785, canonicalizes
// that.
func canonicalJSON(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	canon, err := jsoncanonicalizer.Transform(b)
	if err != nil {
		return nil, fmt.Errorf("%w: RFC 8785 canonicalization: %v", ErrMalformed, err)
	}
	return canon, nil
}

// copyPath returns a copy of doc in which the maps along path are copies,
// so the last one can be edited without touching doc. Missing maps stop the
// walk and return what exists.
func copyPath(doc map[string]any, path ...string) (root, last map[string]any) {
	root = maps.Clone(doc)
	last = root
	for _, k := range path {
		next := obj(last[k])
		if next == nil {
			return root, nil
		}
		next = maps.Clone(next)
		last[k] = next
		last = next
	}
	return root, last
}

// Accessors for generic JSON: the zero value when absent or of another type.
func obj(v any) map[string]any { m, _ := v.(map[string]any); return m }
func list(v any) []any         { l, _ := v.([]any); return l }
func str(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	}
	return ""
}
func bytesField(v any) []byte {
	b, err := base64.StdEncoding.DecodeString(str(v))
	if err != nil {
		return nil
	}
	return b
}
