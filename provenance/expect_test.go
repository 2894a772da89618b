package provenance_test

import (
	"errors"
	"testing"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// TestExpectationForms: the forms gh and slsa-verifier users write, each
// accepted when it names the recorded job (octo-org/app, release.yml at
// refs/heads/main on https://github.com) and refused with its error when
// it names another.
func TestExpectationForms(t *testing.T) {
	e := provenancetest.NewEnv(t)
	raw := e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact}))
	for _, tc := range []struct {
		name string
		opts func(*provenance.VerifyOptions)
		want error
	}{
		{"owner only", func(o *provenance.VerifyOptions) { o.ExpectedRepository, o.ExpectedOwner = "", "octo-org" }, nil},
		{"owner, other case", func(o *provenance.VerifyOptions) { o.ExpectedRepository, o.ExpectedOwner = "", "Octo-Org" }, nil},
		{"another owner", func(o *provenance.VerifyOptions) { o.ExpectedRepository, o.ExpectedOwner = "", "octo" }, provenance.ErrOwnerMismatch},
		{"owner and repo disagree", func(o *provenance.VerifyOptions) { o.ExpectedOwner = "other-org" }, provenance.ErrOwnerMismatch},
		{"server", func(o *provenance.VerifyOptions) { o.ExpectedServerURL = provenance.ServerURLFor("github.com") }, nil},
		{"another server", func(o *provenance.VerifyOptions) { o.ExpectedServerURL = provenance.ServerURLFor("ghe.example.com") }, provenance.ErrServerMismatch},
		{"server over http", func(o *provenance.VerifyOptions) { o.ExpectedServerURL = provenance.ServerURLFor("http://github.com") }, provenance.ErrServerMismatch},
		{"workflow path", wf(".github/workflows/release.yml"), nil},
		{"workflow ./path", wf("./.github/workflows/release.yml"), nil},
		{"workflow path@ref", wf(".github/workflows/release.yml@refs/heads/main"), nil},
		{"workflow owner/repo/path", wf("octo-org/app/.github/workflows/release.yml"), nil},
		{"workflow owner/repo/path, other case", wf("Octo-Org/App/.github/workflows/release.yml"), nil},
		{"workflow owner/repo/path@ref", wf("octo-org/app/.github/workflows/release.yml@refs/heads/main"), nil},
		{"workflow host/owner/repo/path", wf("github.com/octo-org/app/.github/workflows/release.yml"), nil},
		{"workflow https://host/owner/repo/path@ref", wf("https://github.com/octo-org/app/.github/workflows/release.yml@refs/heads/main"), nil},
		{"another workflow path", wf(".github/workflows/ci.yml"), provenance.ErrWorkflowMismatch},
		{"workflow at another ref", wf("octo-org/app/.github/workflows/release.yml@refs/heads/dev"), provenance.ErrWorkflowMismatch},
		{"workflow in another repo", wf("octo-org/lib/.github/workflows/release.yml"), provenance.ErrWorkflowMismatch},
		{"workflow on another host", wf("ghe.example.com/octo-org/app/.github/workflows/release.yml"), provenance.ErrWorkflowMismatch},
		{"workflow prefix only", wf(".github/workflows/release"), provenance.ErrWorkflowMismatch},
		{"not a workflow", wf("octo-org/app"), provenance.ErrNoExpectation},
		{"workflow with empty ref", wf(".github/workflows/release.yml@"), provenance.ErrNoExpectation},
		{"workflow with a bare directory", wf("octo-org/app/.github/workflows/"), provenance.ErrNoExpectation},
		{"workflow with four segments", wf("a/b/c/d/.github/workflows/x.yml"), provenance.ErrNoExpectation},
		{"neither repository nor owner", func(o *provenance.VerifyOptions) { o.ExpectedRepository = "" }, provenance.ErrNoExpectation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := e.Options()
			tc.opts(&opts)
			_, err := provenance.Verify(raw, digest(artifact), opts)
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func wf(s string) func(*provenance.VerifyOptions) {
	return func(o *provenance.VerifyOptions) { o.ExpectedWorkflow = s }
}
