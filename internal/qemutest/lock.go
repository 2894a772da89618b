// Package qemutest holds what the QEMU test packages share.
package qemutest

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// LockBoots serializes QEMU boots across test processes on this host
// (`go test ./e2e/qemu/ ./internal/imageref/` runs both packages at once):
// two TCG guests on a 2-core host slow each other's firmware down by half,
// which would blur the timings and the per-boot bound. It returns the
// unlock function.
func LockBoots(t testing.TB) func() {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "attested-runner-qemu-boot.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		t.Fatal(err)
	}
	return func() { f.Close() }
}
