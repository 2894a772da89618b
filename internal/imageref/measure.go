package imageref

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode/utf16"

	"github.com/attested-runner/attested-runner/attest"
)

// Limits on image inputs.
const (
	// MaxKernelSize bounds a kernel image (Debian's is about 8 MiB).
	MaxKernelSize = 64 << 20
	// MaxInitrdSize bounds an initrd; QEMU must also fit it below 4 GiB.
	MaxInitrdSize = 1 << 30
	// MaxCmdlineSize bounds a kernel command line (x86 COMMAND_LINE_SIZE).
	MaxCmdlineSize = 2048
)

// Measured-boot constants (TCG PC Client PFP spec and the Linux EFI stub).
const (
	// CallingEFIApplication is the EV_EFI_ACTION text UEFI firmware
	// extends into PCR 4 when it starts a boot option.
	CallingEFIApplication = "Calling EFI Application from Boot Option"
	// linuxEventIDInitrd and linuxEventIDLoadOptions are the EV_EVENT_TAG
	// ids the Linux EFI stub uses (drivers/firmware/efi/libstub).
	linuxEventIDInitrd      = 0x8F3B22EC
	linuxEventIDLoadOptions = 0x8F3B22ED
	// qemuInitrdOption is what OVMF appends to the command line it passes
	// as LoadOptions when QEMU was given -initrd (X86QemuLoadImageLib).
	qemuInitrdOption = " initrd=initrd"
)

// Event descriptions used in the reference values.
const (
	DescKernel      = "kernel (EV_EFI_BOOT_SERVICES_APPLICATION, Authenticode SHA-256)"
	DescLoadOptions = "kernel command line (EV_EVENT_TAG LOADED_IMAGE::LoadOptions, UTF-16LE with NUL)"
	DescInitrd      = "initrd (EV_EVENT_TAG Linux initrd, SHA-256 of the file)"
)

// ErrImage marks image inputs that cannot be measured.
var ErrImage = errors.New("image")

// Options says how the image is booted, which decides what the firmware
// measures.
type Options struct {
	// ID names the image in the reference values.
	ID string
	// QEMUDirect describes a QEMU -kernel/-initrd/-append boot under OVMF.
	// Nil means the kernel file is loaded unmodified by a boot loader and
	// gets the kernel command line as its LoadOptions as is.
	QEMUDirect *QEMUDirect
}

// QEMUDirect is a QEMU (q35 machine) direct kernel boot under OVMF.
//
// QEMU writes boot-protocol fields into the kernel's setup header (loader
// type, heap end, command-line address, initrd address and size) before
// handing the kernel to OVMF through fw_cfg, and OVMF measures that patched
// image. The initrd address depends on the guest's memory below 4 GiB, so
// the kernel digest depends on -m and on the initrd size.
type QEMUDirect struct {
	// MemoryMiB is the guest RAM (QEMU -m, in MiB).
	MemoryMiB uint64
}

// Computed is the offline prediction of what a boot measures.
type Computed struct {
	// KernelFileDigest is the Authenticode SHA-256 of the kernel file, as a
	// boot loader or UKI path measures it, and as db/dbx entries name it.
	KernelFileDigest []byte
	// KernelDigest is the PCR 4 EV_EFI_BOOT_SERVICES_APPLICATION digest
	// for the boot path in Options (equal to KernelFileDigest unless
	// QEMUDirect).
	KernelDigest []byte
	// LoadOptions is the kernel's LoadOptions as the stub measures them:
	// UTF-16LE, NUL-terminated.
	LoadOptions []byte
	// LoadOptionsDigest and InitrdDigest are the PCR 9 event digests.
	LoadOptionsDigest []byte
	InitrdDigest      []byte
	// PCRs are the SHA-256 PCR values the events determine on their own:
	// PCR 9 always, PCR 4 for QEMUDirect (OVMF measures only the kernel,
	// the "Calling EFI Application" action and the separator there).
	PCRs map[uint32][]byte
}

