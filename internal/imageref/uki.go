package imageref

import (
	"bytes"
	"debug/pe"
	"fmt"

	"github.com/attested-runner/attested-runner/attest"
)

// ukiSections are the unified kernel image sections systemd-stub measures
// into PCR 11, in the order it measures them (systemd 252 UnifiedSection;
// .pcrsig is not measured).
var ukiSections = []string{".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"}

// Descriptions of the UKI reference events.
const (
	DescUKI = "unified kernel image (EV_EFI_BOOT_SERVICES_APPLICATION, Authenticode SHA-256)"
)

// ComputeUKI predicts the measurements of booting a signed unified kernel
// image (systemd-stub + kernel + initrd + command line in one PE file) with
// Secure Boot: the firmware measures the UKI's Authenticode digest into
// PCR 4 after verifying it against db; systemd-stub measures each section's
// name (ASCII with NUL) and contents into PCR 11 as EV_IPL; the kernel's
// stub measures the .cmdline it was given as LoadOptions and the .initrd
// into PCR 9, as in a direct boot. The reference requires Secure Boot and
// pins PCR 9 and PCR 11, which the UKI alone determines.
//
// Checked against systemd-boot-efi 252 (Debian 12) with a Linux 6.1 kernel.
// It assumes no credentials, system extensions or addons next to the UKI
// on the ESP (systemd-stub would append them to the initrd and measure
// them) and no command-line override (Secure Boot forbids one).
func ComputeUKI(uki []byte, id string) (*attest.Image, error) {
	if id == "" {
		return nil, fmt.Errorf("%w: no image id", ErrImage)
	}
	app, err := AuthenticodeSHA256(uki)
	if err != nil {
		return nil, fmt.Errorf("UKI: %w", err)
	}
	f, err := pe.NewFile(bytes.NewReader(uki))
	if err != nil {
		return nil, fmt.Errorf("%w: UKI: %v", ErrNotPE, err)
	}
	contents := map[string][]byte{}
	for _, s := range f.Sections {
		if s.VirtualSize > s.Size {
			return nil, fmt.Errorf("%w: UKI section %s: virtual size %d exceeds raw data %d", ErrImage, s.Name, s.VirtualSize, s.Size)
		}
		data, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("%w: UKI section %s: %v", ErrImage, s.Name, err)
		}
		contents[s.Name] = data[:s.VirtualSize]
	}
	for _, want := range []string{".linux", ".cmdline", ".initrd"} {
		if _, ok := contents[want]; !ok {
			return nil, fmt.Errorf("%w: UKI has no %s section", ErrImage, want)
		}
	}
	img := &attest.Image{
		ID:         id,
		SecureBoot: true,
		PCRs:       map[uint32]attest.Hex{},
		Events:     []attest.EventRef{{PCR: 4, Digest: app, Description: DescUKI}},
	}
	var pcr11 [][]byte
	for _, name := range ukiSections {
		data, ok := contents[name]
		if !ok {
			continue
		}
		nameDigest, dataDigest := digest(append([]byte(name), 0)), digest(data)
		pcr11 = append(pcr11, nameDigest, dataDigest)
		img.Events = append(img.Events,
			attest.EventRef{PCR: 11, Digest: nameDigest, Description: "UKI section name " + name + " (EV_IPL)"},
			attest.EventRef{PCR: 11, Digest: dataDigest, Description: "UKI section " + name + " contents (EV_IPL)"})
	}
	cmdline := string(contents[".cmdline"])
	if len(cmdline) > MaxCmdlineSize {
		return nil, fmt.Errorf("%w: .cmdline is %d bytes", ErrImage, len(cmdline))
	}
	lo, initrd := digest(LoadOptions(cmdline)), digest(contents[".initrd"])
	img.Events = append(img.Events,
		attest.EventRef{PCR: 9, Digest: lo, Description: DescLoadOptions},
		attest.EventRef{PCR: 9, Digest: initrd, Description: DescInitrd})
	img.PCRs[9] = replay(lo, initrd)
	img.PCRs[11] = replay(pcr11...)
	return img, nil
}
