package attest_test

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// Helpers that edit a crypto-agile TCG event log (TCG PC Client Platform
// Firmware Profile, 10.2) at the byte level, the way an attacker who
// controls the log's unmeasured bytes can.

// tcgAlg is a digest algorithm the log's spec ID event declares.
type tcgAlg struct{ id, size uint16 }

// tcgEvent is where one event of a crypto-agile log sits.
type tcgEvent struct {
	off, end int
	pcr, typ uint32
}

const (
	tcgAlgSHA256    = 0x000B
	tcgEVNoAction   = 0x00000003
	tcgEVEventTag   = 0x00000006
	sha1EventHeader = 32 // PCR, type, SHA-1 digest, event size
)

// agileEvents returns the algorithms the spec ID event declares and the
// events after it, up to any padding.
func agileEvents(t testing.TB, raw []byte) ([]tcgAlg, []tcgEvent) {
	t.Helper()
	first := int(binary.LittleEndian.Uint32(raw[28:32]))
	spec := raw[sha1EventHeader : sha1EventHeader+first]
	if !bytes.HasPrefix(spec, []byte("Spec ID Event03\x00")) {
		t.Fatal("not a crypto-agile event log")
	}
	n := int(binary.LittleEndian.Uint32(spec[24:28]))
	algs := make([]tcgAlg, n)
	sizes := map[uint16]int{}
	for i := range algs {
		algs[i] = tcgAlg{binary.LittleEndian.Uint16(spec[28+4*i:]), binary.LittleEndian.Uint16(spec[30+4*i:])}
		sizes[algs[i].id] = int(algs[i].size)
	}
	var events []tcgEvent
	for off := sha1EventHeader + first; off+4 <= len(raw); {
		if binary.LittleEndian.Uint32(raw[off:]) == 0xFFFFFFFF {
			break // padding (CCEL)
		}
		e := tcgEvent{off: off, pcr: binary.LittleEndian.Uint32(raw[off:]), typ: binary.LittleEndian.Uint32(raw[off+4:])}
		count := int(binary.LittleEndian.Uint32(raw[off+8:]))
		p := off + 12
		for range count {
			p += 2 + sizes[binary.LittleEndian.Uint16(raw[p:])]
		}
		p += 4 + int(binary.LittleEndian.Uint32(raw[p:]))
		e.end = p
		events = append(events, e)
		off = p
	}
	return algs, events
}

// agileEvent encodes one crypto-agile event with a digest for every
// algorithm the log declares: sha256 for SHA-256, zeros for the others.
func agileEvent(algs []tcgAlg, pcr, typ uint32, sha256 []byte, data []byte) []byte {
	b := binary.LittleEndian.AppendUint32(nil, pcr)
	b = binary.LittleEndian.AppendUint32(b, typ)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(algs)))
	for _, a := range algs {
		b = binary.LittleEndian.AppendUint16(b, a.id)
		if a.id == tcgAlgSHA256 {
			b = append(b, sha256...)
		} else {
			b = append(b, make([]byte, a.size)...)
		}
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// padEventLog appends an EV_NO_ACTION event (never extended, so the log
// still replays) whose data makes the log exactly size bytes.
func padEventLog(t testing.TB, raw []byte, size int) []byte {
	t.Helper()
	algs, _ := agileEvents(t, raw)
	overhead := len(agileEvent(algs, 0, tcgEVNoAction, make([]byte, 32), nil))
	if size < len(raw)+overhead {
		t.Fatalf("cannot pad a %d-byte log to %d bytes", len(raw), size)
	}
	out := append(bytes.Clone(raw), agileEvent(algs, 0, tcgEVNoAction, make([]byte, 32), make([]byte, size-len(raw)-overhead))...)
	if len(out) != size {
		t.Fatalf("padded log is %d bytes, want %d", len(out), size)
	}
	return out
}