// Compute predicts, from the image files alone, the measurements of a boot
// and returns them as a reference image: the kernel event in PCR 4, the
// command-line and initrd events in PCR 9, and exact values for the PCRs
// those events fully determine. Secure Boot is not required (a -kernel boot
// cannot enforce it).
//
// What it assumes, checked against OVMF 2022.11 + QEMU 7.2 (Debian 12) and a
// Linux 6.1 EFI stub: the firmware measures the kernel by its Authenticode
// digest; the stub measures LoadOptions and then the initrd it loads through
// LINUX_EFI_INITRD_MEDIA_GUID as EV_EVENT_TAG events in PCR 9; nothing else
// extends PCR 9. Older kernel EFI stubs measure less (or nothing) into
// PCR 9 and will not match: re-check a new kernel series with the e2e test.
func Compute(kernel, initrd []byte, cmdline string, opts Options) (*attest.Image, error) {
	c, err := ComputeDigests(kernel, initrd, cmdline, opts)
	if err != nil {
		return nil, err
	}
	if opts.ID == "" {
		return nil, fmt.Errorf("%w: no image id", ErrImage)
	}
	img := &attest.Image{
		ID:   opts.ID,
		PCRs: map[uint32]attest.Hex{},
		Events: []attest.EventRef{
			{PCR: 4, Digest: c.KernelDigest, Description: DescKernel},
			{PCR: 9, Digest: c.LoadOptionsDigest, Description: DescLoadOptions},
			{PCR: 9, Digest: c.InitrdDigest, Description: DescInitrd},
		},
	}
	for i, v := range c.PCRs {
		img.PCRs[i] = v
	}
	return img, nil
}

// ComputeDigests is Compute without the reference-values wrapping.
func ComputeDigests(kernel, initrd []byte, cmdline string, opts Options) (*Computed, error) {
	switch {
	case len(kernel) > MaxKernelSize:
		return nil, fmt.Errorf("%w: kernel is %d bytes, limit %d", ErrImage, len(kernel), MaxKernelSize)
	case len(initrd) == 0:
		return nil, fmt.Errorf("%w: empty initrd (the stub measures none, and the image would have no userspace)", ErrImage)
	case len(initrd) > MaxInitrdSize:
		return nil, fmt.Errorf("%w: initrd is %d bytes, limit %d", ErrImage, len(initrd), MaxInitrdSize)
	case len(cmdline) > MaxCmdlineSize:
		return nil, fmt.Errorf("%w: command line is %d bytes, limit %d", ErrImage, len(cmdline), MaxCmdlineSize)
	case strings.ContainsAny(cmdline, "\x00\n"):
		return nil, fmt.Errorf("%w: command line contains NUL or newline", ErrImage)
	}
	c := &Computed{PCRs: map[uint32][]byte{}}
	var err error
	if c.KernelFileDigest, err = AuthenticodeSHA256(kernel); err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	c.KernelDigest = c.KernelFileDigest
	options := cmdline
	if q := opts.QEMUDirect; q != nil {
		patched, err := QEMUPatchedKernel(kernel, len(initrd), cmdline, q.MemoryMiB)
		if err != nil {
			return nil, err
		}
		if c.KernelDigest, err = AuthenticodeSHA256(patched); err != nil {
			return nil, fmt.Errorf("kernel: %w", err)
		}
		options += qemuInitrdOption
		c.PCRs[4] = replay(c.KernelDigest, digest([]byte(CallingEFIApplication)), digest(separator))
	}
	c.LoadOptions = LoadOptions(options)
	c.LoadOptionsDigest = digest(c.LoadOptions)
	c.InitrdDigest = digest(initrd)
	c.PCRs[9] = replay(c.LoadOptionsDigest, c.InitrdDigest)
	return c, nil
}

// LoadOptions encodes a command line as UEFI LoadOptions: UTF-16LE with a
// terminating NUL, the bytes the Linux EFI stub measures.
func LoadOptions(cmdline string) []byte {
	u := utf16.Encode([]rune(cmdline + "\x00"))
	b := make([]byte, 2*len(u))
	for i, r := range u {
		binary.LittleEndian.PutUint16(b[2*i:], r)
	}
	return b
}

// separator is the EV_SEPARATOR event data of a successful boot.
var separator = []byte{0, 0, 0, 0}

func digest(b []byte) []byte {
	d := sha256.Sum256(b)
	return d[:]
}

// replay extends a zeroed SHA-256 PCR with each digest in order.
func replay(digests ...[]byte) []byte {
	pcr := make([]byte, sha256.Size)
	for _, d := range digests {
		h := sha256.New()
		h.Write(pcr)
		h.Write(d)
		pcr = h.Sum(nil)
	}
	return pcr
}

