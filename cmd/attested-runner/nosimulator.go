//go:build !(simulator && cgo)

package main

import (
	"errors"
	"io"
)

func openSimulator() (io.ReadWriteCloser, error) {
	return nil, errors.New("this build has no TPM simulator (build with -tags simulator and cgo; demos and tests only)")
}
