package fleet

import (
	"errors"
	"net"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDialListening: a swtpm socket that is bound but not yet listening
// (what a busy machine shows between bind and listen) is waited for, not
// refused; one that never listens fails within the bound.
func TestDialListening(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if _, err := net.Dial("unix", path); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("bound, not listening: %v (want connection refused)", err)
	}
	listening := make(chan error, 1)
	go func() {
		time.Sleep(200 * time.Millisecond)
		listening <- syscall.Listen(fd, 1)
	}()
	conn, err := dialListening(path, 5*time.Second)
	if err != nil {
		t.Fatalf("dialListening: %v", err)
	}
	conn.Close()
	if err := <-listening; err != nil {
		t.Fatal(err)
	}

	never := filepath.Join(t.TempDir(), "never.sock")
	if _, err := dialListening(never, 100*time.Millisecond); err == nil || !strings.Contains(err.Error(), "nothing listening") {
		t.Fatalf("a socket nobody serves: %v", err)
	}
}