// Linux x86 boot protocol offsets (Documentation/arch/x86/boot.rst).
const (
	hdrSetupSects    = 0x1f1
	hdrMagic         = 0x202 // "HdrS"
	hdrVersion       = 0x206
	hdrTypeOfLoader  = 0x210
	hdrLoadFlags     = 0x211
	hdrRamdiskImage  = 0x218
	hdrRamdiskSize   = 0x21c
	hdrHeapEndPtr    = 0x224
	hdrCmdLinePtr    = 0x228
	hdrInitrdAddrMax = 0x22c
	hdrXLoadFlags    = 0x236
	hdrEnd           = 0x268

	loadFlagLoadedHigh    = 0x01
	loadFlagCanUseHeap    = 0x80
	xlfCanBeLoadedAbove4G = 1 << 1

	// QEMU's placement for a protocol >= 2.02 "high" kernel.
	qemuRealAddr    = 0x10000
	qemuCmdlineAddr = 0x20000
	// QEMU's pc/q35 acpi_data_size: memory it keeps free at the top of
	// low RAM for ACPI tables.
	qemuACPIDataSize = 0x20000 + 0x8000
)

// QEMUPatchedKernel returns the kernel image as QEMU 7.2's x86_load_linux
// hands it to the firmware for a q35 machine with memMiB of RAM, an initrd
// of initrdSize bytes and the given command line: the file with the setup
// header fields QEMU fills in. Only bzImage kernels with boot protocol 2.02
// or later are supported (every EFI-stub kernel is), and no "vga=" option.
func QEMUPatchedKernel(kernel []byte, initrdSize int, cmdline string, memMiB uint64) ([]byte, error) {
	if len(kernel) < hdrEnd || string(kernel[hdrMagic:hdrMagic+4]) != "HdrS" {
		return nil, fmt.Errorf("%w: kernel has no x86 boot-protocol header", ErrImage)
	}
	proto := binary.LittleEndian.Uint16(kernel[hdrVersion:])
	if proto < 0x202 || kernel[hdrLoadFlags]&loadFlagLoadedHigh == 0 {
		return nil, fmt.Errorf("%w: boot protocol %#x or a low-loaded kernel: QEMU places it differently; unsupported", ErrImage, proto)
	}
	if strings.Contains(cmdline, "vga=") {
		return nil, fmt.Errorf("%w: QEMU writes vga= into the setup header; unsupported here", ErrImage)
	}
	setupSize := (int(kernel[hdrSetupSects]) + 1) * 512
	if kernel[hdrSetupSects] == 0 {
		setupSize = 5 * 512
	}
	if setupSize > len(kernel) {
		return nil, fmt.Errorf("%w: setup (%d bytes) is larger than the kernel", ErrImage, setupSize)
	}
	if memMiB == 0 || memMiB > 1<<30 {
		return nil, fmt.Errorf("%w: guest memory %d MiB", ErrImage, memMiB)
	}
	// q35 (hw/i386/pc_q35.c): RAM below 4 GiB is all of it up to 2.75 GiB,
	// otherwise 2 GiB.
	below4G := memMiB << 20
	if below4G >= 0xb0000000 {
		below4G = 0x80000000
	}
	var initrdMax uint64
	switch {
	case proto >= 0x20c && binary.LittleEndian.Uint16(kernel[hdrXLoadFlags:])&xlfCanBeLoadedAbove4G != 0:
		initrdMax = 0xffffffff
	case proto >= 0x203:
		initrdMax = uint64(binary.LittleEndian.Uint32(kernel[hdrInitrdAddrMax:]))
	default:
		initrdMax = 0x37ffffff
	}
	if initrdMax >= below4G-qemuACPIDataSize {
		initrdMax = below4G - qemuACPIDataSize - 1
	}
	if uint64(initrdSize) >= initrdMax {
		return nil, fmt.Errorf("%w: initrd of %d bytes does not fit below %#x", ErrImage, initrdSize, initrdMax)
	}
	initrdAddr := (initrdMax - uint64(initrdSize)) &^ 4095

	p := make([]byte, len(kernel))
	copy(p, kernel)
	binary.LittleEndian.PutUint32(p[hdrCmdLinePtr:], qemuCmdlineAddr)
	p[hdrTypeOfLoader] = 0xB0 // QEMU's loader id
	p[hdrLoadFlags] |= loadFlagCanUseHeap
	binary.LittleEndian.PutUint16(p[hdrHeapEndPtr:], qemuCmdlineAddr-qemuRealAddr-0x200)
	binary.LittleEndian.PutUint32(p[hdrRamdiskImage:], uint32(initrdAddr))
	binary.LittleEndian.PutUint32(p[hdrRamdiskSize:], uint32(initrdSize))
	return p, nil
}
