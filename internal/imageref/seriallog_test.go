package imageref

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseSerialLog(t *testing.T) {
	r := realReport(t)
	if len(r.EventLog) != 5256 {
		t.Errorf("event log %d bytes, want 5256", len(r.EventLog))
	}
	if sum := sha256.Sum256(r.EventLog); hex.EncodeToString(sum[:]) != "960d0a40dde57c6f7559f22fe52c291f4f40d5c17d65a949ff67d61f7184b571" {
		t.Errorf("event log digest %x", sum)
	}
	if r.Cmdline != realCmdline+qemuInitrdOption {
		t.Errorf("cmdline %q", r.Cmdline)
	}
	if len(r.PCRs) != 24 || hex.EncodeToString(r.PCRs[9]) != realPCR9 {
		t.Errorf("%d PCRs, PCR 9 %x", len(r.PCRs), r.PCRs[9])
	}
	if r.Uptime <= 0 {
		t.Errorf("uptime %v", r.Uptime)
	}
}

func TestParseSerialLogRejects(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "qemu-direct-serial.log"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(raw)
	lines := strings.Split(s, "\n")
	// The first base64 line of the event log.
	var b64Line string
	for i, l := range lines {
		if strings.HasPrefix(l, "ATTESTED-EVENTLOG-BEGIN") {
			b64Line = lines[i+1]
			break
		}
	}
	flipped := []byte(b64Line)
	if flipped[10] == 'A' {
		flipped[10] = 'B'
	} else {
		flipped[10] = 'A'
	}
	tests := map[string]string{
		"no report":        "[    1.0] Kernel panic - not syncing\n",
		"cut short":        s[:strings.Index(s, "ATTESTED-EVENTLOG-END")],
		"no end marker":    strings.Replace(s, "ATTESTED-TESTINIT-END", "", 1),
		"changed log byte": strings.Replace(s, b64Line, string(flipped), 1),
		"guest error":      strings.Replace(s, "ATTESTED-CMDLINE", "ATTESTED-ERROR event log: no such file\nATTESTED-CMDLINE", 1),
		"wrong size":       strings.Replace(s, "ATTESTED-EVENTLOG-BEGIN 5256", "ATTESTED-EVENTLOG-BEGIN 5255", 1),
		"huge size":        strings.Replace(s, "ATTESTED-EVENTLOG-BEGIN 5256", "ATTESTED-EVENTLOG-BEGIN 99999999", 1),
		"bad PCR":          strings.Replace(s, "ATTESTED-PCR sha256 9 ", "ATTESTED-PCR sha256 99 ", 1),
		"too large":        strings.Repeat("x", MaxSerialLogSize+1),
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseSerialLog([]byte(in)); !errors.Is(err, ErrSerialLog) {
				t.Errorf("err = %v, want ErrSerialLog", err)
			}
		})
	}
}

// TestParseSerialLogInterleaved: kernel messages printed between the
// init's lines and CRLF line ends do not disturb the report.
func TestParseSerialLogInterleaved(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "qemu-direct-serial.log"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	for i, l := range strings.Split(string(raw), "\n") {
		out.WriteString(l + "\r\n")
		if i%7 == 3 {
			out.WriteString("[    3.141592] random: crng init done\r\n")
		}
	}
	r, err := ParseSerialLog(out.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(r.EventLog, realReport(t).EventLog) {
		t.Error("event log differs")
	}
}

func FuzzParseSerialLog(f *testing.F) {
	raw, err := os.ReadFile(filepath.Join("testdata", "qemu-direct-serial.log"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(raw)
	f.Add([]byte("ATTESTED-TESTINIT-BEGIN\nATTESTED-EVENTLOG-BEGIN 3\nAAAA\nATTESTED-EVENTLOG-END sha256:00\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseSerialLog(b)
		if err != nil {
			return
		}
		if len(r.EventLog) == 0 || len(r.EventLog) > MaxEventLogSize {
			t.Fatalf("accepted a %d-byte event log", len(r.EventLog))
		}
	})
}
