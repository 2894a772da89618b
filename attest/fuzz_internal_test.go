package attest

import (
	"crypto/sha256"
	"testing"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	elt "github.com/google/go-eventlog/testdata"
	tdxtd "github.com/google/go-tdx-guest/testing/testdata"
)

// FuzzBootLog feeds event logs to the replay-and-extract path with PCR
// values computed from the log itself: exactly an attacker's position, who
// controls every unmeasured byte of a log that replays (event types, data of
// events whose data is not digested).
func FuzzBootLog(f *testing.F) {
	for _, l := range [][]byte{elt.Rhel8EventLog, elt.Ubuntu2104NoSecureBootEventLog, elt.Cos121AmdSevEventLog,
		elt.ArchLinuxWorkstationEventLog, elt.Ubuntu2404IntelTdxA4HighGpu8GEventLog} {
		f.Add(l)
	}
	p := &Policy{}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) > MaxEventLogSize || checkEventLogFraming(raw) != nil {
			return
		}
		el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{})
		if err != nil {
			return
		}
		pcrs := map[uint32][]byte{}
		for _, e := range el.Events(register.HashSHA256) {
			if e.Type == tcg.NoAction || len(e.Digest) != sha256.Size || e.Index < 0 || e.Index > 23 {
				continue
			}
			old, ok := pcrs[uint32(e.Index)]
			if !ok {
				old = make([]byte, sha256.Size)
			}
			d := sha256.Sum256(append(old, e.Digest...))
			pcrs[uint32(e.Index)] = d[:]
		}
		_ = verifyBootLog(raw, pcrs, p, &Claims{})
	})
}

// FuzzTDXQuote feeds quotes and CCELs to the TDX parsers and replay.
func FuzzTDXQuote(f *testing.F) {
	s := loadTDXSample(f)
	f.Add(s.quote, s.table, s.ccel[:4096])
	f.Add(tdxtd.RawQuote, s.table, s.ccel[:2048])
	f.Fuzz(func(t *testing.T, quote, table, ccel []byte) {
		q, err := ParseTDXQuote(quote)
		if err != nil {
			return
		}
		_ = ReplayCCEL(table, ccel, q)
	})
}
