package jobgate_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/attested-runner/attested-runner/provenance"
)

// TestLoadPolicyImageSigners: with policy.imageSigners the gate takes
// reference values only from image provenance one of them signed (BuildEnv
// L1.image-prov, L2.ref-values).
func TestLoadPolicyImageSigners(t *testing.T) {
	dir := t.TempDir()
	rv := attest.ReferenceValues{
		Format:       attest.ReferenceValuesFormat,
		Images:       []attest.Image{{ID: "signed-image", PCRs: map[uint32]attest.Hex{4: make([]byte, 32)}}},
		AgentDigests: []attest.Hex{make([]byte, 32)},
	}
	rvJSON, err := json.Marshal(rv)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	bare := write("rv.json", rvJSON)
	signWith := func(name string) (bundle, pub string) {
		keyPath := filepath.Join(dir, name+".key")
		pubPEM, err := jobgate.GenerateSigningKey(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		key, err := jobgate.LoadSigningKey(keyPath)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := provenance.SignImage(context.Background(), &provenance.ImageBuild{
			BuilderID: "https://example.com/" + name, ReferenceValues: rvJSON,
			Subjects:  []provenance.Subject{{Name: "vmlinuz", SHA256: make([]byte, 32)}},
			StartedOn: time.Now(), FinishedOn: time.Now(),
		}, key)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".sigstore.json", raw), write(name+".pub", pubPEM)
	}
	trustedBundle, trustedPub := signWith("trusted")
	otherBundle, _ := signWith("other")

	policy := func(signers []string, files ...string) (*attest.Policy, error) {
		c := &jobgate.Config{Policy: jobgate.PolicyConfig{ReferenceValues: files, ImageSigners: signers}}
		p, _, err := c.LoadPolicy()
		return p, err
	}
	p, err := policy([]string{trustedPub}, trustedBundle)
	if err != nil {
		t.Fatalf("signed image provenance refused: %v", err)
	}
	if len(p.Reference.Images) != 1 || p.Reference.Images[0].ID != "signed-image" {
		t.Fatalf("reference values from the bundle = %+v", p.Reference)
	}
	if _, err := policy(nil, bare); err != nil {
		t.Fatalf("bare reference values without image signers refused: %v", err)
	}

	for _, tc := range []struct {
		name    string
		signers []string
		files   []string
		want    string
	}{
		{"bundle signed by an untrusted builder", []string{trustedPub}, []string{otherBundle}, "not signed by a trusted image key"},
		{"bare file when signers are configured", []string{trustedPub}, []string{trustedBundle, bare}, "only signed reference values"},
		{"bundle without signers configured", nil, []string{trustedBundle}, "configure policy.imageSigners"},
		{"signer file missing", []string{filepath.Join(dir, "nope.pub")}, []string{trustedBundle}, "policy.imageSigners"},
		{"empty reference values file", nil, []string{write("empty.json", nil)}, "policy.referenceValues"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := policy(tc.signers, tc.files...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// TestConfigTPMLevel3Refused: level 3 cannot be configured into existence.
// A TPM quote is level 2; only a verified TEE report earns 3.
func TestConfigTPMLevel3Refused(t *testing.T) {
	dir := t.TempDir()
	for level, ok := range map[int]bool{0: true, 2: true, 3: false} {
		cfg := `{"listen":"127.0.0.1:8080","gateId":"g","builderId":"b","dataDir":"d","signingKey":"k",
"github":{"appId":1,"installationId":2,"privateKey":"p","org":"o","labels":["self-hosted"]},
"policy":{"referenceValues":["rv.json"],"trustedAKs":["ak.pem"],"tpmLevel":` + string(rune('0'+level)) + `}}`
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := jobgate.LoadConfig(p)
		if (err == nil) != ok {
			t.Errorf("tpmLevel %d: LoadConfig: %v, want ok %v", level, err, ok)
		}
		if !ok && (err == nil || !strings.Contains(err.Error(), "cannot be configured")) {
			t.Errorf("tpmLevel %d: error %v does not say why", level, err)
		}
	}
}

// TestConfigTDXPCSURL: TDX collateral comes from Intel's PCS by default, a
// mirror when named, nowhere with "none"; anything else is refused.
func TestConfigTDXPCSURL(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		value string
		ok    bool
	}{{"", true}, {"none", true}, {"https://pccs.example:8081", true}, {"ftp://x", false}, {"not a url", false}} {
		cfg := `{"listen":"127.0.0.1:8080","gateId":"g","builderId":"b","dataDir":"d","signingKey":"k",
"github":{"appId":1,"installationId":2,"privateKey":"p","org":"o","labels":["self-hosted"]},
"policy":{"referenceValues":["rv.json"],"trustedAKs":["ak.pem"],"tdxPcsUrl":"` + tc.value + `"}}`
		p := filepath.Join(dir, "c.json")
		if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := jobgate.LoadConfig(p); (err == nil) != tc.ok {
			t.Errorf("tdxPcsUrl %q: %v, want ok %v", tc.value, err, tc.ok)
		}
	}
}

// policy.sigstore is validated with the rest: https only (http on loopback).
func TestConfigSigstore(t *testing.T) {
	base := func() *jobgate.Config {
		return &jobgate.Config{
			Listen: "127.0.0.1:8080", GateID: "https://gate.test", BuilderID: "https://gate.test/b", DataDir: "/d", SigningKey: "/k",
			GitHub: jobgate.GitHubConfig{AppID: 1, InstallationID: 2, PrivateKey: "/p", Org: "o", Labels: []string{"self-hosted"}},
			Policy: jobgate.PolicyConfig{ReferenceValues: []string{"/r"}, TrustedAKs: []string{"/a"}},
		}
	}
	c := base()
	if err := c.Validate(); err != nil {
		t.Fatalf("base config: %v", err)
	}
	c.Policy.Sigstore = &gateapi.Sigstore{FulcioURL: "https://fulcio.sigstore.dev", RekorURL: "https://rekor.sigstore.dev"}
	if err := c.Validate(); err != nil {
		t.Fatalf("public-good sigstore: %v", err)
	}
	c.Policy.Sigstore.RekorURL = "http://rekor.example"
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "policy.sigstore.rekorUrl") {
		t.Fatalf("plain-http rekor: %v", err)
	}
}

// TestConfigSEVSNP: policy.sevSnp reaches the policy's SEV-SNP
// requirements and the policy digest; without it the requirements are the
// strict defaults (no SMT, AMD's roots) and the digest is as before.
func TestConfigSEVSNP(t *testing.T) {
	dir := t.TempDir()
	rv, err := json.Marshal(attest.ReferenceValues{
		Format:       attest.ReferenceValuesFormat,
		Images:       []attest.Image{{ID: "img", PCRs: map[uint32]attest.Hex{4: make([]byte, 32)}, SNPMeasurements: []attest.Hex{make([]byte, 48)}}},
		AgentDigests: []attest.Hex{make([]byte, 32)},
	})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "rv.json")
	if err := os.WriteFile(file, rv, 0o600); err != nil {
		t.Fatal(err)
	}
	load := func(s *jobgate.SEVSNPConfig) (*attest.Policy, string) {
		t.Helper()
		c := &jobgate.Config{Policy: jobgate.PolicyConfig{ReferenceValues: []string{file}, SEVSNP: s}}
		p, digest, err := c.LoadPolicy()
		if err != nil {
			t.Fatal(err)
		}
		return p, digest
	}
	strict, strictDigest := load(nil)
	if strict.SNP.AllowSMT || strict.SNP.MinimumTCB != (attest.SNPTCB{}) || strict.SNP.TrustedRoots != nil {
		t.Errorf("defaults %+v", strict.SNP)
	}
	if _, d := load(&jobgate.SEVSNPConfig{}); d != strictDigest {
		t.Errorf("an empty sevSnp section changed the policy digest")
	}
	tcb := attest.SNPTCB{BootLoader: 3, TEE: 0, SNP: 8, Microcode: 115}
	p, d := load(&jobgate.SEVSNPConfig{AllowSMT: true, MinimumTCB: tcb})
	if !p.SNP.AllowSMT || p.SNP.MinimumTCB != tcb {
		t.Errorf("policy.sevSnp not applied: %+v", p.SNP)
	}
	if d == strictDigest {
		t.Errorf("policy.sevSnp does not change the policy digest")
	}
}
