package provenance_test

import (
	"context"
	"crypto"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
	"github.com/google/go-cmp/cmp"
)

func launchVerification() *provenance.LaunchVerification {
	return &provenance.LaunchVerification{
		GateID: "https://gate.example.test", VM: "linux-0a1b2c3d4e", Pool: "linux", ImageID: "runner-test",
		Files:            map[string][]byte{"vmlinuz": digest(kernel), "initrd.img": digest(initrd)},
		ProvenanceSHA256: digest([]byte("image provenance")), BuilderID: "https://example.com/image-builder",
		At: time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC),
	}
}

func TestLaunchVSARoundTrip(t *testing.T) {
	gate := imageKey(t)
	v := launchVerification()
	raw, err := provenance.IssueLaunchVSA(context.Background(), gate, v)
	if err != nil {
		t.Fatal(err)
	}
	vm, files, err := provenance.VerifyLaunchVSA(raw, []crypto.PublicKey{imageKey(t).Public(), gate.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if vm != v.VM {
		t.Errorf("VM %q, want %q", vm, v.VM)
	}
	if diff := cmp.Diff(v.Files, files); diff != "" {
		t.Errorf("files (-want +got):\n%s", diff)
	}
}

func TestIssueLaunchVSARefusesIncomplete(t *testing.T) {
	gate := imageKey(t)
	for name, edit := range map[string]func(*provenance.LaunchVerification){
		"no gate id":                       func(v *provenance.LaunchVerification) { v.GateID = "" },
		"no VM":                            func(v *provenance.LaunchVerification) { v.VM = "" },
		"no files":                         func(v *provenance.LaunchVerification) { v.Files = nil },
		"provenance digest not SHA-256":    func(v *provenance.LaunchVerification) { v.ProvenanceSHA256 = v.ProvenanceSHA256[:31] },
		"provenance digest missing at all": func(v *provenance.LaunchVerification) { v.ProvenanceSHA256 = nil },
	} {
		t.Run(name, func(t *testing.T) {
			v := launchVerification()
			edit(v)
			if _, err := provenance.IssueLaunchVSA(context.Background(), gate, v); !errors.Is(err, provenance.ErrNoExpectation) {
				t.Fatalf("got %v, want %v", err, provenance.ErrNoExpectation)
			}
		})
	}
}

// TestVerifyLaunchVSARejections: a launch VSA with one thing broken. Edits
// are signed again by the gate's key unless the test is about the
// signature: the checks, not only the signature, refuse them.
func TestVerifyLaunchVSARejections(t *testing.T) {
	gate := imageKey(t)
	trusted := []crypto.PublicKey{gate.Public()}
	good, err := provenance.IssueLaunchVSA(context.Background(), gate, launchVerification())
	if err != nil {
		t.Fatal(err)
	}
	predicate := func(st map[string]any) map[string]any { return st["predicate"].(map[string]any) }
	subject := func(st map[string]any) map[string]any { return st["subject"].([]any)[0].(map[string]any) }
	gateSigned := func(edit func(map[string]any)) []byte { return signEdited(t, good, gate, edit) }
	// The same gate key signs environment certificates: one is not a
	// launch VSA.
	e := provenancetest.NewEnv(t)
	for _, tc := range []struct {
		name    string
		raw     []byte
		trusted []crypto.PublicKey
		want    error
	}{
		{"no trusted key", good, nil, provenance.ErrNoExpectation},
		{"empty input", nil, trusted, provenance.ErrMalformed},
		{"signed by another key", good, []crypto.PublicKey{imageKey(t).Public()}, provenance.ErrUntrustedEnvironment},
		{"subject digest edited", editPayload(t, good, func(st map[string]any) {
			subject(st)["digest"] = map[string]any{"sha256": strings.Repeat("00", 32)}
		}), trusted, provenance.ErrUntrustedEnvironment},
		{"environment certificate of the same gate", e.EnvCert, []crypto.PublicKey{e.GateKey.Public()}, provenance.ErrNotAttestedRunner},
		{"another predicate type", gateSigned(func(st map[string]any) { st["predicateType"] = provenance.ProvenancePredicate }),
			trusted, provenance.ErrNotAttestedRunner},
		{"resource is not a VM", gateSigned(func(st map[string]any) { predicate(st)["resourceUri"] = "attested-runner:env-key:sha256:00" }),
			trusted, provenance.ErrNotAttestedRunner},
		{"resource names no VM", gateSigned(func(st map[string]any) { predicate(st)["resourceUri"] = provenance.LaunchVSAResource }),
			trusted, provenance.ErrNotAttestedRunner},
		{"verification FAILED", gateSigned(func(st map[string]any) { predicate(st)["verificationResult"] = "FAILED" }),
			trusted, provenance.ErrNotAttestedRunner},
		{"subject digest not hex", gateSigned(func(st map[string]any) { subject(st)["digest"] = map[string]any{"sha256": "zz"} }),
			trusted, provenance.ErrMalformed},
		{"subject digest not SHA-256", gateSigned(func(st map[string]any) {
			subject(st)["digest"] = map[string]any{"sha256": strings.Repeat("ab", 31)}
		}), trusted, provenance.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if vm, files, err := provenance.VerifyLaunchVSA(tc.raw, tc.trusted); !errors.Is(err, tc.want) {
				t.Fatalf("got %q %v, %v; want %v", vm, files, err, tc.want)
			}
		})
	}
	// And the other way round: a launch VSA is no environment certificate.
	if _, err := provenance.VerifyEnvCert(good, trusted); !errors.Is(err, provenance.ErrUntrustedEnvironment) {
		t.Fatalf("launch VSA as an environment certificate: got %v, want %v", err, provenance.ErrUntrustedEnvironment)
	}
}
