package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUdhcpcScript runs the image's udhcpc event script as udhcpc would on a
// lease, with a recording stand-in for busybox: the address, the default
// route and /etc/resolv.conf come from the lease, and the file agentinit
// waits for is written. (QEMU's restricted user network offers no router
// or DNS server, so the boot test cannot show this part.)
func TestUdhcpcScript(t *testing.T) {
	dir := t.TempDir()
	calls := filepath.Join(dir, "calls")
	fake := filepath.Join(dir, "busybox")
	os.WriteFile(fake, []byte("#!/bin/sh\ncase \"$1\" in dirname) dirname \"$2\" ;; mkdir) shift; mkdir \"$@\" ;; *) echo \"$*\" >>"+calls+" ;; esac\n"), 0o755)
	resolv := filepath.Join(dir, "resolv.conf")
	bound := filepath.Join(dir, "run", "dhcp.bound")
	cmd := exec.Command("sh", "../udhcpc.script", "bound")
	cmd.Env = []string{"PATH=/usr/bin:/bin", "BUSYBOX=" + fake, "RESOLV_CONF=" + resolv, "BOUND_FILE=" + bound,
		"interface=eth0", "ip=10.128.0.7", "mask=20", "router=10.128.0.1 10.128.0.2", "dns=169.254.169.254 8.8.8.8",
		"domain=c.example.internal", "lease=3600"}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got, _ := os.ReadFile(calls)
	want := "ip -4 addr flush dev eth0\nip -4 addr add 10.128.0.7/20 dev eth0\nip route replace default via 10.128.0.1 dev eth0\n"
	if string(got) != want {
		t.Errorf("busybox calls:\n%s\nwant:\n%s", got, want)
	}
	r, _ := os.ReadFile(resolv)
	if string(r) != "search c.example.internal\nnameserver 169.254.169.254\nnameserver 8.8.8.8\n" {
		t.Errorf("resolv.conf:\n%s", r)
	}
	b, _ := os.ReadFile(bound)
	if !strings.HasPrefix(string(b), "10.128.0.7/20 router 10.128.0.1 10.128.0.2 dns ") {
		t.Errorf("bound file: %q", b)
	}
}
