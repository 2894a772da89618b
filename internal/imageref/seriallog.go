package imageref

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Limits on a serial console capture, which comes from a guest: the test
// init prints a 5-60 KiB event log as base64 among a few hundred kernel lines.
const (
	// MaxSerialLogSize bounds a serial console capture.
	MaxSerialLogSize = 8 << 20
	// MaxEventLogSize bounds the decoded TCG event log (as attest does).
	MaxEventLogSize = 1 << 20
)

// Serial console markers printed by scripts/image/testinit.
const (
	markerBegin    = "ATTESTED-TESTINIT-BEGIN"
	markerEnd      = "ATTESTED-TESTINIT-END"
	markerCmdline  = "ATTESTED-CMDLINE "
	markerPCR      = "ATTESTED-PCR sha256 "
	markerLogBegin = "ATTESTED-EVENTLOG-BEGIN "
	markerLogEnd   = "ATTESTED-EVENTLOG-END sha256:"
	markerUptime   = "ATTESTED-UPTIME "
	markerError    = "ATTESTED-ERROR "
)

// ErrSerialLog marks a serial capture that lacks the test init's output or
// holds a malformed or inconsistent copy of it.
var ErrSerialLog = errors.New("serial log")

// BootReport is what the test init printed on the serial console: the TCG
// event log the kernel exposed, the SHA-256 PCR bank it read from sysfs,
// and the command line the kernel saw.
type BootReport struct {
	// EventLog is binary_bios_measurements, checked against the SHA-256
	// the init printed with it.
	EventLog []byte
	// PCRs is the SHA-256 bank, keyed by index (empty if sysfs lacks it).
	PCRs map[uint32][]byte
	// Cmdline is /proc/cmdline as the kernel saw it.
	Cmdline string
	// Uptime is the kernel's uptime in seconds when init printed the log.
	Uptime float64
}

// ParseSerialLog extracts the test init's report from a serial console
// capture. Kernel messages may surround the report; lines may end in CRLF.
// An "ATTESTED-ERROR" line from the init is returned as an error.
func ParseSerialLog(b []byte) (*BootReport, error) {
	if len(b) > MaxSerialLogSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrSerialLog, len(b), MaxSerialLogSize)
	}
	r := &BootReport{PCRs: map[uint32][]byte{}}
	var (
		inReport, inLog, sawLog, sawEnd, sawCmdline bool
		b64                                         strings.Builder
		wantLen                                     int
	)
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), MaxSerialLogSize)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if !inReport {
			// The marker may follow console escape sequences on the same line.
			if strings.HasSuffix(line, markerBegin) {
				inReport = true
			}
			continue
		}
		switch {
		case inLog && strings.HasPrefix(line, markerLogEnd):
			inLog, sawLog = false, true
			raw, err := base64.StdEncoding.DecodeString(b64.String())
			if err != nil {
				return nil, fmt.Errorf("%w: event log base64: %v", ErrSerialLog, err)
			}
			if len(raw) != wantLen {
				return nil, fmt.Errorf("%w: event log is %d bytes, init announced %d", ErrSerialLog, len(raw), wantLen)
			}
			sum := sha256.Sum256(raw)
			if got := strings.TrimPrefix(line, markerLogEnd); got != hex.EncodeToString(sum[:]) {
				return nil, fmt.Errorf("%w: event log digest %x, init printed %s", ErrSerialLog, sum, got)
			}
			r.EventLog = raw
		case inLog:
			// Kernel messages can interleave with init's output on the
			// console; base64 lines have no spaces or brackets.
			if strings.ContainsAny(line, " []:") {
				continue
			}
			if b64.Len()+len(line) > base64.StdEncoding.EncodedLen(MaxEventLogSize) {
				return nil, fmt.Errorf("%w: event log over %d bytes", ErrSerialLog, MaxEventLogSize)
			}
			b64.WriteString(line)
		case strings.HasPrefix(line, markerLogBegin):
			n, err := strconv.Atoi(strings.TrimPrefix(line, markerLogBegin))
			if err != nil || n <= 0 || n > MaxEventLogSize {
				return nil, fmt.Errorf("%w: bad event log size in %q", ErrSerialLog, line)
			}
			wantLen, inLog = n, true
		case strings.HasPrefix(line, markerCmdline):
			r.Cmdline, sawCmdline = strings.TrimPrefix(line, markerCmdline), true
		case strings.HasPrefix(line, markerPCR):
			f := strings.Fields(strings.TrimPrefix(line, markerPCR))
			if len(f) != 2 {
				return nil, fmt.Errorf("%w: bad PCR line %q", ErrSerialLog, line)
			}
			i, err := strconv.ParseUint(f[0], 10, 32)
			v, err2 := hex.DecodeString(f[1])
			if err != nil || err2 != nil || i > 23 || len(v) != sha256.Size {
				return nil, fmt.Errorf("%w: bad PCR line %q", ErrSerialLog, line)
			}
			r.PCRs[uint32(i)] = v
		case strings.HasPrefix(line, markerUptime):
			r.Uptime, _ = strconv.ParseFloat(strings.TrimPrefix(line, markerUptime), 64)
		case strings.HasPrefix(line, markerError):
			return nil, fmt.Errorf("%w: guest init failed: %s", ErrSerialLog, strings.TrimPrefix(line, markerError))
		case line == markerEnd:
			sawEnd = true
		}
		if sawEnd {
			break
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSerialLog, err)
	}
	switch {
	case !inReport:
		return nil, fmt.Errorf("%w: no %s marker: the test init did not run (kernel panic, timeout, or another /init)", ErrSerialLog, markerBegin)
	case inLog || !sawLog:
		return nil, fmt.Errorf("%w: no complete event log", ErrSerialLog)
	case !sawCmdline:
		return nil, fmt.Errorf("%w: no command line", ErrSerialLog)
	case !sawEnd:
		return nil, fmt.Errorf("%w: no %s marker: output cut short", ErrSerialLog, markerEnd)
	}
	return r, nil
}
