package provenance_test

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// TestCanonicalJSONVectors: the JCS test data of cyberphone's reference
// implementation (testdata/jcs, by the author of RFC 8785: key order by
// UTF-16 code units, string escapes, ES6 numbers), through the same decode
// and canonicalize path statements take.
func TestCanonicalJSONVectors(t *testing.T) {
	ins, err := filepath.Glob("testdata/jcs/*.in.json")
	if err != nil || len(ins) < 6 {
		t.Fatalf("test vectors: %v %v", ins, err)
	}
	for _, in := range ins {
		name := strings.TrimSuffix(filepath.Base(in), ".in.json")
		t.Run(name, func(t *testing.T) {
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(in, ".in.json") + ".out.json")
			if err != nil {
				t.Fatal(err)
			}
			got, err := provenance.CanonicalJSONForTest(src)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != strings.TrimRight(string(want), "\n") {
				t.Errorf("got\n%s\nwant\n%s", got, want)
			}
		})
	}
}

// TestCanonicalJSONNumbers: RFC 8785 Appendix B, IEEE-754 doubles and
// their canonical text, each written in JSON the long way round.
func TestCanonicalJSONNumbers(t *testing.T) {
	for _, tc := range []struct {
		bits uint64
		want string
	}{
		{0x0000000000000000, "0"},
		{0x8000000000000000, "0"},
		{0x0000000000000001, "5e-324"},
		{0x8000000000000001, "-5e-324"},
		{0x7fefffffffffffff, "1.7976931348623157e+308"},
		{0xffefffffffffffff, "-1.7976931348623157e+308"},
		{0x4340000000000000, "9007199254740992"},
		{0xc340000000000000, "-9007199254740992"},
		{0x4430000000000000, "295147905179352830000"},
		{0x44b52d02c7e14af5, "9.999999999999997e+22"},
		{0x44b52d02c7e14af6, "1e+23"},
		{0x44b52d02c7e14af7, "1.0000000000000001e+23"},
		{0x444b1ae4d6e2ef4e, "999999999999999700000"},
		{0x444b1ae4d6e2ef4f, "999999999999999900000"},
		{0x444b1ae4d6e2ef50, "1e+21"},
		{0x3eb0c6f7a0b5ed8c, "9.999999999999997e-7"},
		{0x3eb0c6f7a0b5ed8d, "0.000001"},
		{0x41b3de4355555553, "333333333.3333332"},
		{0x41b3de4355555554, "333333333.33333325"},
		{0x41b3de4355555555, "333333333.3333333"},
		{0x41b3de4355555556, "333333333.3333334"},
		{0x41b3de4355555557, "333333333.33333343"},
		{0xbecbf647612f3696, "-0.0000033333333333333333"},
		{0x43143ff3c1cb0959, "1424953923781206.2"},
	} {
		f := math.Float64frombits(tc.bits)
		// 'e' with 17 digits: never the canonical spelling.
		in := `{"n":` + strconv.FormatFloat(f, 'e', 16, 64) + `}`
		got, err := provenance.CanonicalJSONForTest([]byte(in))
		if err != nil {
			t.Errorf("%016x: %v", tc.bits, err)
			continue
		}
		if want := `{"n":` + tc.want + `}`; string(got) != want {
			t.Errorf("%016x (%s): got %s, want %s", tc.bits, in, got, want)
		}
	}
}

// TestStatementDigestInvalidUTF8: RFC 8785 is defined over I-JSON; a
// statement with bytes that are not UTF-8 is refused, not repaired (another
// implementation would digest other text).
func TestStatementDigestInvalidUTF8(t *testing.T) {
	e := provenancetest.NewEnv(t)
	good := e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact}))
	bad := resignRaw(t, e, good, func(payload []byte) []byte {
		return []byte(strings.Replace(string(payload), `"octocat"`, "\"octo\xffcat\"", 1))
	})
	if _, err := provenance.Verify(bad, digest(artifact), e.Options()); !errors.Is(err, provenance.ErrMalformed) || !strings.Contains(err.Error(), "UTF-8") {
		t.Fatalf("got %v, want ErrMalformed (not UTF-8)", err)
	}
}

// TestStatementNotOneJSONObject: a signed payload that is not JSON, is a
// statement followed by more JSON, or holds a number outside IEEE 754
// doubles (no RFC 8785 form), is refused as such: a verifier in another
// language might read the second value, or none, or another number.
func TestStatementNotOneJSONObject(t *testing.T) {
	e := provenancetest.NewEnv(t)
	good := e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact}))
	for _, tc := range []struct {
		name, msg string
		edit      func([]byte) []byte
	}{
		{"not JSON", "statement JSON", func([]byte) []byte { return []byte("not json") }},
		{"a second object after the statement", "trailing data", func(p []byte) []byte { return append(p, []byte(`{"_type":"x"}`)...) }},
		{"a number RFC 8785 cannot write", "RFC 8785", func(p []byte) []byte { return append([]byte(`{"n":[1e400],`), p[1:]...) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := provenance.Verify(resignRaw(t, e, good, tc.edit), digest(artifact), e.Options())
			if !errors.Is(err, provenance.ErrMalformed) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("got %v, want ErrMalformed (%s)", err, tc.msg)
			}
		})
	}
}

