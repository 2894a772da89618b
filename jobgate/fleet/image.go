package fleet

import (
	"context"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/provenance"
)

// Size limits of a pool image's files.
const (
	maxProvenance = 4 << 20
	maxBootFile   = 1 << 30
)

// BootFiles are the exact bytes a VM boots, each checked against the
// image's signed provenance: a provider boots these bytes, not the files
// on disk (which could change after the check).
type BootFiles struct {
	ImageID string
	Boot    string // qemu-direct or uki
	// Files by name: vmlinuz, initrd.img, cmdline (qemu-direct) or
	// uki.efi (uki).
	Files map[string][]byte
	// VSA is the signed launch VSA for this launch.
	VSA []byte
}

// ErrImageRefused: the pool's image did not pass verification; nothing is
// launched.
var ErrImageRefused = errors.New("pool image refused")

// bootFileNames are the files each boot kind verifies and boots.
var bootFileNames = map[string][]string{
	"qemu-direct": {"vmlinuz", "initrd.img", "cmdline"},
	"uki":         {"uki.efi"},
}

// verifyImage reads the pool's image provenance and boot files, verifies
// the provenance against the trusted image signers and every file against
// it (BuildEnv L1.verify-before-launch, L2.host-verifies-image), and signs
// the launch VSA. Called before every launch.
func verifyImage(ctx context.Context, p *PoolConfig, vm string, signers []crypto.PublicKey, gateID string, key crypto.Signer, at time.Time) (*BootFiles, error) {
	raw, err := fileio.ReadFile(p.Image.Provenance, maxProvenance)
	if err != nil {
		return nil, fmt.Errorf("%w: provenance: %v", ErrImageRefused, err)
	}
	vi, err := provenance.VerifyImage(raw, signers)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrImageRefused, err)
	}
	if len(vi.ReferenceValues.Images) != 1 {
		return nil, fmt.Errorf("%w: the provenance holds %d reference images, want 1", ErrImageRefused, len(vi.ReferenceValues.Images))
	}
	b := &BootFiles{ImageID: vi.ReferenceValues.Images[0].ID, Boot: p.Image.Boot, Files: map[string][]byte{}}
	digests := map[string][]byte{}
	for _, name := range bootFileNames[p.Image.Boot] {
		data, err := fileio.ReadFile(filepath.Join(p.Image.Dir, name), maxBootFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrImageRefused, err)
		}
		d := sha256.Sum256(data)
		if err := vi.CheckFile(name, d[:]); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrImageRefused, err)
		}
		b.Files[name], digests[name] = data, d[:]
	}
	pd := sha256.Sum256(raw)
	b.VSA, err = provenance.IssueLaunchVSA(ctx, key, &provenance.LaunchVerification{
		GateID: gateID, VM: vm, Pool: p.Name, ImageID: b.ImageID, Files: digests, ProvenanceSHA256: pd[:],
		BuilderID: vi.BuilderID, At: at,
	})
	if err != nil {
		return nil, fmt.Errorf("signing the launch VSA: %w", err)
	}
	return b, nil
}
