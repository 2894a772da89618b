package provenance_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
	"github.com/google/go-cmp/cmp"
	"github.com/sigstore/sigstore-go/pkg/bundle"
)

var artifact = []byte("the artifact built by the job\n")

func digest(b []byte) []byte { d := sha256.Sum256(b); return d[:] }

func TestSignVerify(t *testing.T) {
	e := provenancetest.NewEnv(t)
	raw := e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact}))

	// Format conformance: sigstore-go's own loader takes it unchanged.
	var b bundle.Bundle
	if err := b.UnmarshalJSON(raw); err != nil {
		t.Fatalf("sigstore-go rejects our bundle: %v", err)
	}
	if b.GetMediaType() != provenance.BundleMediaType {
		t.Errorf("media type %q", b.GetMediaType())
	}

	opts := e.Options()
	opts.ExpectedRef = "refs/heads/main"
	opts.ExpectedWorkflow = ".github/workflows/release.yml"
	opts.ExpectedCommit = e.Job.SHA
	opts.ExpectedRunID = e.Job.RunID
	opts.ExpectedBuilderID = provenancetest.BuilderID
	r, err := provenance.Verify(raw, digest(artifact), opts)
	if err != nil {
		t.Fatalf("Verify: %v\nchecks: %+v", err, r.Checks)
	}
	if r.Job != e.Job {
		t.Errorf("job\n got %+v\nwant %+v", r.Job, e.Job)
	}
	if r.BuildID != e.Job.BuildID() || r.Level != 0 || r.ImageID != "test-image" || len(r.Actions) != 2 {
		t.Errorf("result: build %q level %d image %q actions %v", r.BuildID, r.Level, r.ImageID, r.Actions)
	}
	for _, c := range r.Checks {
		if !c.OK {
			t.Errorf("check %s failed in a passing result", c.Name)
		}
	}
	if got := len(r.Checks); got < 12 {
		t.Errorf("%d checks recorded, want every step", got)
	}
}

