package attest

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// MaxBootEvents bounds the events in a TCG event log. Real logs hold 40-200.
const MaxBootEvents = 4096

// checkEventLogFraming walks a TCG event log's framing before go-eventlog
// parses it. go-eventlog trusts the log's own counts: a spec ID event may
// declare billions of algorithms and each event billions of digests, and its
// parser loops over one for each of the other. A 1 MiB log built that way
// costs minutes of CPU (found by FuzzBootLog). The event log is not
// authenticated until it replays, so these bounds must come first.
func checkEventLogFraming(raw []byte) error {
	const sha1HeaderSize = 32 // pcr, type, SHA-1 digest, event size
	if len(raw) < sha1HeaderSize {
		return fmt.Errorf("%w: event log shorter than one event header", ErrEventLogReplay)
	}
	first := binary.LittleEndian.Uint32(raw[28:32])
	if uint64(first) > uint64(len(raw)-sha1HeaderSize) {
		return fmt.Errorf("%w: first event size %d exceeds the log", ErrEventLogReplay, first)
	}
	data := raw[sha1HeaderSize : sha1HeaderSize+int(first)]
	rest := raw[sha1HeaderSize+int(first):]
	const specIDHeaderSize = 28
	if binary.LittleEndian.Uint32(raw[4:8]) != 3 || len(data) < specIDHeaderSize || !bytes.Equal(data[:16], []byte("Spec ID Event03\x00")) {
		return walkSHA1Events(rest, 1)
	}
	numAlgs := binary.LittleEndian.Uint32(data[24:28])
	if numAlgs == 0 || numAlgs > 8 || uint64(len(data)) < specIDHeaderSize+4*uint64(numAlgs) {
		return fmt.Errorf("%w: spec ID event declares %d digest algorithms", ErrEventLogReplay, numAlgs)
	}
	sizes := map[uint16]int{}
	for i := 0; i < int(numAlgs); i++ {
		off := specIDHeaderSize + 4*i
		id, size := binary.LittleEndian.Uint16(data[off:]), binary.LittleEndian.Uint16(data[off+2:])
		if size == 0 || size > 64 {
			return fmt.Errorf("%w: digest algorithm %#x has size %d", ErrEventLogReplay, id, size)
		}
		sizes[id] = int(size)
	}
	return walkAgileEvents(rest, sizes, int(numAlgs))
}

func walkSHA1Events(b []byte, n int) error {
	for ; len(b) > 0; n++ {
		if n > MaxBootEvents {
			return fmt.Errorf("%w: more than %d events", ErrTooLarge, MaxBootEvents)
		}
		if len(b) < 32 {
			return fmt.Errorf("%w: truncated event %d", ErrEventLogReplay, n)
		}
		size := binary.LittleEndian.Uint32(b[28:32])
		if uint64(size) > uint64(len(b)-32) {
			return fmt.Errorf("%w: event %d size %d exceeds the log", ErrEventLogReplay, n, size)
		}
		b = b[32+int(size):]
	}
	return nil
}

func walkAgileEvents(b []byte, sizes map[uint16]int, numAlgs int) error {
	for n := 1; len(b) > 0; n++ {
		if n > MaxBootEvents {
			return fmt.Errorf("%w: more than %d events", ErrTooLarge, MaxBootEvents)
		}
		if len(b) >= 4 && binary.LittleEndian.Uint32(b) == 0xFFFFFFFF {
			return nil // padding (CCEL-style logs): go-eventlog stops here too
		}
		if len(b) < 12 {
			return fmt.Errorf("%w: truncated event %d", ErrEventLogReplay, n)
		}
		count := binary.LittleEndian.Uint32(b[8:12])
		if count == 0 || count > uint32(numAlgs) {
			return fmt.Errorf("%w: event %d has %d digests, the log declares %d algorithms", ErrEventLogReplay, n, count, numAlgs)
		}
		b = b[12:]
		for i := uint32(0); i < count; i++ {
			if len(b) < 2 {
				return fmt.Errorf("%w: truncated event %d", ErrEventLogReplay, n)
			}
			size, ok := sizes[binary.LittleEndian.Uint16(b)]
			if !ok || len(b) < 2+size {
				return fmt.Errorf("%w: event %d has an undeclared or truncated digest", ErrEventLogReplay, n)
			}
			b = b[2+size:]
		}
		if len(b) < 4 {
			return fmt.Errorf("%w: truncated event %d", ErrEventLogReplay, n)
		}
		size := binary.LittleEndian.Uint32(b)
		if uint64(size) > uint64(len(b)-4) {
			return fmt.Errorf("%w: event %d size %d exceeds the log", ErrEventLogReplay, n, size)
		}
		b = b[4+int(size):]
	}
	return nil
}
