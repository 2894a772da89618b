// Command refvalues computes an image's reference values offline, from the
// files scripts/image/build.sh wrote, and prints the attest reference-values
// JSON the gate loads. With --sign-key it also writes the image's SLSA
// provenance (BuildEnv L1.image-prov): the image files as subjects, the
// Debian packages of build.sh's manifest as dependencies, and the reference
// values as a signed byproduct (L2.ref-values), which the gate can load in
// place of the bare reference values.
//
// Usage:
//
//	go run ./scripts/image/refvalues --image OUTDIR --agent PATH [--agent PATH]...
//	    [--boot qemu-direct|loader|uki] [--uki FILE] [--memory MIB] [--id ID] [-o FILE]
//	    [--snp-measurement HEX]... [--tdx-mrtd HEX]...
//	    [--sign-key KEY.pem --provenance FILE --builder-id URI]
package main

import (
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/attested-runner/attested-runner/internal/imageref"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/provenance"
)

const usage = `refvalues: compute a runner image's reference values without booting it.

Usage:
  refvalues --image OUTDIR --agent PATH [--agent PATH]... [--boot qemu-direct|loader|uki]
            [--uki FILE] [--memory MIB] [--id ID] [-o FILE] [--snp-measurement HEX]... [--tdx-mrtd HEX]...
            [--sign-key KEY.pem --provenance FILE --builder-id URI]

--boot qemu-direct (the default) predicts a QEMU -kernel boot under OVMF:
the kernel digest is that of the image QEMU patches (it depends on --memory
and the initrd size), the command line gets OVMF's " initrd=initrd", and
PCR 4 and 9 get exact values. --boot loader predicts a boot loader that
loads the kernel file as is and passes the command line unchanged: only the
event digests and PCR 9 are listed. --boot uki predicts a Secure Boot of the
signed unified kernel image --uki (default OUTDIR/uki.efi, from
scripts/image/uki.sh): its Authenticode digest in PCR 4, its sections in
PCR 11, command line and initrd in PCR 9; Secure Boot is required.

--snp-measurement (repeatable) lists the SEV-SNP launch MEASUREMENT (48
bytes, hex) of the confidential-VM firmware the image runs under, for an
agent run with --sev-snp on a vTPM: the cloud's published launch
endorsement of its firmware, or what sev-snp-measure computes for yours.
Evidence carrying an SEV-SNP report is judged only against these; it is
refused by an image that lists none. refvalues cannot compute it: the
firmware is not part of the image.

--tdx-mrtd (repeatable) lists, likewise, the MRTD (48 bytes, hex) of the
TD firmware the image runs under, for an agent run with --tdx-vtpm: a TDX
quote riding in TPM evidence is judged only against these.

--sign-key also writes, to --provenance, the image's SLSA provenance as a
sigstore bundle signed with KEY.pem (a PEM ECDSA P-256 private key, e.g.
from "jobgate keygen --out image-key.pem"): subjects vmlinuz, initrd.img,
cmdline (with --boot uki: the UKI) and each agent binary; OUTDIR/manifest.json as the build's
parameters; its Debian packages as dependencies; the reference values as a
signed byproduct. A gate with policy.imageSigners loads that bundle in
policy.referenceValues and takes reference values only from it.
`

