// Package fileio reads files from outside with a size limit.
package fileio

import (
	"errors"
	"fmt"
	"io"
	"os"
)

// ErrTooLarge: the file is over the caller's limit.
var ErrTooLarge = errors.New("file over its size limit")

// ReadFile reads at most limit bytes of path; a longer file is an error
// wrapping ErrTooLarge, never a truncated read.
func ReadFile(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s: %w (%d bytes)", path, ErrTooLarge, limit)
	}
	return b, nil
}
