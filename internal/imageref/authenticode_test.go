package imageref_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/internal/imageref"
)

// Digests printed by Debian's pesign 0.112 (`pesign --hash --in FILE`).
const (
	stubDigest       = "28fd6b9a39b745449fa2389a31045900804eae49ea7edb0f8c152a131df0002c"
	signedStubDigest = "32cab00c99673e8b50d5d7f7602b2f8fdb5138aba67d1d2e422fdc8464310bc1"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestAuthenticodeMatchesPesign(t *testing.T) {
	for _, tc := range []struct{ file, want string }{
		{"linuxx64.efi.stub", stubDigest},
		{"linuxx64-signed.efi.stub", signedStubDigest},
	} {
		t.Run(tc.file, func(t *testing.T) {
			d, err := imageref.AuthenticodeSHA256(readTestdata(t, tc.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := hex.EncodeToString(d); got != tc.want {
				t.Errorf("AuthenticodeSHA256 = %s, want %s (pesign)", got, tc.want)
			}
		})
	}
}

// TestAuthenticodeAgainstInstalledPesign cross-checks every EFI binary the
// machine has against pesign, when pesign is installed.
func TestAuthenticodeAgainstInstalledPesign(t *testing.T) {
	pesign, err := exec.LookPath("pesign")
	if err != nil {
		t.Skip("pesign not installed (Debian: apt-get install pesign); the fixed digests in TestAuthenticodeMatchesPesign still apply")
	}
	files, _ := filepath.Glob("/usr/lib/systemd/boot/efi/*.efi*")
	files = append(files, filepath.Join("testdata", "linuxx64-signed.efi.stub"))
	for _, f := range files {
		if strings.HasSuffix(f, ".elf.stub") {
			continue
		}
		out, err := exec.Command(pesign, "--hash", "--in", f).Output()
		if err != nil {
			t.Fatalf("pesign %s: %v", f, err)
		}
		want := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), "hash:"))
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		d, err := imageref.AuthenticodeSHA256(b)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if got := hex.EncodeToString(d); got != want {
			t.Errorf("%s: %s, pesign says %s", f, got, want)
		}
	}
}

// peOffsets returns the CheckSum offset and the first section's raw data
// offset of a PE32+ image.
func peOffsets(t *testing.T, b []byte) (checksum, section int) {
	t.Helper()
	opt := int(binary.LittleEndian.Uint32(b[0x3c:])) + 24
	if binary.LittleEndian.Uint16(b[opt:]) != 0x20b {
		t.Fatal("test image is not PE32+")
	}
	numSections := int(binary.LittleEndian.Uint16(b[opt-24+6:]))
	optSize := int(binary.LittleEndian.Uint16(b[opt-24+20:]))
	secTable := opt + optSize
	if numSections == 0 {
		t.Fatal("no sections")
	}
	return opt + 64, int(binary.LittleEndian.Uint32(b[secTable+20:]))
}

func TestAuthenticodeCoverage(t *testing.T) {
	unsigned := readTestdata(t, "linuxx64.efi.stub")
	signed := readTestdata(t, "linuxx64-signed.efi.stub")
	checksum, section := peOffsets(t, unsigned)
	tests := []struct {
		name   string
		img    []byte
		mutate func(b []byte)
		same   bool
	}{
		{"checksum field is excluded", unsigned, func(b []byte) { b[checksum] ^= 0xff }, true},
		{"certificate table contents are excluded", signed, func(b []byte) { b[len(b)-10] ^= 0xff }, true},
		{"section data is covered", unsigned, func(b []byte) { b[section+100] ^= 0x01 }, false},
		{"trailing data is covered", unsigned, func(b []byte) { b[len(b)-1] ^= 0x01 }, false},
		{"header bytes are covered", unsigned, func(b []byte) { b[0x40] ^= 0x01 }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before, err := imageref.AuthenticodeSHA256(tc.img)
			if err != nil {
				t.Fatal(err)
			}
			b := bytes.Clone(tc.img)
			tc.mutate(b)
			after, err := imageref.AuthenticodeSHA256(b)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Equal(before, after) != tc.same {
				t.Errorf("digest changed = %v, want %v", !bytes.Equal(before, after), !tc.same)
			}
		})
	}
}

func TestAuthenticodeRejects(t *testing.T) {
	stub := readTestdata(t, "linuxx64.efi.stub")
	_, section := peOffsets(t, stub)
	tests := map[string][]byte{
		"empty":             nil,
		"not MZ":            bytes.Repeat([]byte{0x7f}, 4096),
		"MZ only":           append([]byte("MZ"), make([]byte, 100)...),
		"cut in a section":  stub[:section+16],
		"cut in the header": stub[:0x100],
	}
	for name, b := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := imageref.AuthenticodeSHA256(b); !errors.Is(err, imageref.ErrNotPE) {
				t.Errorf("err = %v, want ErrNotPE", err)
			}
		})
	}
}

func FuzzAuthenticodeSHA256(f *testing.F) {
	f.Add(readTestdata(f, "linuxx64.efi.stub"))
	f.Add(readTestdata(f, "linuxx64-signed.efi.stub")[:4096])
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := imageref.AuthenticodeSHA256(b)
		if err == nil && len(d) != 32 {
			t.Fatalf("digest of %d bytes", len(d))
		}
	})
}
