package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/provenance"
)

// TestArtifactEvidenceMode: --evidence trusts no gate: the bundle's
// response-time TPM quote is checked against the consumer's own AK and
// reference values, given as a file or as runner-image provenance signed
// by a trusted image key. Each break is refused with its reason.
func TestArtifactEvidenceMode(t *testing.T) {
	f := newFixture(t)
	m := f.env.Machine
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, b, 0o644))
		return p
	}
	pemOf := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		must(t, err)
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	rvJSON, err := json.Marshal(m.Policy.Reference)
	must(t, err)
	rv := write("rv.json", rvJSON)
	ak := write("ak.pem", pemOf(m.Policy.TrustedAKs[0]))
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	otherAK := write("other-ak.pem", pemOf(otherKey.Public()))

	var tampered map[string]any
	must(t, json.Unmarshal(rvJSON, &tampered))
	tampered["agentDigests"] = []string{strings.Repeat("00", 32)}
	tamperedJSON, _ := json.Marshal(tampered)
	badRV := write("bad-rv.json", tamperedJSON)

	imageKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	imgKey := write("image.pem", pemOf(imageKey.Public()))
	now := time.Now().UTC()
	signed, err := provenance.SignImage(context.Background(), &provenance.ImageBuild{
		BuilderID:       "https://example.com/image-builder",
		Subjects:        []provenance.Subject{{Name: "vmlinuz", SHA256: sha256Of([]byte("kernel"))}},
		ReferenceValues: rvJSON, StartedOn: now.Add(-time.Minute), FinishedOn: now,
	}, imageKey)
	must(t, err)
	imgProv := write("image.sigstore.json", signed)

	base := []string{"artifact", f.artifact, "--repo", "octo-org/app", "--insecure-allow-software-tpm", "--evidence"}
	runCases(t, base, []cliCase{
		{"reference values file", []string{"--reference-values", rv, "--trusted-ak", ak}, 0,
			[]string{"VERIFIED sha256:", "✓ evidence"}, []string{"certified by gate"}},
		{"signed image provenance", []string{"--reference-values", imgProv, "--image-key", imgKey, "--trusted-ak", ak}, 0,
			[]string{"VERIFIED sha256:"}, nil},
		{"image provenance, another image key", []string{"--reference-values", imgProv, "--image-key", otherAK, "--trusted-ak", ak}, 1,
			[]string{"image provenance not signed by a trusted image key"}, []string{"VERIFIED sha256:"}},
		{"image provenance without --image-key", []string{"--reference-values", imgProv, "--trusted-ak", ak}, 2,
			[]string{"give the image builder's key with --image-key"}, nil},
		{"--image-key with a plain file", []string{"--reference-values", rv, "--image-key", imgKey, "--trusted-ak", ak}, 2,
			[]string{"plain reference-values file"}, nil},
		{"another AK", []string{"--reference-values", rv, "--trusted-ak", otherAK}, 1,
			[]string{"NOT VERIFIED", "✗ evidence"}, []string{"VERIFIED sha256:"}},
		{"no AK", []string{"--reference-values", rv}, 1,
			[]string{"NOT VERIFIED", "attestation key"}, []string{"VERIFIED sha256:"}},
		{"reference values of another agent", []string{"--reference-values", badRV, "--trusted-ak", ak}, 1,
			[]string{"NOT VERIFIED", "✗ evidence", "agent"}, []string{"VERIFIED sha256:"}},
		{"no reference values", nil, 2, []string{"--evidence needs --reference-values"}, nil},
		{"gate key too", []string{"--reference-values", rv, "--gate-key", f.root}, 2, []string{"trusts no gate"}, nil},
	})
	// Evidence-only flags without --evidence are a usage error.
	out, code := runCLI(t, "artifact", f.artifact, "--repo", "octo-org/app", "--gate-key", f.root, "--trusted-ak", ak)
	if code != 2 || !strings.Contains(out, "only used with --evidence") {
		t.Errorf("--trusted-ak without --evidence: exit %d:\n%s", code, out)
	}
}
