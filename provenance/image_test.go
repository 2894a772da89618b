package provenance_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/provenance"
)

var (
	kernel = []byte("vmlinuz bytes")
	initrd = []byte("initrd bytes")
)

func imageBuild(t testing.TB) *provenance.ImageBuild {
	t.Helper()
	rv := attest.ReferenceValues{
		Format:       attest.ReferenceValuesFormat,
		Images:       []attest.Image{{ID: "runner-test", PCRs: map[uint32]attest.Hex{4: digest(kernel), 9: digest(initrd)}}},
		AgentDigests: []attest.Hex{digest([]byte("agent"))},
	}
	rvJSON, err := json.Marshal(rv)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	return &provenance.ImageBuild{
		BuilderID:       "https://example.com/image-builder",
		Subjects:        []provenance.Subject{{Name: "vmlinuz", SHA256: digest(kernel)}, {Name: "initrd.img", SHA256: digest(initrd)}},
		Parameters:      json.RawMessage(`{"manifest":{"cmdline":"console=ttyS0"},"boot":"qemu-direct"}`),
		Dependencies:    []provenance.Dependency{{Name: "pkg:deb/debian/linux-image-6.1.0-57-amd64@6.1.192-3?arch=amd64", SHA256: digest([]byte("deb"))}},
		ReferenceValues: rvJSON,
		StartedOn:       now,
		FinishedOn:      now.Add(time.Minute),
	}
}

func imageKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestImageProvenanceRoundTrip(t *testing.T) {
	key := imageKey(t)
	b := imageBuild(t)
	raw, err := provenance.SignImage(context.Background(), b, key)
	if err != nil {
		t.Fatal(err)
	}
	v, err := provenance.VerifyImage(raw, []crypto.PublicKey{imageKey(t).Public(), key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if v.BuilderID != b.BuilderID || string(v.ReferenceValuesJSON) != string(b.ReferenceValues) {
		t.Fatalf("verified %+v, want builder %s and the reference values signed", v, b.BuilderID)
	}
	if len(v.ReferenceValues.Images) != 1 || v.ReferenceValues.Images[0].ID != "runner-test" {
		t.Fatalf("reference values = %+v", v.ReferenceValues)
	}
	if err := v.CheckFile("vmlinuz", digest(kernel)); err != nil {
		t.Fatal(err)
	}
	if err := v.CheckFile("vmlinuz", digest(initrd)); !errors.Is(err, provenance.ErrSubjectMismatch) {
		t.Fatalf("kernel with another digest: err = %v, want ErrSubjectMismatch", err)
	}
	if err := v.CheckFile("cmdline", digest(nil)); !errors.Is(err, provenance.ErrSubjectMismatch) {
		t.Fatalf("file not in the provenance: err = %v, want ErrSubjectMismatch", err)
	}
}

func TestImageProvenanceRejections(t *testing.T) {
	key := imageKey(t)
	trusted := []crypto.PublicKey{key.Public()}
	good, err := provenance.SignImage(context.Background(), imageBuild(t), key)
	if err != nil {
		t.Fatal(err)
	}
	resignWith := func(raw []byte, edit func(map[string]any)) []byte {
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
	rvByproduct := func(st map[string]any) map[string]any { return byproducts(st)[0].(map[string]any) }
	otherJob, err := provenance.SignImage(context.Background(), func() *provenance.ImageBuild {
		b := imageBuild(t)
		b.BuilderID = "https://other"
		return b
	}(), imageKey(t))
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name    string
		raw     []byte
		trusted []crypto.PublicKey
		want    error
	}{
		{"empty input", nil, trusted, provenance.ErrMalformed},
		{"oversized input", make([]byte, provenance.MaxBundleSize+1), trusted, provenance.ErrTooLarge},
		{"no trusted key", good, nil, provenance.ErrNoExpectation},
		{"signed by an untrusted key", otherJob, trusted, provenance.ErrUntrustedImage},
		{"subject digest edited", editPayload(t, good, func(st map[string]any) {
			st["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": strings.Repeat("00", 32)}
		}), trusted, provenance.ErrUntrustedImage},
		{"reference values edited after signing", editPayload(t, good, func(st map[string]any) {
			rvByproduct(st)["content"] = base64.StdEncoding.EncodeToString([]byte(`{"format":"x"}`))
		}), trusted, provenance.ErrUntrustedImage},
		{"job provenance, not an image build", resignWith(good, func(st map[string]any) {
			st["predicate"].(map[string]any)["buildDefinition"].(map[string]any)["buildType"] = provenance.BuildType
		}), trusted, provenance.ErrNotAttestedRunner},
		{"reference values not matching their digest", resignWith(good, func(st map[string]any) {
			rvByproduct(st)["digest"] = map[string]any{"sha256": strings.Repeat("11", 32)}
		}), trusted, provenance.ErrMalformed},
		{"no reference values", resignWith(good, func(st map[string]any) {
			delete(st["predicate"].(map[string]any)["runDetails"].(map[string]any), "byproducts")
		}), trusted, provenance.ErrMalformed},
		{"empty reference values document", resignWith(good, func(st map[string]any) {
			content := []byte(`{"format":"` + attest.ReferenceValuesFormat + `","images":[],"agentDigests":[]}`)
			rvByproduct(st)["content"] = base64.StdEncoding.EncodeToString(content)
			rvByproduct(st)["digest"] = map[string]any{"sha256": hex.EncodeToString(digest(content))}
		}), trusted, attest.ErrPolicyEmpty},
		{"subject listed twice", resignWith(good, func(st map[string]any) {
			subj := st["subject"].([]any)
			st["subject"] = append(subj, subj[0])
		}), trusted, provenance.ErrMalformed},
		{"first subject digest not hex", resignWith(good, func(st map[string]any) {
			st["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": "zz"}
		}), trusted, provenance.ErrMalformed},
		{"first subject digest not SHA-256", resignWith(good, func(st map[string]any) {
			st["subject"].([]any)[0].(map[string]any)["digest"] = map[string]any{"sha256": strings.Repeat("ab", 31)}
		}), trusted, provenance.ErrMalformed},
		{"subject without a name", resignWith(good, func(st map[string]any) {
			delete(st["subject"].([]any)[1].(map[string]any), "name")
		}), trusted, provenance.ErrMalformed},
		{"subject digest not SHA-256", resignWith(good, func(st map[string]any) {
			st["subject"].([]any)[1].(map[string]any)["digest"] = map[string]any{"sha256": strings.Repeat("ab", 31)}
		}), trusted, provenance.ErrMalformed},
		{"two reference-values byproducts", resignWith(good, func(st map[string]any) {
			rd := st["predicate"].(map[string]any)["runDetails"].(map[string]any)
			rd["byproducts"] = append(byproducts(st), rvByproduct(st))
		}), trusted, provenance.ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := provenance.VerifyImage(tc.raw, tc.trusted)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSignImageRefusesIncompleteBuilds(t *testing.T) {
	key := imageKey(t)
	for name, edit := range map[string]func(*provenance.ImageBuild){
		"no builder":              func(b *provenance.ImageBuild) { b.BuilderID = "" },
		"no subject":              func(b *provenance.ImageBuild) { b.Subjects = nil },
		"subject without hash":    func(b *provenance.ImageBuild) { b.Subjects[0].SHA256 = nil },
		"subject without name":    func(b *provenance.ImageBuild) { b.Subjects[1].Name = "" },
		"dependency without hash": func(b *provenance.ImageBuild) { b.Dependencies[0].SHA256 = []byte{1} },
		"dependency without name": func(b *provenance.ImageBuild) { b.Dependencies[0].Name = "" },
		"no reference values":     func(b *provenance.ImageBuild) { b.ReferenceValues = nil },
		"parameters not JSON":     func(b *provenance.ImageBuild) { b.Parameters = json.RawMessage("{") },
	} {
		t.Run(name, func(t *testing.T) {
			b := imageBuild(t)
			edit(b)
			if _, err := provenance.SignImage(context.Background(), b, key); !errors.Is(err, provenance.ErrNoExpectation) {
				t.Fatalf("got %v, want %v", err, provenance.ErrNoExpectation)
			}
		})
	}
}
