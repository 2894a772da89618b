//go:build simulator && cgo

package main

import (
	"io"

	"github.com/google/go-tpm-tools/simulator"
)

// openSimulator opens the in-process TPM simulator (demos and tests only:
// the 'simulator' build tag keeps it, and cgo, out of production builds).
func openSimulator() (io.ReadWriteCloser, error) { return simulator.Get() }
