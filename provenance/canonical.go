package provenance

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"unicode/utf16"
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

// canonicalJSON is the RFC 8785 form of a decoded JSON value (what
// decodeJSON returns: maps, slices, strings, json.Number, bools, nil),
// written directly: object members sorted by the UTF-16 code units of
// their names, strings escaped as ECMAScript's JSON.stringify does (only
// '"', '\\' and controls below U+0020), numbers in ECMAScript form
// (cyberphone's NumberToJSON, by the author of RFC 8785), no whitespace.
// FuzzCanonicalJSON holds it to cyberphone's whole-document Transform.
func canonicalJSON(v any) ([]byte, error) {
	b, err := appendCanonical(make([]byte, 0, 4096), v)
	if err != nil {
		return nil, fmt.Errorf("%w: RFC 8785 canonicalization: %v", ErrMalformed, err)
	}
	return b, nil
}

func appendCanonical(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case string:
		return appendCanonicalString(b, x), nil
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil {
			return nil, fmt.Errorf("number %q: %v", x, err)
		}
		return appendCanonicalNumber(b, f)
	case float64:
		return appendCanonicalNumber(b, x)
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendCanonical(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareUTF16)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendCanonicalString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendCanonical(b, x[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	}
	return nil, fmt.Errorf("value of type %T", v)
}

func appendCanonicalNumber(b []byte, f float64) ([]byte, error) {
	s, err := jsoncanonicalizer.NumberToJSON(f)
	if err != nil {
		return nil, err
	}
	return append(b, s...), nil
}

// appendCanonicalString writes s (valid UTF-8: decodeJSON refuses
// anything else) as RFC 8785 does.
func appendCanonicalString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\b':
			b = append(b, '\\', 'b')
		case '\f':
			b = append(b, '\\', 'f')
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

const hexDigits = "0123456789abcdef"

// compareUTF16 orders strings by their UTF-16 code units (RFC 8785 3.2.3):
// byte order, except that a character above U+FFFF (a surrogate pair,
// D800-DFFF) sorts before U+E000-U+FFFF.
func compareUTF16(a, b string) int {
	for a != "" && b != "" {
		ra, na := utf8.DecodeRuneInString(a)
		rb, nb := utf8.DecodeRuneInString(b)
		if ra != rb {
			return cmp.Compare(utf16Key(ra), utf16Key(rb))
		}
		a, b = a[na:], b[nb:]
	}
	return cmp.Compare(len(a), len(b))
}

// utf16Key is the first UTF-16 code unit of r, with the rest of r below it
// for runes that share it (a pair's high surrogate).
func utf16Key(r rune) uint32 {
	if r >= 0x10000 {
		hi, lo := utf16.EncodeRune(r)
		return uint32(hi)<<16 | uint32(lo)
	}
	return uint32(r) << 16
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