type config struct {
	image  string
	agents []string
	// snp are SEV-SNP launch measurements (--snp-measurement).
	snp []attest.Hex
	// mrtds are TD firmware measurements (--tdx-mrtd).
	mrtds  []attest.Hex
	boot   string
	uki    string
	memory uint64
	id     string
	out    string
	// Image provenance: the signing key, where to write it, who built.
	signKey, provenance, builderID string
	stdout                         io.Writer
	summary                        io.Writer
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(mainArgs(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func mainArgs(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := cli.NewFlagSet("refvalues", usage, stderr)
	var agents, snp, mrtds cli.StringList
	cfg := config{stdout: stdout, summary: stderr}
	fs.StringVar(&cfg.image, "image", "", "build.sh output directory (vmlinuz, initrd.img, cmdline)")
	fs.Var(&agents, "agent", "agent binary allowed in the image (repeatable; at least one)")
	fs.Var(&snp, "snp-measurement", "SEV-SNP launch measurement (96 hex digits) of the confidential-VM firmware the image runs under (repeatable)")
	fs.Var(&mrtds, "tdx-mrtd", "MRTD (96 hex digits) of the TDX firmware the image runs under with a vTPM (repeatable)")
	fs.StringVar(&cfg.boot, "boot", "qemu-direct", "boot path: qemu-direct, loader or uki")
	fs.StringVar(&cfg.uki, "uki", "", "the signed unified kernel image (with --boot uki; default OUTDIR/uki.efi)")
	fs.Uint64Var(&cfg.memory, "memory", 512, "guest RAM in MiB (qemu-direct)")
	fs.StringVar(&cfg.id, "id", "", "image id (default: runner-<digest of what is measured>)")
	fs.StringVar(&cfg.out, "o", "", "write the JSON to this file (atomically) instead of stdout")
	fs.StringVar(&cfg.signKey, "sign-key", "", "PEM ECDSA P-256 key: also write the image's signed SLSA provenance")
	fs.StringVar(&cfg.provenance, "provenance", "", "where to write the image provenance bundle (with --sign-key)")
	fs.StringVar(&cfg.builderID, "builder-id", "", "URI of the image builder, recorded as runDetails.builder.id (with --sign-key)")
	pos, err := cli.Parse(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		return cli.ExitOK
	}
	if err == nil && len(pos) > 0 {
		err = cli.Usagef("unexpected argument %q", pos[0])
	}
	if err == nil && cfg.image == "" {
		err = cli.Usagef("--image is required")
	}
	if err == nil && len(agents) == 0 {
		err = cli.Usagef("--agent is required: reference values must name the allowed agent binary")
	}
	if err == nil && (cfg.signKey != "") != (cfg.provenance != "") {
		err = cli.Usagef("--sign-key and --provenance go together")
	}
	if err == nil && cfg.signKey != "" && cfg.builderID == "" {
		err = cli.Usagef("--builder-id is required with --sign-key: consumers check who built the image")
	}
	if err == nil && cfg.uki != "" && cfg.boot != "uki" {
		err = cli.Usagef("--uki goes with --boot uki")
	}
	if err == nil {
		cfg.snp, err = measurements("--snp-measurement", snp)
	}
	if err == nil {
		cfg.mrtds, err = measurements("--tdx-mrtd", mrtds)
	}
	if err != nil {
		fmt.Fprintf(stderr, "refvalues: %v\n", err)
		return cli.ExitUsage
	}
	cfg.agents = agents
	if cfg.boot == "uki" && cfg.uki == "" {
		cfg.uki = filepath.Join(cfg.image, "uki.efi")
	}
	if err := run(ctx, cfg); err != nil {
		fmt.Fprintf(stderr, "refvalues: %v\n", err)
		if errors.Is(err, cli.ErrUsage) {
			return cli.ExitUsage
		}
		return cli.ExitFailed
	}
	return cli.ExitOK
}

func run(ctx context.Context, cfg config) error {
	var key crypto.Signer
	if cfg.signKey != "" {
		var err error
		if key, err = jobgate.LoadSigningKey(cfg.signKey); err != nil {
			return err
		}
	}
	started := time.Now()
	opts := imageref.Options{ID: cfg.id}
	var rv *attest.ReferenceValues
	var err error
	switch cfg.boot {
	case "qemu-direct":
		opts.QEMUDirect = &imageref.QEMUDirect{MemoryMiB: cfg.memory}
		rv, err = imageref.ReferenceValues(cfg.image, cfg.agents, opts)
	case "loader":
		rv, err = imageref.ReferenceValues(cfg.image, cfg.agents, opts)
	case "uki":
		rv, err = ukiReferenceValues(cfg)
	default:
		return cli.Usagef("--boot %q: want qemu-direct, loader or uki", cfg.boot)
	}
	if err != nil {
		return err
	}
	rv.Images[0].SNPMeasurements = cfg.snp
	rv.Images[0].TDXMRTDs = cfg.mrtds
	b, err := json.MarshalIndent(rv, "", "  ")
	if err != nil {
		return err
	}
	b = append(b, '\n')
	// What we write must be what the gate accepts.
	if _, err := attest.ParseReferenceValues(b); err != nil {
		return fmt.Errorf("generated reference values do not parse: %w", err)
	}
	img := rv.Images[0]
	fmt.Fprintf(cfg.summary, "image %s: %d events, %d exact PCRs, %d SEV-SNP measurements, %d TDX MRTDs, %d agent digests\n", img.ID, len(img.Events), len(img.PCRs), len(img.SNPMeasurements), len(img.TDXMRTDs), len(rv.AgentDigests))
	if key != nil {
		build, err := imageBuild(cfg, img.ID, b, started)
		if err != nil {
			return err
		}
		bundle, err := provenance.SignImage(ctx, build, key)
		if err != nil {
			return err
		}
		if err := fileio.WriteFileAtomic(cfg.provenance, bundle, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(cfg.summary, "image provenance: %s (%d subjects, %d dependencies)\n", cfg.provenance, len(build.Subjects), len(build.Dependencies))
	}
	if cfg.out == "" {
		_, err = cfg.stdout.Write(b)
		return err
	}
	return fileio.WriteFileAtomic(cfg.out, b, 0o644)
}

// maxUKISize bounds a unified kernel image.
const maxUKISize = 512 << 20

// ukiReferenceValues are the reference values of a Secure Boot of the UKI:
// imageref.ComputeUKI for the image, the agent binaries' digests.
func ukiReferenceValues(cfg config) (*attest.ReferenceValues, error) {
	uki, err := fileio.ReadFile(cfg.uki, maxUKISize)
	if err != nil {
		return nil, fmt.Errorf("--uki: %w", err)
	}
	id := cfg.id
	if id == "" {
		d := sha256.Sum256(uki)
		id = "runner-uki-" + hex.EncodeToString(d[:8])
	}
	img, err := imageref.ComputeUKI(uki, id)
	if err != nil {
		return nil, err
	}
	rv := &attest.ReferenceValues{Format: attest.ReferenceValuesFormat, Images: []attest.Image{*img}}
	for _, a := range cfg.agents {
		d, err := provenance.DigestFile(a)
		if err != nil {
			return nil, fmt.Errorf("agent %s: %w", a, err)
		}
		rv.AgentDigests = append(rv.AgentDigests, d)
	}
	return rv, rv.Validate()
}

// maxManifestSize bounds build.sh's manifest.json.
const maxManifestSize = 1 << 20

// imageBuild describes the image in cfg.image for its provenance: the
// image files and agents as subjects, build.sh's manifest as parameters and
// its .deb packages as dependencies.
func imageBuild(cfg config, imageID string, rv []byte, started time.Time) (*provenance.ImageBuild, error) {
	b := &provenance.ImageBuild{BuilderID: cfg.builderID, ReferenceValues: rv, StartedOn: started}
	seen := map[string]bool{}
	add := func(name, path string) error {
		d, err := provenance.DigestFile(path)
		if err != nil {
			return err
		}
		for i := 2; seen[name]; i++ {
			name = fmt.Sprintf("%s.%d", filepath.Base(path), i)
		}
		seen[name] = true
		b.Subjects = append(b.Subjects, provenance.Subject{Name: name, SHA256: d})
		return nil
	}
	files := []string{"vmlinuz", "initrd.img", "cmdline"}
	if cfg.boot == "uki" {
		// What boots is the UKI (it holds kernel, initrd and command line).
		if err := add(filepath.Base(cfg.uki), cfg.uki); err != nil {
			return nil, err
		}
	}
	for _, f := range files {
		if err := add(f, filepath.Join(cfg.image, f)); err != nil {
			return nil, err
		}
	}
	for _, a := range cfg.agents {
		if err := add(filepath.Base(a), a); err != nil {
			return nil, err
		}
	}
	var manifest json.RawMessage
	raw, err := fileio.ReadFile(filepath.Join(cfg.image, "manifest.json"), maxManifestSize)
	switch {
	case errors.Is(err, os.ErrNotExist):
		fmt.Fprintf(cfg.summary, "warning: %s has no manifest.json: the image provenance lists no dependencies\n", cfg.image)
		manifest = json.RawMessage("null")
	case err != nil:
		return nil, err
	default:
		var m buildManifest
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(cfg.image, "manifest.json"), err)
		}
		if b.Dependencies, err = m.dependencies(); err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(cfg.image, "manifest.json"), err)
		}
		manifest = raw
	}
	params, err := json.Marshal(map[string]any{
		"manifest":        manifest,
		"referenceValues": map[string]any{"boot": cfg.boot, "memoryMiB": cfg.memory, "imageId": imageID},
	})
	if err != nil {
		return nil, err
	}
	b.Parameters = params
	b.FinishedOn = time.Now()
	return b, nil
}

