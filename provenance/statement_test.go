package provenance_test

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
	"github.com/google/go-cmp/cmp"
)

// TestImmutableActionDependency: an immutable action package is a
// resolvedDependency like any action (uri and gitCommit, which Verify
// reports), plus an annotation with the package's version and manifest
// digest; a repository action carries no annotation.
func TestImmutableActionDependency(t *testing.T) {
	e := provenancetest.NewEnv(t)
	b := e.Build(map[string][]byte{"app.tar.gz": artifact})
	b.Actions = append(b.Actions, provenance.ActionRef{
		Repository: "github/codeql-action", Ref: "v3", SHA: "ff0a06e83cb2de871e5a09832bc6a81e7276941f",
		Package: &provenance.ActionPackage{Version: "3.28.18", ManifestDigest: "sha256:0b41304c3837968c577fdb6c0aa2845a72b559482f30bae7cb59d4bed90065ac"},
	})
	raw := e.Sign(t, b)
	r, err := provenance.Verify(raw, digest(artifact), e.Options())
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if !strings.Contains(strings.Join(r.Actions, " "), "/github/codeql-action@v3 (ff0a06e83cb2de871e5a09832bc6a81e7276941f)") {
		t.Errorf("actions %v", r.Actions)
	}

	var bundle struct {
		DSSE struct {
			Payload string `json:"payload"`
		} `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(raw, &bundle); err != nil {
		t.Fatal(err)
	}
	payload, err := base64.StdEncoding.DecodeString(bundle.DSSE.Payload)
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Predicate struct {
			BuildDefinition struct {
				ResolvedDependencies []map[string]any `json:"resolvedDependencies"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(payload, &st); err != nil {
		t.Fatal(err)
	}
	deps := st.Predicate.BuildDefinition.ResolvedDependencies
	if len(deps) != 4 { // source, checkout, codeql-action, runner image
		t.Fatalf("%d dependencies: %v", len(deps), deps)
	}
	if _, ok := deps[1]["annotations"]; ok {
		t.Errorf("a repository action carries annotations: %v", deps[1])
	}
	want := map[string]any{
		"uri":    "git+" + e.Job.ServerURL + "/github/codeql-action@v3",
		"digest": map[string]any{"gitCommit": "ff0a06e83cb2de871e5a09832bc6a81e7276941f"},
		"annotations": map[string]any{"immutableActionPackage": map[string]any{
			"version": "3.28.18", "manifestDigest": "sha256:0b41304c3837968c577fdb6c0aa2845a72b559482f30bae7cb59d4bed90065ac",
		}},
	}
	if diff := cmp.Diff(want, deps[2]); diff != "" {
		t.Errorf("immutable package dependency (-want +got):\n%s", diff)
	}
}
