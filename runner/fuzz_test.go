package runner

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
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

// FuzzDiagLog parses arbitrary Worker logs.
func FuzzDiagLog(f *testing.F) {
	f.Add([]byte("[2026-11-29 10:00:01Z VERB JobServerQueue] Enqueue web console line queue: Download action repository 'actions/checkout@v4' (SHA:11bd71901bbe5b1630ceea73d27597364c9af683)\n"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(dir, "Worker_1.log")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		acts, _, _ := ActionsFromDiag(DiagSnapshot{p: int64(len(b))})
		for _, a := range acts {
			if len(a.SHA) != 40 || a.Repository == "" || a.Ref == "" {
				t.Fatalf("bad action %+v", a)
			}
		}
	})
}
