package imageref

import (
	"bytes"
	"crypto/sha256"
	"debug/pe"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
)

// MaxPESize bounds a PE/COFF image given to AuthenticodeSHA256. Kernels are
// 8-15 MiB and unified kernel images rarely pass 100 MiB.
const MaxPESize = 256 << 20

// ErrNotPE marks bytes that are not a PE/COFF image this package can hash.
var ErrNotPE = errors.New("not a hashable PE/COFF image")

// certTableIndex is IMAGE_DIRECTORY_ENTRY_SECURITY, the data directory entry
// of the attribute certificate table (the Authenticode signatures).
const certTableIndex = 4

// AuthenticodeSHA256 returns the Authenticode SHA-256 digest of a PE/COFF
// image: the digest UEFI firmware extends into PCR 4 for an
// EV_EFI_BOOT_SERVICES_APPLICATION and compares with db/dbx entries.
//
// It follows the Authenticode specification ("Calculating the PE Image
// Hash") as EDK2's DxeTpm2MeasureBootLib implements it: hash the headers up
// to SizeOfHeaders minus the CheckSum field and the Certificate Table
// data-directory entry, then each section with raw data in PointerToRawData
// order, then any data after the last section except the attribute
// certificate table, whose size the Certificate Table entry gives. Signing a
// binary (adding a certificate table) therefore does not change its digest.
func AuthenticodeSHA256(img []byte) ([]byte, error) {
	if len(img) > MaxPESize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrNotPE, len(img), MaxPESize)
	}
	if len(img) < 0x40 || img[0] != 'M' || img[1] != 'Z' {
		return nil, fmt.Errorf("%w: no MZ header", ErrNotPE)
	}
	f, err := pe.NewFile(bytes.NewReader(img))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotPE, err)
	}
	// Offsets inside the optional header: CheckSum is at 64 for both PE32
	// and PE32+; the data directories start at 96 (PE32) or 112 (PE32+).
	optOff := int(binary.LittleEndian.Uint32(img[0x3c:])) + 4 + 20
	var sizeOfHeaders, numDirs uint32
	var certDir pe.DataDirectory
	var dirOff int
	switch oh := f.OptionalHeader.(type) {
	case *pe.OptionalHeader32:
		sizeOfHeaders, numDirs, dirOff = oh.SizeOfHeaders, oh.NumberOfRvaAndSizes, optOff+96
		if numDirs > certTableIndex {
			certDir = oh.DataDirectory[certTableIndex]
		}
	case *pe.OptionalHeader64:
		sizeOfHeaders, numDirs, dirOff = oh.SizeOfHeaders, oh.NumberOfRvaAndSizes, optOff+112
		if numDirs > certTableIndex {
			certDir = oh.DataDirectory[certTableIndex]
		}
	default:
		return nil, fmt.Errorf("%w: no optional header", ErrNotPE)
	}
	checksumOff := optOff + 64
	certEntryOff := dirOff + 8*certTableIndex
	if uint64(sizeOfHeaders) > uint64(len(img)) || int(sizeOfHeaders) < checksumOff+4 {
		return nil, fmt.Errorf("%w: SizeOfHeaders %d outside the image", ErrNotPE, sizeOfHeaders)
	}
	h := sha256.New()
	h.Write(img[:checksumOff])
	if numDirs > certTableIndex {
		if int(sizeOfHeaders) < certEntryOff+8 {
			return nil, fmt.Errorf("%w: certificate table entry past SizeOfHeaders", ErrNotPE)
		}
		h.Write(img[checksumOff+4 : certEntryOff])
		h.Write(img[certEntryOff+8 : sizeOfHeaders])
	} else {
		h.Write(img[checksumOff+4 : sizeOfHeaders])
	}
	sumHashed := uint64(sizeOfHeaders)

	secs := make([]*pe.SectionHeader, 0, len(f.Sections))
	for _, s := range f.Sections {
		if s.Size > 0 {
			secs = append(secs, &s.SectionHeader)
		}
	}
	sort.SliceStable(secs, func(i, j int) bool { return secs[i].Offset < secs[j].Offset })
	for _, s := range secs {
		end := uint64(s.Offset) + uint64(s.Size)
		if end > uint64(len(img)) {
			return nil, fmt.Errorf("%w: section %q ends at %d, past the image (%d bytes)", ErrNotPE, s.Name, end, len(img))
		}
		h.Write(img[s.Offset:end])
		sumHashed += uint64(s.Size)
	}

	// Trailing data (e.g. after the last section) is hashed too, except the
	// certificate table that signing appends.
	if size := uint64(len(img)); size > sumHashed {
		certSize := uint64(certDir.Size)
		switch {
		case size > sumHashed+certSize:
			h.Write(img[sumHashed : size-certSize])
		case size < sumHashed+certSize:
			return nil, fmt.Errorf("%w: certificate table (%d bytes) overlaps hashed data", ErrNotPE, certSize)
		}
	}
	return h.Sum(nil), nil
}
