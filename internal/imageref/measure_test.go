package imageref

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
)

// Values of the real boot in testdata/qemu-direct-serial.log (see
// testdata/README.md). The kernel digest is that of QEMU's patched image;
// the e2e test computes it from the kernel file.
const (
	realCmdline      = "console=ttyS0 panic=-1 quiet"
	realInitrdSize   = 834154
	realInitrdDigest = "30dec2971c4327a7d7e8243fccf270f5ad33ab4ba2e3d569729753696637765f"
	realKernelEvent  = "0d2b8fa757e8fe0d853146ecb9cc2114fab6362c297f35e758b7ce98801cb01e"
	realCmdlineEvent = "5218e8622142b41653a1bea06b7afaae8720c9035c462847ac28dc3b093f266c"
	realPCR4         = "f19e9bd85cc38544914733987dc5ea06c0ddfec5af98928fc258987fffb53699"
	realPCR9         = "50a9fc953262875b648b77bf715aed52e26b2974c796eadb7b0e501f500491e7"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func realReport(t testing.TB) *BootReport { return serialReport(t, "qemu-direct-serial.log") }

// serialReport parses a recorded boot's serial log from testdata.
func serialReport(t testing.TB, name string) *BootReport {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseSerialLog(b)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// realImage is the reference image Compute gives for the real boot's image
// (its kernel digest taken from the boot; the rest computed here).
func realImage(t testing.TB) *attest.Image {
	t.Helper()
	lo := digest(LoadOptions(realCmdline + qemuInitrdOption))
	kernel := unhex(t, realKernelEvent)
	initrd := unhex(t, realInitrdDigest)
	return &attest.Image{
		ID: "real",
		PCRs: map[uint32]attest.Hex{
			4: replay(kernel, digest([]byte(CallingEFIApplication)), digest(separator)),
			9: replay(lo, initrd),
		},
		Events: []attest.EventRef{
			{PCR: 4, Digest: kernel, Description: DescKernel},
			{PCR: 9, Digest: lo, Description: DescLoadOptions},
			{PCR: 9, Digest: initrd, Description: DescInitrd},
		},
	}
}

// TestLoadOptionsEncoding pins how the command line is measured: OVMF
// appends " initrd=initrd", and the stub hashes the UTF-16LE string with
// its NUL terminator. Plain ASCII or no NUL give other digests.
func TestLoadOptionsEncoding(t *testing.T) {
	lo := LoadOptions(realCmdline + qemuInitrdOption)
	if got := hex.EncodeToString(digest(lo)); got != realCmdlineEvent {
		t.Errorf("LoadOptions digest %s, real boot measured %s", got, realCmdlineEvent)
	}
	if len(lo) != 2*(len(realCmdline)+len(qemuInitrdOption)+1) || !bytes.HasSuffix(lo, []byte{0, 0}) {
		t.Errorf("LoadOptions is %d bytes, want UTF-16LE with NUL", len(lo))
	}
	for _, wrong := range [][]byte{
		[]byte(realCmdline + qemuInitrdOption),
		LoadOptions(realCmdline),
		lo[:len(lo)-2],
	} {
		if hex.EncodeToString(digest(wrong)) == realCmdlineEvent {
			t.Errorf("encoding %q also matches: the test proves nothing", wrong)
		}
	}
	if got := LoadOptions("é€"); !bytes.Equal(got, []byte{0xe9, 0, 0xac, 0x20, 0, 0}) {
		t.Errorf("non-ASCII LoadOptions = %x", got)
	}
}

// TestPCRReplayMatchesRealBoot checks the PCR 4 and PCR 9 event sequences
// Compute assumes against the values the booted machine read from its TPM.
func TestPCRReplayMatchesRealBoot(t *testing.T) {
	r := realReport(t)
	img := realImage(t)
	for _, i := range []uint32{4, 9} {
		if got, want := hex.EncodeToString(img.PCRs[i]), hex.EncodeToString(r.PCRs[i]); got != want {
			t.Errorf("computed PCR %d = %s, booted machine has %s", i, got, want)
		}
	}
	if hex.EncodeToString(r.PCRs[4]) != realPCR4 || hex.EncodeToString(r.PCRs[9]) != realPCR9 {
		t.Errorf("test data PCRs changed")
	}
}

func TestCheck(t *testing.T) {
	r := realReport(t)
	mm, err := Check(realImage(t), r)
	if err != nil {
		t.Fatal(err)
	}
	if len(mm) != 0 {
		t.Fatalf("real boot does not match its reference image: %v", mm)
	}

	// Each tampered reference names exactly the event or PCR that differs.
	otherCmdline := realImage(t)
	otherCmdline.Events[1].Digest = digest(LoadOptions(realCmdline + " init=/bin/sh" + qemuInitrdOption))
	otherInitrd := realImage(t)
	otherInitrd.Events[2].Digest = digest([]byte("another initrd"))
	otherPCR := realImage(t)
	otherPCR.PCRs[4] = make([]byte, 32)
	for _, tc := range []struct {
		name string
		img  *attest.Image
		pcr  uint32
		desc string
	}{
		{"command line", otherCmdline, 9, DescLoadOptions},
		{"initrd", otherInitrd, 9, DescInitrd},
		{"PCR 4 value", otherPCR, 4, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mm, err := Check(tc.img, r)
			if err != nil {
				t.Fatal(err)
			}
			if len(mm) != 1 || mm[0].PCR != tc.pcr || (mm[0].Event == nil) != (tc.desc == "") ||
				(mm[0].Event != nil && mm[0].Event.Description != tc.desc) {
				t.Fatalf("mismatches %v, want one on PCR %d (%q)", mm, tc.pcr, tc.desc)
			}
		})
	}

	// A log that does not replay to the PCRs is an error, not a mismatch.
	bad := *r
	bad.PCRs = map[uint32][]byte{9: make([]byte, 32)}
	if _, err := Check(realImage(t), &bad); !errors.Is(err, ErrReplay) {
		t.Errorf("Check with wrong PCR 9: err = %v, want ErrReplay", err)
	}
	if _, err := Check(&attest.Image{ID: "empty"}, r); !errors.Is(err, ErrImage) {
		t.Errorf("Check with empty image: err = %v, want ErrImage", err)
	}
}

// TestRealLogLabels pins what the real -kernel boot measures where (the
// table in docs/measured-boot.md).
func TestRealLogLabels(t *testing.T) {
	r := realReport(t)
	evs, err := ReplayEventLog(r.EventLog, r.PCRs)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		pcr         uint32
		typ, label  string
		digestOrNil string
	}
	var got []row
	for _, e := range evs {
		if e.PCR == 4 || e.PCR == 9 {
			got = append(got, row{e.PCR, e.Type, e.Label, hex.EncodeToString(e.Digest)})
		}
	}
	sep := hex.EncodeToString(digest(separator))
	want := []row{
		{4, "EV_EFI_BOOT_SERVICES_APPLICATION", "", realKernelEvent},
		{4, "EV_EFI_ACTION", CallingEFIApplication, hex.EncodeToString(digest([]byte(CallingEFIApplication)))},
		{4, "EV_SEPARATOR", "", sep},
		{9, "EV_EVENT_TAG", "LOADED_IMAGE::LoadOptions", realCmdlineEvent},
		{9, "EV_EVENT_TAG", "Linux initrd", realInitrdDigest},
	}
	if len(got) != len(want) {
		t.Fatalf("PCR 4/9 events:\n%v\nwant\n%v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	if len(evs) != 24 {
		t.Errorf("%d events, want 24", len(evs))
	}
}

// fakeKernel is a minimal x86 boot-protocol 2.15 header, enough for
// QEMUPatchedKernel (not a PE image).
func fakeKernel() []byte {
	k := make([]byte, 40*512)
	k[hdrSetupSects] = 39
	copy(k[hdrMagic:], "HdrS")
	binary.LittleEndian.PutUint16(k[hdrVersion:], 0x20f)
	k[hdrLoadFlags] = loadFlagLoadedHigh
	binary.LittleEndian.PutUint32(k[hdrInitrdAddrMax:], 0x7fffffff)
	binary.LittleEndian.PutUint16(k[hdrXLoadFlags:], 0x7f)
	return k
}

func TestQEMUPatchedKernel(t *testing.T) {
	k := fakeKernel()
	p, err := QEMUPatchedKernel(k, realInitrdSize, realCmdline, 512)
	if err != nil {
		t.Fatal(err)
	}
	le32 := func(off int) uint32 { return binary.LittleEndian.Uint32(p[off:]) }
	// initrd_max = 512 MiB - acpi_data_size - 1; the initrd sits below it,
	// page aligned.
	wantAddr := (uint32(512<<20) - qemuACPIDataSize - 1 - realInitrdSize) &^ 4095
	if le32(hdrRamdiskImage) != wantAddr || le32(hdrRamdiskSize) != realInitrdSize {
		t.Errorf("ramdisk %#x+%d, want %#x+%d", le32(hdrRamdiskImage), le32(hdrRamdiskSize), wantAddr, realInitrdSize)
	}
	if le32(hdrCmdLinePtr) != 0x20000 || p[hdrTypeOfLoader] != 0xb0 || p[hdrLoadFlags] != 0x81 ||
		binary.LittleEndian.Uint16(p[hdrHeapEndPtr:]) != 0xfe00 {
		t.Errorf("header fields: cmd_line_ptr %#x loader %#x loadflags %#x heap_end %#x",
			le32(hdrCmdLinePtr), p[hdrTypeOfLoader], p[hdrLoadFlags], binary.LittleEndian.Uint16(p[hdrHeapEndPtr:]))
	}
	for i := range k {
		if k[i] != p[i] && (i < hdrTypeOfLoader || i >= hdrCmdLinePtr+4) {
			t.Errorf("byte %#x changed outside the fields QEMU writes", i)
		}
	}
	// The input is not modified.
	if !bytes.Equal(k, fakeKernel()) {
		t.Error("QEMUPatchedKernel modified its input")
	}
	// More memory moves the initrd, so the kernel digest depends on -m.
	p2, err := QEMUPatchedKernel(k, realInitrdSize, realCmdline, 1024)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(p, p2) {
		t.Error("512 and 1024 MiB give the same patched kernel")
	}
	// Above 2.75 GiB, q35 keeps 2 GiB below 4 GiB.
	p3, _ := QEMUPatchedKernel(k, realInitrdSize, realCmdline, 4096)
	if got := binary.LittleEndian.Uint32(p3[hdrRamdiskImage:]); got != (0x80000000-qemuACPIDataSize-1-realInitrdSize)&^4095 {
		t.Errorf("4 GiB guest: ramdisk at %#x", got)
	}
}

func TestQEMUPatchedKernelRejects(t *testing.T) {
	noMagic := fakeKernel()
	copy(noMagic[hdrMagic:], "XXXX")
	old := fakeKernel()
	binary.LittleEndian.PutUint16(old[hdrVersion:], 0x201)
	for name, tc := range map[string]struct {
		k       []byte
		initrd  int
		cmdline string
		mem     uint64
	}{
		"no header":      {noMagic, 1, realCmdline, 512},
		"old protocol":   {old, 1, realCmdline, 512},
		"vga=":           {fakeKernel(), 1, "vga=791", 512},
		"no memory":      {fakeKernel(), 1, realCmdline, 0},
		"initrd too big": {fakeKernel(), 600 << 20, realCmdline, 512},
		"short":          {fakeKernel()[:0x100], 1, realCmdline, 512},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := QEMUPatchedKernel(tc.k, tc.initrd, tc.cmdline, tc.mem); !errors.Is(err, ErrImage) {
				t.Errorf("err = %v, want ErrImage", err)
			}
		})
	}
}

