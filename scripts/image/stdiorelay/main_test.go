package main

import (
	"bufio"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRelay runs the relay as QEMU does, with one socket as its stdin and
// stdout, against an echo server: bytes flow both ways and a half-close on
// either side reaches the other.
func TestRelay(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "stdiorelay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c) // until the guest side half-closes
		c.Write([]byte(strings.ToUpper(string(b))))
	}()

	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	guest, child := os.NewFile(uintptr(fds[0]), "guest"), os.NewFile(uintptr(fds[1]), "child")
	defer guest.Close()
	cmd := exec.Command(bin, ln.Addr().String())
	cmd.Stdin, cmd.Stdout = child, child
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	child.Close()
	if _, err := guest.Write([]byte("ping\n")); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Shutdown(int(guest.Fd()), syscall.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(bufio.NewReader(guest))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "PING\n" {
		t.Errorf("relayed %q, want %q", got, "PING\n")
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("relay exited: %v", err)
	}
}

func TestRelayCannotConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	bin := filepath.Join(t.TempDir(), "stdiorelay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	err = exec.Command(bin, addr).Run()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("relay to a closed port: %v, want exit status 1", err)
	}
}