// TestBuildTypeV1Refused: format v1 bundles (a digest over Go's
// encoding/json) are refused by name, not verified with another digest.
func TestBuildTypeV1Refused(t *testing.T) {
	e := provenancetest.NewEnv(t)
	good := e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact}))
	v1 := resign(t, e, good, func(st map[string]any) {
		st["predicate"].(map[string]any)["buildDefinition"].(map[string]any)["buildType"] = provenance.BuildTypeV1
	})
	_, err := provenance.Verify(v1, digest(artifact), e.Options())
	if !errors.Is(err, provenance.ErrNotAttestedRunner) || !strings.Contains(err.Error(), "RFC 8785") {
		t.Fatalf("got %v, want ErrNotAttestedRunner naming the format change", err)
	}
}

// TestStatementDigestIndependent re-checks one bundle with an independent
// implementation of the digest (testdata/jcs_digest.py: Python's json and a
// canonicalizer written from RFC 8785): its digest must be the one the
// response-time quote answers.
func TestStatementDigestIndependent(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("python3 not installed: the independent digest cannot run")
	}
	e := provenancetest.NewEnv(t)
	b := e.Build(map[string][]byte{"app.tar.gz": artifact, "docs/ünïcode €.txt": []byte("x")})
	b.Labels = append(b.Labels, "</script>&\u2028", "tab\there")
	raw := e.Sign(t, b)
	path := filepath.Join(t.TempDir(), "b.sigstore.json")
	if err := os.WriteFile(path, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(py, "testdata/jcs_digest.py", path).CombinedOutput()
	if err != nil {
		t.Fatalf("jcs_digest.py: %v\n%s", err, out)
	}
	pyDigest, err := hex.DecodeString(strings.TrimSpace(string(out)))
	if err != nil || len(pyDigest) != 32 {
		t.Fatalf("jcs_digest.py printed %q", out)
	}
	goDigest, err := provenance.StatementDigestForTest(raw)
	if err != nil {
		t.Fatal(err)
	}
	if hex.EncodeToString(goDigest) != hex.EncodeToString(pyDigest) {
		t.Fatalf("Go digest %x, Python digest %x", goDigest, pyDigest)
	}
	// The quote in the bundle answers the Python digest.
	ev := responseEvidence(t, raw)
	p := *e.Machine.Policy
	p.AllowSoftwareTPMUnsafe = true
	if _, err := attest.Verify(ev, attest.StatementChallenge(pyDigest), &p); err != nil {
		t.Fatalf("the response quote does not answer the independent digest: %v", err)
	}
}

// responseEvidence extracts the response-time evidence from a bundle.
func responseEvidence(t *testing.T, raw []byte) *attest.Evidence {
	t.Helper()
	var content string
	editPayload(t, raw, func(st map[string]any) {
		for _, bp := range byproducts(st) {
			if m := bp.(map[string]any); m["name"] == provenance.ResponseQuoteProduct {
				content = m["content"].(string)
			}
		}
	})
	var b []byte
	if err := json.Unmarshal([]byte(`"`+content+`"`), &b); err != nil {
		t.Fatal(err)
	}
	ev, err := attest.DecodeEvidence(b)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// resignRaw rewrites the statement's bytes with edit and signs them again
// with the environment key.
func resignRaw(t testing.TB, e *provenancetest.Env, raw []byte, edit func([]byte) []byte) []byte {
	t.Helper()
	var b struct {
		DSSE struct {
			Payload []byte `json:"payload"`
		} `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	out, err := provenance.SignPayloadForTest(context.Background(), edit(b.DSSE.Payload), e.Machine.Collector.Signer())
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// FuzzCanonicalJSON: the direct RFC 8785 encoder writes exactly what
// cyberphone's reference Transform writes for every JSON object, refuses
// what it refuses (seeded with the JCS vectors and a statement-shaped
// document), and never panics.
func FuzzCanonicalJSON(f *testing.F) {
	ins, _ := filepath.Glob("testdata/jcs/*.in.json")
	for _, in := range ins {
		b, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	// Keys whose UTF-16 order differs from their UTF-8 order (a surrogate
	// pair sorts before U+FB33), escapes, numbers.
	f.Add([]byte(`{"\u20ac":1,"\ud83d\ude00":2,"\ufb33":3,"a\u0000b":"\u001f\u007f\u2028<>&","n":[-0.0,1E-7,123456789012345678901234567890]}`))
	f.Add([]byte(`{"n":[1e400]}`))
	f.Add([]byte(`{"\ud800\udc00":1,"a":2,"\uffff":3}`)) // U+10000 sorts after "a" and before U+FFFF
	f.Add([]byte(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"00"}}],"predicate":{"x":null,"y":true}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var top any
		if json.Unmarshal(b, &top) != nil {
			return
		}
		if _, ok := top.(map[string]any); !ok {
			return // statements are objects; the oracle takes only objects
		}
		want, errOracle := provenance.CanonicalJSONOracleForTest(b)
		got, err := provenance.CanonicalJSONForTest(b)
		if (errOracle != nil) != (err != nil) {
			t.Fatalf("input %q: oracle error %v, ours %v", b, errOracle, err)
		}
		if err != nil {
			return
		}
		if string(got) != string(want) {
			t.Fatalf("input %q:\n got %s\nwant %s", b, got, want)
		}
	})
}