func TestComputeRejects(t *testing.T) {
	stub, err := os.ReadFile(filepath.Join("testdata", "linuxx64.efi.stub"))
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{ID: "x"}
	for name, tc := range map[string]struct {
		kernel, initrd []byte
		cmdline        string
		opts           Options
		want           error
	}{
		"no initrd":        {stub, nil, "quiet", opts, ErrImage},
		"NUL in cmdline":   {stub, []byte("x"), "a\x00b", opts, ErrImage},
		"long cmdline":     {stub, []byte("x"), strings.Repeat("a", MaxCmdlineSize+1), opts, ErrImage},
		"not PE":           {[]byte("not a kernel"), []byte("x"), "quiet", opts, ErrNotPE},
		"no id":            {stub, []byte("x"), "quiet", Options{}, ErrImage},
		"QEMU, no bzImage": {stub, []byte("x"), "quiet", Options{ID: "x", QEMUDirect: &QEMUDirect{MemoryMiB: 512}}, ErrImage},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Compute(tc.kernel, tc.initrd, tc.cmdline, tc.opts); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// TestComputeLoaderPath: without QEMUDirect the kernel is measured as its
// file and the command line passes unchanged; only PCR 9 is exact.
func TestComputeLoaderPath(t *testing.T) {
	stub, err := os.ReadFile(filepath.Join("testdata", "linuxx64.efi.stub"))
	if err != nil {
		t.Fatal(err)
	}
	initrd := []byte("initrd bytes")
	img, err := Compute(stub, initrd, "quiet", Options{ID: "loader"})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(initrd)
	if hex.EncodeToString(img.Events[0].Digest) != "28fd6b9a39b745449fa2389a31045900804eae49ea7edb0f8c152a131df0002c" ||
		!bytes.Equal(img.Events[1].Digest, digest(LoadOptions("quiet"))) ||
		!bytes.Equal(img.Events[2].Digest, sum[:]) {
		t.Errorf("events %+v", img.Events)
	}
	if _, ok := img.PCRs[4]; ok || len(img.PCRs) != 1 {
		t.Errorf("loader path pins PCRs %v, want only 9", img.PCRs)
	}
	rv := attest.ReferenceValues{Format: attest.ReferenceValuesFormat, Images: []attest.Image{*img}, AgentDigests: []attest.Hex{sum[:]}}
	if err := rv.Validate(); err != nil {
		t.Errorf("attest rejects the computed image: %v", err)
	}
}
