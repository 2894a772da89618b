package runner

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"testing"
)

// FuzzSocketBodies feeds arbitrary request frames to the agent's socket
// decoding and dispatch (as the runner user could): refused with an error,
// never a panic, and a job is never started from a report that does not
// validate.
func FuzzSocketBodies(f *testing.F) {
	f.Add([]byte(`{"op":"job-started","body":{"env":{"GITHUB_REPOSITORY":"o/r","GITHUB_WORKSPACE":"/w"},"eventPayload":"e30="}}`))
	f.Add([]byte(`{"op":"attest","body":{"subjects":["dist/a"]}}`))
	f.Add([]byte(`{"op":"job-completed","body":{"env":{"GITHUB_REF":"a\nb"}}}`))
	a := &Agent{jobEvents: make(chan string, 4), log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	f.Fuzz(func(t *testing.T, frame []byte) {
		req, err := decodeRequest(frame)
		if err != nil {
			if !errors.Is(err, ErrSocketProtocol) {
				t.Fatalf("refusal without ErrSocketProtocol: %v", err)
			}
			return
		}
		if _, err := a.handleSocket(context.Background(), req.Op, req.Body, nil); err == nil {
			t.Fatalf("%s accepted without an admitted agent", req.Op)
		}
		if a.job != nil {
			t.Fatal("a job was recorded on an agent that was never admitted")
		}
	})
}

// FuzzParseWorkerActions parses arbitrary Worker logs, seeded with the
// real format (workerlog_test.go). A complete result holds only
// well-formed actions, each once, and does not depend on where the runner
// cut its files; an incomplete one says why and holds none.
func FuzzParseWorkerActions(f *testing.F) {
	f.Add([]byte(workerLog(realBlock...)), 0)
	f.Add([]byte(workerLog(realBlock...)), len(preamble)+len(realBlock[0]))
	f.Add([]byte(workerLog(insert(5, "x"+forgedConsole+"\n")...)), 0)
	f.Add([]byte(workerLog(insert(2, console("Complete job name: build"))...)), 0)
	f.Add([]byte(workerLog(edit(9)...)), 0)
	f.Add([]byte(jobDump), 0)
	f.Add([]byte(console("Prepare all required actions")+console("Download action repository 'a/b@c' (SHA:"+checkoutSHA+")")+console("Complete job name: x")), 0)
	f.Fuzz(func(t *testing.T, b []byte, cut int) {
		wa := ParseWorkerActions([][]byte{b})
		if wa.Complete != (wa.Reason == "") || (!wa.Complete && wa.Actions != nil) {
			t.Fatalf("inconsistent result %+v", wa)
		}
		seen := map[string]bool{}
		for _, a := range wa.Actions {
			if !downloadLine.MatchString("Download action repository '" + a.Repository + "@" + a.Ref + "' (SHA:" + a.SHA + ")") {
				t.Fatalf("malformed action %+v", a)
			}
			if a.Package != nil && (!immutableVersion.MatchString("Version: "+a.Package.Version) || !immutableDigest.MatchString("Digest: "+a.Package.ManifestDigest)) {
				t.Fatalf("malformed package %+v", a.Package)
			}
			if key := a.Repository + "@" + a.Ref; seen[key] {
				t.Fatalf("%s twice", key)
			} else {
				seen[key] = true
			}
		}
		// Rotation cuts after a whole line: the same log in two files
		// reads the same.
		if cut < 0 || cut > len(b) || len(b) == 0 || b[len(b)-1] != '\n' {
			return
		}
		if i := bytes.IndexByte(b[cut:], '\n'); i >= 0 {
			cut += i + 1
			split := ParseWorkerActions([][]byte{b[:cut], b[cut:]})
			if split.Complete != wa.Complete || !reflect.DeepEqual(split.Actions, wa.Actions) {
				t.Fatalf("cut at %d: %+v, whole: %+v", cut, split, wa)
			}
		}
	})
}
