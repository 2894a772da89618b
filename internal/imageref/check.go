package imageref

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
)

// ErrReplay marks an event log that does not replay to the PCR values it
// came with, so nothing in it can be compared.
var ErrReplay = errors.New("event log does not replay")

// Event is one SHA-256 event of a replayed TCG event log.
type Event struct {
	PCR uint32
	// Type is the TCG name (EV_...) of the event type; the type field is
	// not measured, so it is informational.
	Type   string
	Digest []byte
	Data   []byte
	// Label names what the event measured where the log says so: the
	// text of an EV_EFI_ACTION, or the description of a Linux EFI stub
	// EV_EVENT_TAG ("Linux initrd", "LOADED_IMAGE::LoadOptions").
	Label string
}

// Mismatch is one reference value a boot did not reproduce.
type Mismatch struct {
	// PCR is the register concerned.
	PCR uint32
	// Event is the reference event that is missing, nil for a PCR value.
	Event *attest.EventRef
	// Want is the reference digest or PCR value; Got the PCR value read
	// (for a PCR) or the digests the log has on that PCR (for an event).
	Want []byte
	Got  [][]byte
}

func (m Mismatch) String() string {
	if m.Event != nil {
		return fmt.Sprintf("PCR %d: no event %x (%s); the log has %x", m.PCR, m.Want, m.Event.Description, m.Got)
	}
	return fmt.Sprintf("PCR %d is %x, want %x", m.PCR, m.Got, m.Want)
}

// ReplayEventLog parses a TCG event log, replays its SHA-256 events against
// pcrs and returns them in log order. An empty log or PCR set is an error:
// there would be nothing to authenticate the events with. It is meant for
// logs of our own test boots; the gate verifies logs with attest.Verify,
// which also bounds the log's framing before parsing it.
func ReplayEventLog(raw []byte, pcrs map[uint32][]byte) ([]Event, error) {
	if len(raw) == 0 {
		return nil, fmt.Errorf("%w: empty event log", ErrReplay)
	}
	if len(raw) > MaxEventLogSize {
		return nil, fmt.Errorf("%w: event log is %d bytes, limit %d", ErrReplay, len(raw), MaxEventLogSize)
	}
	if len(pcrs) == 0 {
		return nil, fmt.Errorf("%w: no PCR values to replay against", ErrReplay)
	}
	evs, err := tcg.ParseAndReplay(raw, pcrMRs(pcrs), tcg.ParseOpts{})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrReplay, err)
	}
	out := make([]Event, 0, len(evs))
	for _, e := range evs {
		out = append(out, Event{PCR: uint32(e.Index), Type: e.Type.TCGString(), Digest: e.Digest, Data: e.Data, Label: label(e)})
	}
	return out, nil
}

func pcrMRs(pcrs map[uint32][]byte) []register.MR {
	mrs := make([]register.MR, 0, len(pcrs))
	for i, d := range pcrs {
		mrs = append(mrs, register.PCR{Index: int(i), Digest: d, DigestAlg: crypto.SHA256})
	}
	return mrs
}

// Check compares a booted machine's measurements with a reference image:
// the event log must replay to the reported PCRs, every reference event must
// appear in it on its PCR with its digest, and every reference PCR value must
// equal the reported one. It returns what differs (nil: the boot matches),
// or an error when the log cannot be replayed at all.
func Check(img *attest.Image, rep *BootReport) ([]Mismatch, error) {
	if img == nil || (len(img.Events) == 0 && len(img.PCRs) == 0) {
		return nil, fmt.Errorf("%w: empty reference image", ErrImage)
	}
	evs, err := ReplayEventLog(rep.EventLog, rep.PCRs)
	if err != nil {
		return nil, err
	}
	var out []Mismatch
	for i := range img.Events {
		want := &img.Events[i]
		var got [][]byte
		found := false
		for _, e := range evs {
			if e.PCR != want.PCR {
				continue
			}
			got = append(got, e.Digest)
			if bytes.Equal(e.Digest, want.Digest) {
				found = true
			}
		}
		if !found {
			out = append(out, Mismatch{PCR: want.PCR, Event: want, Want: want.Digest, Got: got})
		}
	}
	idx := make([]uint32, 0, len(img.PCRs))
	for i := range img.PCRs {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	for _, i := range idx {
		if got := rep.PCRs[i]; !bytes.Equal(got, img.PCRs[i]) {
			out = append(out, Mismatch{PCR: i, Want: img.PCRs[i], Got: [][]byte{got}})
		}
	}
	return out, nil
}

// label describes an event from its (unmeasured, informational) data.
func label(e tcg.Event) string {
	switch e.Type {
	case tcg.EFIAction:
		return string(e.Data)
	case tcg.EventTag:
		t, err := tcg.ParseTaggedEventData(e.Data)
		if err != nil || (t.ID != linuxEventIDInitrd && t.ID != linuxEventIDLoadOptions) {
			return ""
		}
		return strings.TrimRight(string(t.Data), "\x00")
	}
	return ""
}
