package fleet

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/provenance"
)

// TestVerifyImage: what verifyImage refuses, each alone, and what it
// hands the provider when it does not: the verified bytes and a launch VSA
// for this VM.
func TestVerifyImage(t *testing.T) {
	rv := &attest.ReferenceValues{Format: attest.ReferenceValuesFormat,
		Images:       []attest.Image{{ID: "runner-test", PCRs: map[uint32]attest.Hex{4: make(attest.Hex, 32)}}},
		AgentDigests: []attest.Hex{make(attest.Hex, 32)}}
	gate, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	at := time.Now()
	pool := func(img *image) *PoolConfig {
		return &PoolConfig{Name: "linux", Image: ImageConfig{Dir: img.dir, Boot: "qemu-direct", Provenance: img.provenance}}
	}

	img := newImage(t, rv)
	b, err := verifyImage(context.Background(), pool(img), "linux-0a1b", []crypto.PublicKey{img.signer}, "https://gate.test", gate, at)
	if err != nil {
		t.Fatal(err)
	}
	if b.ImageID != "runner-test" || !bytes.Equal(b.Files["vmlinuz"], []byte("kernel bytes")) || len(b.Files) != 3 {
		t.Fatalf("boot files %s %v", b.ImageID, b.Files)
	}
	if vm, files, err := provenance.VerifyLaunchVSA(b.VSA, []crypto.PublicKey{gate.Public()}); err != nil || vm != "linux-0a1b" || len(files) != 3 {
		t.Fatalf("launch VSA for %q %v: %v", vm, files, err)
	}

	twoImages := *rv
	twoImages.Images = append(append([]attest.Image{}, rv.Images...), attest.Image{ID: "runner-other", PCRs: rv.Images[0].PCRs})
	for _, tc := range []struct {
		name   string
		img    func(t *testing.T) *image
		gateID string
		want   error
	}{
		{"provenance missing", func(t *testing.T) *image {
			img := newImage(t, rv)
			os.Remove(img.provenance)
			return img
		}, "https://gate.test", ErrImageRefused},
		{"provenance over its limit", func(t *testing.T) *image {
			img := newImage(t, rv)
			if err := os.WriteFile(img.provenance, make([]byte, maxProvenance+1), 0o644); err != nil {
				t.Fatal(err)
			}
			return img
		}, "https://gate.test", ErrImageRefused},
		{"two reference images", func(t *testing.T) *image { return newImage(t, &twoImages) }, "https://gate.test", ErrImageRefused},
		{"boot file missing", func(t *testing.T) *image {
			img := newImage(t, rv)
			os.Remove(filepath.Join(img.dir, "cmdline"))
			return img
		}, "https://gate.test", ErrImageRefused},
		{"no gate id for the launch VSA", func(t *testing.T) *image { return newImage(t, rv) }, "", provenance.ErrNoExpectation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := tc.img(t)
			b, err := verifyImage(context.Background(), pool(img), "linux-0a1b", []crypto.PublicKey{img.signer}, tc.gateID, gate, at)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %+v, %v; want %v", b, err, tc.want)
			}
		})
	}
}
