package main

import (
	"bytes"
	"crypto"
	"flag"
	"fmt"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/provenance"
)

// evidenceFlags are artifact's evidence mode: trust no gate, verify the
// hardware evidence in the bundle against the consumer's own reference
// values and attestation-key trust.
type evidenceFlags struct {
	on               bool
	referenceValues  string
	imageKeys        cli.StringList
	trustedAKs       cli.StringList
	trustedAKRoots   cli.StringList
	directKernelBoot bool
	// boot is the boot kind the signed image provenance records.
	boot string
}

func (e *evidenceFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&e.on, "evidence", false, "evidence mode: trust no gate; verify the hardware evidence against --reference-values")
	fs.StringVar(&e.referenceValues, "reference-values", "", "evidence mode: reference values: a reference-values file, or signed runner-image provenance (scripts/image/refvalues --sign-key) with --image-key")
	fs.Var(&e.imageKeys, "image-key", "evidence mode: PEM public key of a trusted image builder; --reference-values must then be image provenance it signed (repeatable)")
	fs.Var(&e.trustedAKs, "trusted-ak", "evidence mode: PEM file of trusted TPM attestation keys (repeatable; not needed for TDX)")
	fs.Var(&e.trustedAKRoots, "trusted-ak-root", "evidence mode: PEM file of trusted AK certificate roots, e.g. a cloud vTPM CA (repeatable)")
	fs.BoolVar(&e.directKernelBoot, "direct-kernel-boot", false, "evidence mode: the firmware loaded the kernel itself (QEMU -kernel); implied by signed image provenance of a qemu-direct image")
}

func (e *evidenceFlags) check(gateKey bool) error {
	switch {
	case !e.on && (e.referenceValues != "" || len(e.imageKeys) > 0 || len(e.trustedAKs) > 0 || len(e.trustedAKRoots) > 0 || e.directKernelBoot):
		return cli.Usagef("artifact: --reference-values, --image-key, --trusted-ak, --trusted-ak-root and --direct-kernel-boot are only used with --evidence")
	case e.on && gateKey:
		return cli.Usagef("artifact: --evidence trusts no gate: give --gate-key or --evidence, not both")
	case e.on && e.referenceValues == "":
		return cli.Usagef("artifact: --evidence needs --reference-values")
	}
	return nil
}

// policy loads the evidence-mode policy. Reference values come from a
// plain file or from signed image provenance; a TPM quote then also needs
// --trusted-ak or --trusted-ak-root (attest.Verify refuses it otherwise),
// a TDX quote chains to Intel's root.
func (e *evidenceFlags) policy(allowSoftwareTPM bool) (*attest.Policy, error) {
	raw, err := cli.ReadFile(e.referenceValues, provenance.MaxBundleSize)
	if err != nil {
		return nil, fmt.Errorf("--reference-values: %w", err)
	}
	p, err := loadPolicy("", e.trustedAKs, e.trustedAKRoots)
	if err != nil {
		return nil, err
	}
	if bytes.Contains(raw[:min(len(raw), 512)], []byte(provenance.BundleMediaType)) || bytes.Contains(raw[:min(len(raw), 512)], []byte("application/vnd.dev.sigstore.bundle")) {
		if len(e.imageKeys) == 0 {
			return nil, cli.Usagef("--reference-values %s is a sigstore bundle (image provenance): give the image builder's key with --image-key", e.referenceValues)
		}
		var keys []crypto.PublicKey
		for _, f := range e.imageKeys {
			k, err := loadPublicKeys("--image-key", f, "the image builder's public key")
			if err != nil {
				return nil, err
			}
			keys = append(keys, k...)
		}
		img, err := provenance.VerifyImage(raw, keys)
		if err != nil {
			return nil, fmt.Errorf("--reference-values %s: %w", e.referenceValues, err)
		}
		p.Reference = img.ReferenceValues
		e.boot = img.Boot
		// A QEMU -kernel image: the firmware measures the kernel before
		// "Calling EFI Application" (attest.Policy.DirectKernelBoot). The
		// signed provenance says so; the flag is not needed.
		p.DirectKernelBoot = e.directKernelBoot || img.Boot == provenance.BootQEMUDirect
	} else {
		if len(e.imageKeys) > 0 {
			return nil, cli.Usagef("--image-key verifies signed image provenance, but --reference-values %s is a plain reference-values file", e.referenceValues)
		}
		rv, err := attest.ParseReferenceValues(raw)
		if err != nil {
			return nil, fmt.Errorf("--reference-values %s: %w", e.referenceValues, err)
		}
		p.Reference = rv
		p.DirectKernelBoot = e.directKernelBoot
	}
	p.AllowSoftwareTPMUnsafe = allowSoftwareTPM
	return p, nil
}

// loadPolicy builds an attest policy from a reference-values file and AK
// trust files.
func loadPolicy(refPath string, aks, akRoots []string) (*attest.Policy, error) {
	p := &attest.Policy{}
	if refPath != "" {
		rv, err := attest.LoadReferenceValues(refPath)
		if err != nil {
			return nil, fmt.Errorf("--reference-values: %w", err)
		}
		p.Reference = rv
	}
	for _, f := range aks {
		keys, err := loadPublicKeys("--trusted-ak", f, "attested-runner ak-public")
		if err != nil {
			return nil, err
		}
		p.TrustedAKs = append(p.TrustedAKs, keys...)
	}
	for _, f := range akRoots {
		certs, err := attest.LoadCertificates(f)
		if err != nil {
			return nil, fmt.Errorf("--trusted-ak-root: %w", err)
		}
		p.TrustedAKRoots = append(p.TrustedAKRoots, certs...)
	}
	return p, nil
}
