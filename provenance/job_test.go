package provenance_test

import (
	"errors"
	"reflect"
	"testing"

	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// TestBuildIDBindsEveryField: the build id extended at job start changes
// with every field of the job description.
func TestBuildIDBindsEveryField(t *testing.T) {
	base := provenancetest.DefaultJob("attested-abc")
	id := base.BuildID()
	v := reflect.ValueOf(&base).Elem()
	for i := range v.NumField() {
		j := base
		f := reflect.ValueOf(&j).Elem().Field(i)
		f.SetString(f.String() + "x")
		if j.BuildID() == id {
			t.Errorf("changing %s leaves the build id as it was", v.Type().Field(i).Name)
		}
	}
	// Length framing: bytes moved from one field to the next change it.
	a, b := base, base
	a.Ref, a.SHA = "refs/heads/ma", "in"+base.SHA
	b.Ref, b.SHA = "refs/heads/main", base.SHA
	if a.BuildID() == b.BuildID() {
		t.Error("the build id is not length-framed")
	}
}

// TestProvenanceForAnotherRefOfTheRunRefused: code that gained root in the
// VM holds the environment key and can quote and sign at will, but the
// job-start event was extended before any job code ran: provenance for
// another ref or commit of the same run does not match it.
func TestProvenanceForAnotherRefOfTheRunRefused(t *testing.T) {
	e := provenancetest.NewEnv(t)
	for name, edit := range map[string]func(*provenance.Job){
		"another ref":    func(j *provenance.Job) { j.Ref = "refs/tags/v9.9.9" },
		"another commit": func(j *provenance.Job) { j.SHA = "fedcba9876543210fedcba9876543210fedcba98" },
		"another workflow": func(j *provenance.Job) {
			j.WorkflowRef = "octo-org/app/.github/workflows/other.yml@refs/heads/main"
		},
	} {
		t.Run(name, func(t *testing.T) {
			b := e.Build(map[string][]byte{"app.tar.gz": artifact})
			edit(&b.Job)
			raw := e.Sign(t, b)
			if _, err := provenance.Verify(raw, digest(artifact), e.Options()); !errors.Is(err, provenance.ErrBuildMismatch) {
				t.Fatalf("got %v, want ErrBuildMismatch", err)
			}
		})
	}
}