func TestManySubjects(t *testing.T) {
	e := provenancetest.NewEnv(t)
	arts := map[string][]byte{}
	for i := range 50 {
		arts["bin/tool-"+string(rune('a'+i%26))+string(rune('a'+i/26))] = bytes.Repeat([]byte{byte(i)}, 100+i)
	}
	raw := e.Sign(t, e.Build(arts))
	for name, content := range arts {
		if _, err := provenance.Verify(raw, digest(content), e.Options()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// editPayload re-encodes the bundle with the DSSE payload changed by edit,
// keeping the original signature.
func editPayload(t *testing.T, raw []byte, edit func(map[string]any)) []byte {
	t.Helper()
	var b map[string]any
	if err := json.Unmarshal(raw, &b); err != nil {
		t.Fatal(err)
	}
	env := b["dsseEnvelope"].(map[string]any)
	payload, err := base64.StdEncoding.DecodeString(env["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	var st map[string]any
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	edit(st)
	payload, err = json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	env["payload"] = base64.StdEncoding.EncodeToString(payload)
	out, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func byproducts(st map[string]any) []any {
	return st["predicate"].(map[string]any)["runDetails"].(map[string]any)["byproducts"].([]any)
}

// TestRejections: build valid provenance, break one thing, expect the
// specific error (DESIGN.md threat model).
func TestRejections(t *testing.T) {
	e := provenancetest.NewEnv(t)
	good := e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact}))
	if _, err := provenance.Verify(good, digest(artifact), e.Options()); err != nil {
		t.Fatalf("baseline: %v", err)
	}

	// Provenance for another statement, quoted and signed by this same
	// environment: its response quote must not transfer.
	otherBuild := e.Build(map[string][]byte{"other.bin": []byte("other")})
	other := e.Sign(t, otherBuild)

	// A key the gate never certified signs an otherwise genuine build.
	rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rogueBundle, err := provenance.Sign(context.Background(), e.Build(map[string][]byte{"app.tar.gz": artifact}), rogue, e.Machine.Collector)
	if err != nil {
		t.Fatal(err)
	}

	// The environment certificate of another gate.
	otherGate, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	foreignCert, err := provenance.IssueEnvCert(context.Background(), otherGate, e.Cert)
	if err != nil {
		t.Fatal(err)
	}
	foreignBuild := e.Build(map[string][]byte{"app.tar.gz": artifact})
	foreignBuild.EnvCert = foreignCert
	foreign := e.Sign(t, foreignBuild)

	// A certificate that expired before the build.
	expired := *e.Cert
	expired.IssuedAt = time.Now().Add(-48 * time.Hour).UTC().Truncate(time.Second)
	expired.NotAfter = expired.IssuedAt.Add(time.Hour)
	expiredCert, err := provenance.IssueEnvCert(context.Background(), e.GateKey, &expired)
	if err != nil {
		t.Fatal(err)
	}
	expiredBuild := e.Build(map[string][]byte{"app.tar.gz": artifact})
	expiredBuild.EnvCert = expiredCert
	expiredBundle := e.Sign(t, expiredBuild)

	// Response quote taken from the other bundle.
	var otherQuote any
	editPayload(t, other, func(st map[string]any) {
		for _, bp := range byproducts(st) {
			if bp.(map[string]any)["name"] == provenance.ResponseQuoteProduct {
				otherQuote = bp
			}
		}
	})

	// Genuine certificates of this gate, for another time, runner or
	// builder than the build's.
	signWithCert := func(b *provenance.Build, edit func(*provenance.EnvCertificate)) []byte {
		b.EnvCert = e.Reissue(t, edit)
		return e.Sign(t, b)
	}
	future := signWithCert(e.Build(map[string][]byte{"app.tar.gz": artifact}), func(c *provenance.EnvCertificate) {
		c.IssuedAt = time.Now().Add(time.Hour).UTC().Truncate(time.Second)
		c.NotAfter = c.IssuedAt.Add(6 * time.Hour)
	})
	otherRunner := signWithCert(e.Build(map[string][]byte{"app.tar.gz": artifact}), func(c *provenance.EnvCertificate) { c.RunnerName = "ar-another" })
	otherBuilder := func() []byte {
		b := e.Build(map[string][]byte{"app.tar.gz": artifact})
		b.BuilderID = "https://gate.example.test/attested-runner/builder/other"
		return e.Sign(t, b)
	}()

	foreignSigstore, err := os.ReadFile("testdata/sigstore-go-dsse.sigstore.json")
	if err != nil {
		t.Fatal(err)
	}
	npmProvenance, err := os.ReadFile("testdata/npm-sigstore-js-2.0.0-provenance.sigstore.json")
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name   string
		bundle []byte
		digest []byte
		opts   func(*provenance.VerifyOptions)
		want   error
	}{
		{name: "subject digest mismatch", bundle: good, digest: digest([]byte("tampered artifact")), want: provenance.ErrSubjectMismatch},
		{name: "statement edited after signing", bundle: editPayload(t, good, func(st map[string]any) {
			st["predicate"].(map[string]any)["buildDefinition"].(map[string]any)["internalParameters"].(map[string]any)["attestedRunner"].(map[string]any)["labels"] = []any{"evil"}
		}), want: provenance.ErrSignature},
		{name: "job edited after signing", bundle: editPayload(t, good, func(st map[string]any) {
			st["predicate"].(map[string]any)["buildDefinition"].(map[string]any)["externalParameters"].(map[string]any)["ref"] = "refs/heads/evil"
		}), want: provenance.ErrMalformed},
		{name: "subject swapped in the statement", bundle: editPayload(t, good, func(st map[string]any) {
			st["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": "aa" + strings.Repeat("0", 62)}
		}), digest: append([]byte{0xaa}, make([]byte, 31)...), want: provenance.ErrSignature},
		{name: "signature by a key the gate never certified", bundle: rogueBundle, want: provenance.ErrSignature},
		{name: "environment certificate from an untrusted gate", bundle: foreign, want: provenance.ErrUntrustedEnvironment},
		{name: "expired environment certificate", bundle: expiredBundle, want: provenance.ErrEnvCertValidity},
		{name: "response quote over another statement", bundle: editPayload(t, good, func(st map[string]any) {
			bps := byproducts(st)
			for i, bp := range bps {
				if bp.(map[string]any)["name"] == provenance.ResponseQuoteProduct {
					bps[i] = otherQuote
				}
			}
		}), want: provenance.ErrSignature},
		// The same swap by someone holding the environment key (but not the
		// TPM): the signature is good, the quote is over another statement.
		{name: "response quote over another statement, re-signed", bundle: resign(t, e, good, func(st map[string]any) {
			bps := byproducts(st)
			for i, bp := range bps {
				if bp.(map[string]any)["name"] == provenance.ResponseQuoteProduct {
					bps[i] = otherQuote
				}
			}
		}), want: attest.ErrNonceMismatch},
		{name: "bundle from run A presented for repo B", bundle: good, opts: func(o *provenance.VerifyOptions) {
			o.ExpectedRepository = "octo-org/other"
		}, want: provenance.ErrRepositoryMismatch},
		{name: "bundle presented for another ref", bundle: good, opts: func(o *provenance.VerifyOptions) {
			o.ExpectedRef = "refs/tags/v1.0.0"
		}, want: provenance.ErrRefMismatch},
		{name: "bundle replayed for another run", bundle: good, opts: func(o *provenance.VerifyOptions) {
			o.ExpectedRunID = "9002"
		}, want: provenance.ErrRunMismatch},
		{name: "another workflow", bundle: good, opts: func(o *provenance.VerifyOptions) {
			o.ExpectedWorkflow = ".github/workflows/ci.yml"
		}, want: provenance.ErrWorkflowMismatch},
		{name: "another commit", bundle: good, opts: func(o *provenance.VerifyOptions) {
			o.ExpectedCommit = strings.Repeat("f", 40)
		}, want: provenance.ErrCommitMismatch},
		{name: "wrong builder id", bundle: good, opts: func(o *provenance.VerifyOptions) {
			o.ExpectedBuilderID = "https://evil.example/builder"
		}, want: provenance.ErrBuilderMismatch},
		{name: "software TPM without insecure opt-in", bundle: good, opts: func(o *provenance.VerifyOptions) {
			o.AllowSoftwareTPMInsecure = false
		}, want: provenance.ErrLevelTooLow},
		{name: "missing evidence", bundle: resign(t, e, good, func(st map[string]any) {
			bps := byproducts(st)
			st["predicate"].(map[string]any)["runDetails"].(map[string]any)["byproducts"] = bps[:len(bps)-1]
		}), want: provenance.ErrMissingEvidence},
		{name: "unknown predicate type", bundle: resign(t, e, good, func(st map[string]any) {
			st["predicateType"] = "https://example.com/other/v1"
		}), want: provenance.ErrNotAttestedRunner},
		{name: "foreign valid sigstore bundle", bundle: foreignSigstore, want: provenance.ErrNotAttestedRunner},
		{name: "GitHub-hosted SLSA provenance (another build type)", bundle: npmProvenance, want: provenance.ErrNotAttestedRunner},
		{name: "oversized bundle", bundle: make([]byte, provenance.MaxBundleSize+1), want: provenance.ErrTooLarge},
		{name: "malformed JSON", bundle: []byte(`{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", `), want: provenance.ErrMalformed},
		{name: "empty input", bundle: nil, want: provenance.ErrMalformed},
		{name: "no expected repository", bundle: good, opts: func(o *provenance.VerifyOptions) { o.ExpectedRepository = "" }, want: provenance.ErrNoExpectation},
		{name: "no trust root", bundle: good, opts: func(o *provenance.VerifyOptions) { o.TrustedGateRoots = nil }, want: provenance.ErrNoExpectation},
		// The expectations are checked before the input is read: a verifier
		// without a trust root says so whatever it is given.
		{name: "no trust root, malformed bundle", bundle: []byte("{"), opts: func(o *provenance.VerifyOptions) { o.TrustedGateRoots = nil }, want: provenance.ErrNoExpectation},
		{name: "artifact digest not SHA-256", bundle: good, digest: digest(artifact)[:20], want: provenance.ErrNoExpectation},
		{name: "response quote not evidence", bundle: resign(t, e, good, func(st map[string]any) {
			byproduct(t, st, provenance.ResponseQuoteProduct)["content"] = base64.StdEncoding.EncodeToString([]byte(`{"format":"x"}`))
		}), want: attest.ErrMalformedEvidence},
		{name: "two response quotes", bundle: resign(t, e, good, func(st map[string]any) {
			rd := st["predicate"].(map[string]any)["runDetails"].(map[string]any)
			rd["byproducts"] = append(byproducts(st), byproduct(t, st, provenance.ResponseQuoteProduct))
		}), want: provenance.ErrMalformed},
		{name: "no environment certificate", bundle: resign(t, e, good, func(st map[string]any) {
			rd := st["predicate"].(map[string]any)["runDetails"].(map[string]any)
			rd["byproducts"] = []any{byproduct(t, st, provenance.ResponseQuoteProduct)}
		}), want: provenance.ErrUntrustedEnvironment},
		{name: "startedOn not a time", bundle: resign(t, e, good, func(st map[string]any) { metadata(st)["startedOn"] = "yesterday" }),
			want: provenance.ErrMalformed},
		{name: "finishedOn not a time", bundle: resign(t, e, good, func(st map[string]any) { metadata(st)["finishedOn"] = "" }),
			want: provenance.ErrMalformed},
		{name: "certificate issued after the build started", bundle: future, want: provenance.ErrEnvCertValidity},
		{name: "certificate for another runner", bundle: otherRunner, want: provenance.ErrUntrustedEnvironment},
		{name: "certificate for another builder", bundle: otherBuilder, want: provenance.ErrUntrustedEnvironment},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := e.Options()
			if tc.opts != nil {
				tc.opts(&opts)
			}
			d := tc.digest
			if d == nil {
				d = digest(artifact)
			}
			r, err := provenance.Verify(tc.bundle, d, opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if n := len(r.Checks); n == 0 || r.Checks[n-1].OK {
				t.Errorf("last check should record the failure: %+v", r.Checks)
			}
		})
	}
}

// resign edits the statement and signs it again with the environment key,
// the way a compromised-but-certified agent could (not a tampering test: a
// test that the verifier reads the statement it is given).
func resign(t *testing.T, e *provenancetest.Env, raw []byte, edit func(map[string]any)) []byte {
	t.Helper()
	return signEdited(t, raw, e.Machine.Collector.Signer(), edit)
}

// signEdited edits the statement of a bundle and signs the result with key.
func signEdited(t *testing.T, raw []byte, key crypto.Signer, edit func(map[string]any)) []byte {
	t.Helper()
	edited := editPayload(t, raw, edit)
	var b map[string]any
	json.Unmarshal(edited, &b)
	payload, _ := base64.StdEncoding.DecodeString(b["dsseEnvelope"].(map[string]any)["payload"].(string))
	out, err := provenance.SignPayloadForTest(context.Background(), payload, key)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// byproduct returns the statement's byproduct with this name.
func byproduct(t *testing.T, st map[string]any, name string) map[string]any {
	t.Helper()
	for _, bp := range byproducts(st) {
		if bp := bp.(map[string]any); bp["name"] == name {
			return bp
		}
	}
	t.Fatalf("no byproduct %s", name)
	return nil
}

func metadata(st map[string]any) map[string]any {
	return st["predicate"].(map[string]any)["runDetails"].(map[string]any)["metadata"].(map[string]any)
}

func TestEvidenceMode(t *testing.T) {
	e := provenancetest.NewEnv(t)
	raw := e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact}))
	opts := provenance.VerifyOptions{
		ExpectedRepository:       e.Job.Repository,
		ReferenceValues:          e.Machine.Policy,
		AllowSoftwareTPMInsecure: true,
	}
	if r, err := provenance.Verify(raw, digest(artifact), opts); err != nil {
		t.Fatalf("evidence mode: %v (%+v)", err, r.Checks)
	}
	// Reference values that do not match the boot.
	bad := *e.Machine.Policy
	rv := *bad.Reference
	im := rv.Images[0]
	im.PCRs = map[uint32]attest.Hex{0: make(attest.Hex, 32)}
	rv.Images = []attest.Image{im}
	bad.Reference = &rv
	opts.ReferenceValues = &bad
	if _, err := provenance.Verify(raw, digest(artifact), opts); !errors.Is(err, attest.ErrReferenceMismatch) || !errors.Is(err, provenance.ErrEvidence) {
		t.Fatalf("evidence mode, wrong reference values: got %v", err)
	}
	// An AK the consumer does not trust.
	bad2 := *e.Machine.Policy
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bad2.TrustedAKs = []crypto.PublicKey{k.Public()}
	opts.ReferenceValues = &bad2
	if _, err := provenance.Verify(raw, digest(artifact), opts); !errors.Is(err, attest.ErrUntrustedAK) {
		t.Fatalf("evidence mode, untrusted AK: got %v", err)
	}
}

