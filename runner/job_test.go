package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestHookReportJob(t *testing.T) {
	env := map[string]string{
		"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_REF": "refs/heads/main",
		"GITHUB_SHA": strings.Repeat("a", 40), "GITHUB_WORKFLOW_REF": "o/r/.github/workflows/b.yml@refs/heads/main",
		"GITHUB_RUN_ID": "1", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "build", "RUNNER_NAME": "attested-abc",
		"ACTIONS_RUNNER_INPUT_JITCONFIG": "secret", "UNRELATED": "x",
	}
	rep := ReportFromEnv(func(k string) string { return env[k] })
	if _, ok := rep.Env["ACTIONS_RUNNER_INPUT_JITCONFIG"]; ok || rep.Env["UNRELATED"] != "" {
		t.Fatal("the report carries variables outside its list")
	}
	j := rep.Job()
	if err := j.Validate(); err != nil {
		t.Fatal(err)
	}
	delete(rep.Env, "GITHUB_SHA")
	if err := rep.Job().Validate(); err == nil || !strings.Contains(err.Error(), "sha") {
		t.Fatalf("missing sha: %v", err)
	}
	rep.Env["GITHUB_REF"] = "refs/heads/x\nGITHUB_SHA=evil"
	if err := rep.validate(); err == nil {
		t.Fatal("newline in a variable accepted")
	}
}

// TestSocketRefusesOtherUIDs: the socket serves only the runner user.
func TestSocketRefusesOtherUIDs(t *testing.T) {
	var called atomic.Bool
	h := func(context.Context, string, []byte, []int) (any, error) { called.Store(true); return struct{}{}, nil }
	path := startSocket(t, os.Getuid()+4242, h)
	err := (&Client{Socket: path}).Call(context.Background(), OpJobCompleted, &HookReport{}, nil)
	if err == nil || !strings.Contains(err.Error(), ErrSocketForbidden.Error()) || called.Load() {
		t.Fatalf("another uid was served: %v (handler called %v)", err, called.Load())
	}
	// Same uid: served.
	path2 := startSocket(t, os.Getuid(), h)
	if err := (&Client{Socket: path2}).Call(context.Background(), OpJobCompleted, &HookReport{}, nil); err != nil || !called.Load() {
		t.Fatalf("the runner uid was refused: %v", err)
	}
	// Not a unix socket: no peer uid.
	if _, err := peerUID(&net.TCPConn{}); err == nil {
		t.Fatal("peer uid of a TCP conn")
	}
	var missing *Client = &Client{Socket: filepath.Join(t.TempDir(), "none.sock")}
	if err := missing.Call(context.Background(), OpJobCompleted, &HookReport{}, nil); err == nil || !strings.Contains(err.Error(), "attested runner") {
		t.Fatalf("missing socket: %v", err)
	}
}

func startSocket(t *testing.T, uid int, h socketHandler) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := listenSocket(path)
	if err != nil {
		t.Fatal(err)
	}
	srv := serveSocket(context.Background(), ln, uid, h, slog.New(slog.NewTextHandler(io.Discard, nil)))
	t.Cleanup(func() { srv.Close() })
	return path
}

// TestSocketProtocol: what a hostile peer can send is refused, and every
// descriptor it sent is closed.
func TestSocketProtocol(t *testing.T) {
	var mu sync.Mutex
	var gotFDs []int
	h := func(_ context.Context, op string, _ []byte, files []int) (any, error) {
		mu.Lock()
		defer mu.Unlock()
		gotFDs = append(gotFDs[:0], files...)
		return struct{}{}, nil
	}
	path := startSocket(t, os.Getuid(), h)
	c := &Client{Socket: path}
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := c.Call(context.Background(), OpJobStarted, &HookReport{}, nil, f); err == nil || !strings.Contains(err.Error(), "takes no file descriptors") {
		t.Fatalf("descriptors on job-started: %v", err)
	}
	if err := c.Call(context.Background(), "format-disk", struct{}{}, nil); err == nil || !strings.Contains(err.Error(), "unknown operation") {
		t.Fatalf("unknown operation: %v", err)
	}
	err = c.Call(context.Background(), OpAttest, &AttestRequest{}, nil, f)
	mu.Lock()
	fds := append([]int(nil), gotFDs...)
	mu.Unlock()
	if err != nil || len(fds) != 1 {
		t.Fatalf("attest with one descriptor: %v, handler saw %v", err, fds)
	}
	// The server closed the descriptor it received before it answered.
	var st unix.Stat_t
	if err := unix.Fstat(fds[0], &st); !errors.Is(err, unix.EBADF) {
		t.Errorf("the agent kept descriptor %d open after the request: %v", fds[0], err)
	}
	for name, raw := range map[string][]byte{
		"frame over the limit": {0xff, 0xff, 0xff, 0xff},
		"not JSON":             append([]byte{0, 0, 0, 3}, "abc"...),
		"unknown field":        frameOf(`{"op":"attest","body":{},"x":1}`),
		"trailing data":        frameOf(`{"op":"attest","body":{}} {}`),
	} {
		answer := rawCall(t, path, raw)
		if !strings.Contains(answer, ErrSocketProtocol.Error()) {
			t.Errorf("%s: answer %q", name, answer)
		}
	}
}

