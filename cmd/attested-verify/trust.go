package main

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/provenance"
	"github.com/sigstore/sigstore-go/pkg/root"
)

// maxTrustFile bounds a key or trusted-root file (public-good's trusted
// root is ~10 KiB).
const maxTrustFile = 4 << 20

// trustedRootMediaType prefixes the media type of a Sigstore trusted root.
const trustedRootMediaType = "application/vnd.dev.sigstore.trustedroot"

// loadGateKeys reads --gate-key: PEM public keys. JSON there is most
// likely a Sigstore trusted root given to the wrong flag: a usage error
// that says where it goes.
func loadGateKeys(path string) ([]crypto.PublicKey, error) {
	return loadPublicKeys("--gate-key", path, "the gate's GET /v1/roots")
}

// loadPublicKeys reads a file of PEM public keys given to flag; another
// kind of file is a usage error naming the format.
func loadPublicKeys(flag, path, origin string) ([]crypto.PublicKey, error) {
	b, err := cli.ReadFile(path, maxTrustFile)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if t := bytes.TrimSpace(b); len(t) > 0 && (t[0] == '{' || t[0] == '[') {
		return nil, cli.Usagef("%s %s is JSON (a Sigstore trusted root?): %s expects PEM public keys (-----BEGIN PUBLIC KEY-----, %s); a Sigstore trusted_root.json goes in --trusted-root", flag, path, flag, origin)
	}
	keys, err := provenance.ParseTrustedRoots(b)
	if err != nil {
		return nil, cli.Usagef("%s %s: %v: want PEM public keys (-----BEGIN PUBLIC KEY-----, %s)", flag, path, err, origin)
	}
	return keys, nil
}

// loadTrustedRoot reads --trusted-root: a Sigstore trusted_root.json as
// cosign takes it, or JSON lines of them as gh attestation trusted-root
// writes them. A PEM file there is a gate key given to the old flag.
func loadTrustedRoot(path string) (root.TrustedMaterial, error) {
	b, err := cli.ReadFile(path, maxTrustFile)
	if err != nil {
		return nil, fmt.Errorf("--trusted-root: %w", err)
	}
	if bytes.Contains(b, []byte("-----BEGIN")) {
		return nil, cli.Usagef("--trusted-root %s is PEM: --trusted-root expects a Sigstore trusted_root.json (media type %s+json, as cosign and gh take); gate public keys go in --gate-key", path, trustedRootMediaType)
	}
	var roots root.TrustedMaterialCollection
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, cli.Usagef("--trusted-root %s: not JSON (%v): want a Sigstore trusted_root.json", path, err)
		}
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		if json.Unmarshal(raw, &probe) != nil || len(probe.MediaType) < len(trustedRootMediaType) || probe.MediaType[:len(trustedRootMediaType)] != trustedRootMediaType {
			return nil, cli.Usagef("--trusted-root %s: media type %q: want a Sigstore trusted_root.json (%s+json)", path, probe.MediaType, trustedRootMediaType)
		}
		tr, err := root.NewTrustedRootFromJSON(raw)
		if err != nil {
			return nil, cli.Usagef("--trusted-root %s: %v", path, err)
		}
		roots = append(roots, tr)
	}
	switch len(roots) {
	case 0:
		return nil, cli.Usagef("--trusted-root %s is empty: want a Sigstore trusted_root.json", path)
	case 1:
		return roots[0], nil
	}
	return roots, nil
}

func sha256Of(b []byte) []byte { d := sha256.Sum256(b); return d[:] }
