package imageref

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/fileio"
)

// MaxAgentSize bounds an agent binary read to compute its digest.
const MaxAgentSize = 512 << 20

// ImageFiles is a build.sh output directory read into memory.
type ImageFiles struct {
	Kernel  []byte
	Initrd  []byte
	Cmdline string
}

// LoadImageDir reads vmlinuz, initrd.img and cmdline from a build.sh output
// directory, within the size limits of this package.
func LoadImageDir(dir string) (*ImageFiles, error) {
	kernel, err := readLimited(filepath.Join(dir, "vmlinuz"), MaxKernelSize)
	if err != nil {
		return nil, err
	}
	initrd, err := readLimited(filepath.Join(dir, "initrd.img"), MaxInitrdSize)
	if err != nil {
		return nil, err
	}
	cmdline, err := readLimited(filepath.Join(dir, "cmdline"), MaxCmdlineSize)
	if err != nil {
		return nil, err
	}
	return &ImageFiles{Kernel: kernel, Initrd: initrd, Cmdline: strings.TrimSuffix(string(cmdline), "\n")}, nil
}

// DefaultID names an image after what the boot measures: the kernel file's
// Authenticode digest, the initrd and the command line.
func DefaultID(c *Computed) string {
	h := sha256.New()
	h.Write(c.KernelFileDigest)
	h.Write(c.InitrdDigest)
	h.Write(c.LoadOptionsDigest)
	return "runner-" + hex.EncodeToString(h.Sum(nil))[:16]
}

// ReferenceValues computes the reference values of an image directory and
// the allowed agent binaries: one image (see Compute) and the SHA-256 of
// each agent binary. The result passes attest's validation; an image with no
// agent is refused, since the gate would refuse the document anyway.
func ReferenceValues(dir string, agents []string, opts Options) (*attest.ReferenceValues, error) {
	if len(agents) == 0 {
		return nil, fmt.Errorf("%w: no agent binary: the reference values must name the allowed agent", ErrImage)
	}
	f, err := LoadImageDir(dir)
	if err != nil {
		return nil, err
	}
	if opts.ID == "" {
		c, err := ComputeDigests(f.Kernel, f.Initrd, f.Cmdline, opts)
		if err != nil {
			return nil, err
		}
		opts.ID = DefaultID(c)
	}
	img, err := Compute(f.Kernel, f.Initrd, f.Cmdline, opts)
	if err != nil {
		return nil, err
	}
	rv := &attest.ReferenceValues{Format: attest.ReferenceValuesFormat, Images: []attest.Image{*img}}
	for _, a := range agents {
		d, err := fileSHA256(a, MaxAgentSize)
		if err != nil {
			return nil, fmt.Errorf("agent: %w", err)
		}
		rv.AgentDigests = append(rv.AgentDigests, d)
	}
	if err := rv.Validate(); err != nil {
		return nil, err
	}
	return rv, nil
}

func fileSHA256(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if n > limit {
		return nil, fmt.Errorf("%w: %s is over %d bytes", ErrImage, path, limit)
	}
	return h.Sum(nil), nil
}

func readLimited(path string, limit int64) ([]byte, error) {
	b, err := fileio.ReadFile(path, limit)
	if errors.Is(err, fileio.ErrTooLarge) {
		return nil, fmt.Errorf("%w: %v", ErrImage, err)
	}
	return b, err
}