func frameOf(s string) []byte {
	b := make([]byte, 4, 4+len(s))
	binary.BigEndian.PutUint32(b, uint32(len(s)))
	return append(b, s...)
}

// rawCall writes raw to the socket and returns the error of the answer.
func rawCall(t *testing.T, path string, raw []byte) string {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(raw)
	frame, _, err := readFrame(c.(*net.UnixConn), maxResponse, 0)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	var r socketResponse
	if err := json.Unmarshal(frame, &r); err != nil {
		t.Fatal(err)
	}
	return r.Error
}

// TestHashSubject: the agent hashes only readable regular files, never
// blocks on a FIFO or a device, and refuses a file that changes under it.
func TestHashSubject(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	reg := filepath.Join(dir, "app.tar.gz")
	if err := os.WriteFile(reg, []byte("release 1.0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fd := openFD(t, reg, unix.O_RDONLY)
	// The descriptor's offset is the job's: hashing must not depend on it.
	unix.Seek(fd, 5, 0)
	d, n, err := hashSubject(ctx, fd, 1<<20)
	want := sha256.Sum256([]byte("release 1.0\n"))
	if err != nil || n != 12 || !bytes.Equal(d, want[:]) {
		t.Fatalf("regular file: %x %d %v", d, n, err)
	}
	if _, _, err := hashSubject(ctx, fd, 11); !errors.Is(err, ErrSubjectTooLarge) {
		t.Errorf("over the limit: %v", err)
	}
	closed, err := unix.Open(reg, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(closed)
	if _, _, err := hashSubject(ctx, closed, 1<<20); !errors.Is(err, unix.EBADF) {
		t.Errorf("closed descriptor: %v", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := unix.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		fd   int
		want error
	}{
		"FIFO":             {openFD(t, fifo, unix.O_RDONLY|unix.O_NONBLOCK), ErrSubjectNotRegular},
		"character device": {openFD(t, "/dev/zero", unix.O_RDONLY), ErrSubjectNotRegular},
		"directory":        {openFD(t, dir, unix.O_RDONLY|unix.O_DIRECTORY), ErrSubjectNotRegular},
		"O_PATH":           {openFD(t, reg, unix.O_PATH), ErrSubjectUnreadable},
		"write-only":       {openFD(t, reg, unix.O_WRONLY), ErrSubjectUnreadable},
	} {
		if _, _, err := hashSubject(ctx, c.fd, 1<<20); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
	// A file that grows while it is hashed: the cancelled context stands
	// for "too slow", growth and truncation for a job racing the agent.
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte{1}, 3<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	bfd := openFD(t, big, unix.O_RDWR)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, _, err := hashSubject(cctx, bfd, 1<<30); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	grow := &racingFile{fd: bfd, act: func() { unix.Pwrite(bfd, []byte{2}, 3<<20) }}
	if _, _, err := grow.hash(); !errors.Is(err, ErrSubjectChanged) {
		t.Errorf("grown while hashed: %v", err)
	}
	shrink := &racingFile{fd: bfd, act: func() { unix.Ftruncate(bfd, 1<<20) }}
	if _, _, err := shrink.hash(); !errors.Is(err, ErrSubjectChanged) {
		t.Errorf("shrunk while hashed: %v", err)
	}
	rewrite := &racingFile{fd: bfd, act: func() { time.Sleep(10 * time.Millisecond); unix.Pwrite(bfd, []byte{3}, 0) }}
	if _, _, err := rewrite.hash(); !errors.Is(err, ErrSubjectChanged) {
		t.Errorf("rewritten in place while hashed: %v", err)
	}
}

// racingFile changes a file from inside hashSubject's first read: hashing
// starts, act runs, hashing goes on.
type racingFile struct {
	fd  int
	act func()
}

func (r *racingFile) hash() ([]byte, int64, error) {
	testHookAfterFirstRead = r.act
	defer func() { testHookAfterFirstRead = nil }()
	return hashSubject(context.Background(), r.fd, 1<<30)
}

func openFD(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := unix.Open(path, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestCheckSubjectName(t *testing.T) {
	for name, ok := range map[string]bool{
		"dist/app.tar.gz": true, "a": true, "dist/sub dir/x.bin": true,
		"": false, "/etc/shadow": false, "../x": false, "dist/../x": false, "./x": false, "dist//x": false,
		"a\nb": false, "a\x1b[2Jb": false, string([]byte{0xff}): false, strings.Repeat("a", 1025): false,
	} {
		if err := checkSubjectName(name); (err == nil) != ok {
			t.Errorf("%q: %v", name, err)
		} else if err != nil && !errors.Is(err, ErrSubjectName) {
			t.Errorf("%q: %v is not ErrSubjectName", name, err)
		}
	}
}