func TestDispatch(t *testing.T) {
	e := provenancetest.NewEnv(t)
	enc, _ := e.Admission.Encode()
	d := &provenance.Dispatch{Job: e.Job, AdmissionEvidenceSH: digest(enc), EnvCert: e.EnvCert}
	raw, err := provenance.SignDispatch(context.Background(), d, e.Machine.Collector.Signer(), e.Machine.Collector)
	if err != nil {
		t.Fatal(err)
	}
	id, cert, err := provenance.VerifyDispatch(raw, []crypto.PublicKey{e.GateKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if id != e.Job.BuildID() || cert.RunnerName != e.Job.RunnerName {
		t.Errorf("dispatch for %q by %q", id, cert.RunnerName)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if _, _, err := provenance.VerifyDispatch(raw, []crypto.PublicKey{other.Public()}); !errors.Is(err, provenance.ErrUntrustedEnvironment) {
		t.Fatalf("untrusted gate: %v", err)
	}
}

func TestEnvCertRoundTrip(t *testing.T) {
	e := provenancetest.NewEnv(t)
	c, err := provenance.VerifyEnvCert(e.EnvCert, []crypto.PublicKey{e.GateKey.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.EnvKey, e.Cert.EnvKey) || c.RunnerName != e.Cert.RunnerName || !c.IssuedAt.Equal(e.Cert.IssuedAt) ||
		c.Image.ID != e.Cert.Image.ID || len(c.Image.PCRs) != len(e.Cert.Image.PCRs) || c.Level != e.Cert.Level {
		t.Errorf("round trip:\n got %+v\nwant %+v", c, e.Cert)
	}
	if _, err := provenance.VerifyEnvCert(e.EnvCert, nil); !errors.Is(err, provenance.ErrNoExpectation) {
		t.Errorf("no roots: %v", err)
	}
}

// TestExpectedWorkflow: a workflow path matches the workflow of any ref; a
// full workflow ref (with @) matches only itself.
func TestExpectedWorkflow(t *testing.T) {
	e := provenancetest.NewEnv(t)
	raw := e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact}))
	for _, tc := range []struct {
		expected string
		want     error
	}{
		{".github/workflows/release.yml", nil},
		{"./.github/workflows/release.yml", nil},
		{e.Job.WorkflowRef, nil},
		{".github/workflows/ci.yml", provenance.ErrWorkflowMismatch},
		{"octo-org/app/.github/workflows/release.yml@refs/heads/dev", provenance.ErrWorkflowMismatch},
		{"octo-org/other/.github/workflows/release.yml@refs/heads/main", provenance.ErrWorkflowMismatch},
	} {
		t.Run(tc.expected, func(t *testing.T) {
			opts := e.Options()
			opts.ExpectedWorkflow = tc.expected
			_, err := provenance.Verify(raw, digest(artifact), opts)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

// TestActionsReportedOnlyResolved: Result.Actions lists the actions whose
// ref the agent resolved to a commit; an action recorded without one is
// not reported as resolved.
func TestActionsReportedOnlyResolved(t *testing.T) {
	e := provenancetest.NewEnv(t)
	b := e.Build(map[string][]byte{"app.tar.gz": artifact})
	b.Actions = append(b.Actions, provenance.ActionRef{Repository: "octo-org/unresolved", Ref: "v1"})
	r, err := provenance.Verify(e.Sign(t, b), digest(artifact), e.Options())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"https://github.com/octo-org/app@refs/heads/main (" + e.Job.SHA + ")",
		"https://github.com/actions/checkout@v4 (11bd71901bbe5b1630ceea73d27597364c9af683)",
	}
	if diff := cmp.Diff(want, r.Actions); diff != "" {
		t.Errorf("actions (-want +got):\n%s", diff)
	}
}
