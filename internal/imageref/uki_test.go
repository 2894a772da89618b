package imageref

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// makeUKI builds a small unified kernel image with objcopy from the test
// stub and the given section contents (not a bootable kernel: ComputeUKI
// only reads sections).
func makeUKI(t *testing.T, sections map[string]string) []byte {
	t.Helper()
	objcopy, err := exec.LookPath("objcopy")
	if err != nil {
		t.Skip("objcopy not installed (Debian: binutils)")
	}
	dir := t.TempDir()
	args := []string{}
	vma := map[string]string{".osrel": "0x20000", ".cmdline": "0x30000", ".linux": "0x2000000", ".initrd": "0x3000000"}
	for _, name := range []string{".osrel", ".cmdline", ".linux", ".initrd"} {
		content, ok := sections[name]
		if !ok {
			continue
		}
		f := filepath.Join(dir, name[1:])
		if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, "--add-section", name+"="+f, "--change-section-vma", name+"="+vma[name])
	}
	out := filepath.Join(dir, "uki.efi")
	cmd := exec.Command(objcopy, append(args, filepath.Join("testdata", "linuxx64.efi.stub"), out)...)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("objcopy: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestComputeUKI(t *testing.T) {
	uki := makeUKI(t, map[string]string{".osrel": "ID=test\n", ".cmdline": "console=ttyS0", ".linux": "KERNEL", ".initrd": "INITRD"})
	img, err := ComputeUKI(uki, "uki")
	if err != nil {
		t.Fatal(err)
	}
	app, err := AuthenticodeSHA256(uki)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]byte{
		app,
		digest([]byte(".linux\x00")), digest([]byte("KERNEL")),
		digest([]byte(".osrel\x00")), digest([]byte("ID=test\n")),
		digest([]byte(".cmdline\x00")), digest([]byte("console=ttyS0")),
		digest([]byte(".initrd\x00")), digest([]byte("INITRD")),
		digest(LoadOptions("console=ttyS0")), digest([]byte("INITRD")),
	}
	wantPCR := []uint32{4, 11, 11, 11, 11, 11, 11, 11, 11, 9, 9}
	if len(img.Events) != len(want) {
		t.Fatalf("%d events, want %d", len(img.Events), len(want))
	}
	for i, e := range img.Events {
		if e.PCR != wantPCR[i] || !bytes.Equal(e.Digest, want[i]) {
			t.Errorf("event %d: PCR %d %x, want PCR %d %x", i, e.PCR, []byte(e.Digest), wantPCR[i], want[i])
		}
	}
	if !img.SecureBoot {
		t.Error("UKI reference does not require Secure Boot")
	}
	if !bytes.Equal(img.PCRs[11], replay(want[1:9]...)) || !bytes.Equal(img.PCRs[9], replay(want[9:]...)) {
		t.Error("PCR 9/11 values are not the replay of the listed events")
	}

	if _, err := ComputeUKI(makeUKI(t, map[string]string{".linux": "K", ".cmdline": "c"}), "x"); !errors.Is(err, ErrImage) {
		t.Errorf("UKI without .initrd: err = %v, want ErrImage", err)
	}
	if _, err := ComputeUKI(uki, ""); !errors.Is(err, ErrImage) {
		t.Errorf("no id: err = %v, want ErrImage", err)
	}
}
