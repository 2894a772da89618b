package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/provenance"
)

// Limits on bundle files: a JSON-lines file (gh attestation download)
// holds at most maxBundlesPerSource bundles in at most maxBundleFile bytes,
// each within provenance.MaxBundleSize.
const (
	maxBundleFile       = 64 << 20
	maxBundlesPerSource = 256
)

// namedBundle is one bundle to try, and where it came from.
type namedBundle struct {
	source string
	raw    []byte
}

// bundleSource finds the bundles for an artifact.
type bundleSource interface {
	bundles(ctx context.Context, artifact string, sha256Digest []byte) ([]namedBundle, error)
}

// fileBundles reads --bundle, or PATH.sigstore.json next to each artifact.
type fileBundles struct{ explicit string }

func (f fileBundles) bundles(_ context.Context, artifact string, _ []byte) ([]namedBundle, error) {
	path := f.explicit
	if path == "" {
		path = artifact + ".sigstore.json"
	}
	b, err := cli.ReadFile(path, maxBundleFile)
	if err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}
	return splitBundles(path, b)
}

// splitBundles reads one JSON value (a bundle) or a sequence of them (JSON
// lines, as gh attestation download writes them). Several bundles are
// named FILE#N, from 1.
func splitBundles(name string, b []byte) ([]namedBundle, error) {
	var out []namedBundle
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		var raw json.RawMessage
		err := dec.Decode(&raw)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("bundle %s: value %d: %w: %v", name, len(out)+1, provenance.ErrMalformed, err)
		}
		if len(out) == maxBundlesPerSource {
			return nil, fmt.Errorf("bundle %s: %w: more than %d bundles", name, provenance.ErrTooLarge, maxBundlesPerSource)
		}
		out = append(out, namedBundle{raw: raw})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bundle %s: %w: no bundle in it", name, provenance.ErrMalformed)
	}
	for i := range out {
		out[i].source = name
		if len(out) > 1 {
			out[i].source = fmt.Sprintf("%s#%d", name, i+1)
		}
	}
	return out, nil
}
