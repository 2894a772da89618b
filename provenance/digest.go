package provenance

import (
	"crypto/sha256"
	"fmt"
	"io"
	"os"
)

// DigestFile returns the SHA-256 of a regular file's contents. It refuses
// anything that is not a regular file (a FIFO would block, a device never
// ends).
func DigestFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return DigestOpenFile(f)
}

// DigestOpenFile hashes an already opened regular file.
func DigestOpenFile(f *os.File) ([]byte, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", f.Name())
	}
	h := sha256.New()
	// 1 MiB reads: large enough that syscalls vanish next to hashing.
	buf := make([]byte, 1<<20)
	if _, err := io.CopyBuffer(h, f, buf); err != nil {
		return nil, fmt.Errorf("reading %s: %w", f.Name(), err)
	}
	return h.Sum(nil), nil
}
