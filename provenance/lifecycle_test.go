package provenance_test

import (
	"context"
	"crypto"
	"errors"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/attested-runner/attested-runner/provenance/provenancetest"
)

// TestSignedAfterTheJob: a response-time or dispatch quote whose lifecycle
// log already shows job-end or teardown was taken after the job: whatever
// it covers was signed by whoever had the environment after the build.
func TestSignedAfterTheJob(t *testing.T) {
	for _, tc := range []struct {
		name  string
		after func(*provenancetest.Env) []attest.Event
	}{
		{"job-end", func(e *provenancetest.Env) []attest.Event { return []attest.Event{attest.JobEndEvent(e.Job.BuildID())} }},
		{"teardown", func(*provenancetest.Env) []attest.Event { return []attest.Event{attest.TeardownEvent("idle")} }},
		{"job-end and teardown", func(e *provenancetest.Env) []attest.Event {
			return []attest.Event{attest.JobEndEvent(e.Job.BuildID()), attest.TeardownEvent("done")}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := provenancetest.NewEnv(t)
			for _, ev := range tc.after(e) {
				if err := e.Machine.Collector.Extend(ev); err != nil {
					t.Fatal(err)
				}
			}
			raw := e.Sign(t, e.Build(map[string][]byte{"app.tar.gz": artifact}))
			r, err := provenance.Verify(raw, digest(artifact), e.Options())
			if !errors.Is(err, provenance.ErrJobEnded) {
				t.Fatalf("provenance: got %v, want %v", err, provenance.ErrJobEnded)
			}
			if last := r.Checks[len(r.Checks)-1]; last.OK || last.Name != "evidence" {
				t.Errorf("last check %+v", last)
			}

			enc, _ := e.Admission.Encode()
			d := &provenance.Dispatch{Job: e.Job, AdmissionEvidenceSH: digest(enc), EnvCert: e.EnvCert}
			disp, err := provenance.SignDispatch(context.Background(), d, e.Machine.Collector.Signer(), e.Machine.Collector)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := provenance.VerifyDispatch(disp, []crypto.PublicKey{e.GateKey.Public()}); !errors.Is(err, provenance.ErrJobEnded) {
				t.Fatalf("dispatch: got %v, want %v", err, provenance.ErrJobEnded)
			}
		})
	}
}

// TestLifecycleOtherBuild: the environment signs for a build other than the
// one its lifecycle log says was dispatched to it.
func TestLifecycleOtherBuild(t *testing.T) {
	e := provenancetest.NewEnv(t)
	other := e.Job
	other.RunID = "9002"
	b := e.Build(map[string][]byte{"app.tar.gz": artifact})
	b.Job = other
	if _, err := provenance.Verify(e.Sign(t, b), digest(artifact), e.Options()); !errors.Is(err, provenance.ErrBuildMismatch) {
		t.Fatalf("provenance: got %v, want %v", err, provenance.ErrBuildMismatch)
	}
	enc, _ := e.Admission.Encode()
	d := &provenance.Dispatch{Job: other, AdmissionEvidenceSH: digest(enc), EnvCert: e.EnvCert}
	disp, err := provenance.SignDispatch(context.Background(), d, e.Machine.Collector.Signer(), e.Machine.Collector)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := provenance.VerifyDispatch(disp, []crypto.PublicKey{e.GateKey.Public()}); !errors.Is(err, provenance.ErrBuildMismatch) {
		t.Fatalf("dispatch: got %v, want %v", err, provenance.ErrBuildMismatch)
	}
}