// buildManifest is the part of build.sh's manifest.json that names inputs.
type buildManifest struct {
	Kernel debPackage `json:"kernel"`
	Agent  *struct {
		Packages []debPackage `json:"packages"`
		// Runtime are the runner's runtime packages (build.sh --runtime).
		Runtime []debPackage `json:"runtime"`
		Runner  *struct {
			Source        string `json:"source"`
			Version       string `json:"version"`
			TarballSHA256 string `json:"tarballSHA256"`
		} `json:"runner"`
	} `json:"agent"`
}

type debPackage struct {
	Package   string `json:"package"`
	Version   string `json:"version"`
	DebSHA256 string `json:"debSHA256"`
}

func (m *buildManifest) dependencies() ([]provenance.Dependency, error) {
	pkgs := []debPackage{m.Kernel}
	var deps []provenance.Dependency
	if m.Agent != nil {
		pkgs = append(append(pkgs, m.Agent.Packages...), m.Agent.Runtime...)
		// The GitHub runner release the image carries (build.sh
		// --runner-tarball/--runner-version): a dependency by its pinned
		// tarball digest.
		if r := m.Agent.Runner; r != nil && r.Source == "tarball" {
			d, err := hex.DecodeString(r.TarballSHA256)
			if err != nil || len(d) != sha256.Size || r.Version == "" {
				return nil, fmt.Errorf("runner tarball: want a version and the tarball's SHA-256")
			}
			deps = append(deps, provenance.Dependency{Name: "pkg:github/actions/runner@v" + url.PathEscape(r.Version), SHA256: d})
		}
	}
	for _, p := range pkgs {
		d, err := hex.DecodeString(p.DebSHA256)
		if err != nil || len(d) != sha256.Size || p.Package == "" || p.Version == "" {
			return nil, fmt.Errorf("package %q %q: want a name, a version and the .deb's SHA-256", p.Package, p.Version)
		}
		deps = append(deps, provenance.Dependency{
			Name:   "pkg:deb/debian/" + url.PathEscape(p.Package) + "@" + url.PathEscape(p.Version) + "?arch=amd64",
			SHA256: d,
		})
	}
	return deps, nil
}

// measurements parses the 48-byte hex values given with flag.
func measurements(flag string, values []string) ([]attest.Hex, error) {
	var out []attest.Hex
	for _, m := range values {
		d, err := hex.DecodeString(m)
		if err != nil || len(d) != 48 {
			return nil, cli.Usagef("%s %q: want 48 bytes in hex (96 digits)", flag, m)
		}
		out = append(out, d)
	}
	return out, nil
}
