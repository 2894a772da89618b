package attest_test

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
)

// validReferenceValues is one TPM and one TDX image and one agent.
func validReferenceValues() *attest.ReferenceValues {
	rtmrs := []attest.Hex{bytes.Repeat([]byte{1}, 48), bytes.Repeat([]byte{2}, 48), bytes.Repeat([]byte{3}, 48)}
	return &attest.ReferenceValues{
		Format: attest.ReferenceValuesFormat,
		Images: []attest.Image{
			{ID: "tpm", PCRs: map[uint32]attest.Hex{0: make(attest.Hex, 32)}, Events: []attest.EventRef{{PCR: 4, Digest: make(attest.Hex, 32)}}},
			{ID: "tdx", MRTD: make(attest.Hex, 48), RTMRs: rtmrs},
		},
		AgentDigests: []attest.Hex{make(attest.Hex, 32)},
	}
}

// TestReferenceValuesValidate: every rule an image or agent digest must
// follow, each broken once on valid reference values (ErrPolicyEmpty: an
// image that cannot be matched exactly is no reference value).
func TestReferenceValuesValidate(t *testing.T) {
	tpm := func(edit func(*attest.Image)) func(*attest.ReferenceValues) {
		return func(rv *attest.ReferenceValues) { edit(&rv.Images[0]) }
	}
	tdx := func(edit func(*attest.Image)) func(*attest.ReferenceValues) {
		return func(rv *attest.ReferenceValues) { edit(&rv.Images[1]) }
	}
	tests := []struct {
		name string
		edit func(*attest.ReferenceValues)
		msg  string // "" for valid
	}{
		{name: "valid"},
		{name: "TPM image of PCR values only", edit: tpm(func(im *attest.Image) { im.Events = nil })},
		{name: "TPM image of events only", edit: tpm(func(im *attest.Image) { im.PCRs = nil })},
		{name: "PCR 23", edit: tpm(func(im *attest.Image) { im.PCRs[23] = make(attest.Hex, 32) })},
		{name: "event on PCR 23", edit: tpm(func(im *attest.Image) { im.Events[0].PCR = 23 })},
		{name: "image without id", edit: tpm(func(im *attest.Image) { im.ID = "" }), msg: "image without id"},
		{name: "image id twice", edit: tdx(func(im *attest.Image) { *im = validReferenceValues().Images[0] }), msg: `image id "tpm" twice`},
		{name: "TPM image with no value", edit: tpm(func(im *attest.Image) { im.PCRs, im.Events = nil, nil }), msg: "it would match anything"},
		{name: "PCR 24", edit: tpm(func(im *attest.Image) { im.PCRs[24] = make(attest.Hex, 32) }), msg: "PCR 24 value must be 32 bytes"},
		{name: "PCR value not SHA-256", edit: tpm(func(im *attest.Image) { im.PCRs[0] = make(attest.Hex, 20) }), msg: "PCR 0 value must be 32 bytes"},
		{name: "lifecycle PCR by value", edit: tpm(func(im *attest.Image) { im.PCRs[attest.LifecyclePCR] = make(attest.Hex, 32) }), msg: "PCR 13 is the lifecycle PCR"},
		{name: "event on PCR 24", edit: tpm(func(im *attest.Image) { im.Events[0].PCR = 24 }), msg: "event on PCR 24 needs"},
		{name: "event digest not SHA-256", edit: tpm(func(im *attest.Image) { im.Events[0].Digest = make(attest.Hex, 48) }), msg: "event on PCR 4 needs"},
		{name: "MRTD not 48 bytes", edit: tdx(func(im *attest.Image) { im.MRTD = make(attest.Hex, 32) }), msg: "48-byte mrtd"},
		{name: "RTMR 3 listed", edit: tdx(func(im *attest.Image) { im.RTMRs = append(im.RTMRs, make(attest.Hex, 48)) }), msg: "48-byte mrtd and rtmrs 0-2"},
		{name: "RTMR not 48 bytes", edit: tdx(func(im *attest.Image) { im.RTMRs[1] = make(attest.Hex, 47) }), msg: "rtmr 1 is 47 bytes"},
		{name: "TDX image with PCR values", edit: tdx(func(im *attest.Image) { im.PCRs = map[uint32]attest.Hex{0: make(attest.Hex, 32)} }), msg: "mixes TDX and TPM"},
		{name: "TDX image with events", edit: tdx(func(im *attest.Image) { im.Events = []attest.EventRef{{PCR: 4, Digest: make(attest.Hex, 32)}} }), msg: "mixes TDX and TPM"},
		{name: "TDX image with SEV-SNP measurements", edit: tdx(func(im *attest.Image) { im.SNPMeasurements = []attest.Hex{make(attest.Hex, 48)} }), msg: "mixes TDX and TPM"},
		{name: "SEV-SNP measurement not 48 bytes", edit: tpm(func(im *attest.Image) { im.SNPMeasurements = []attest.Hex{make(attest.Hex, 32)} }), msg: "SEV-SNP measurement"},
		{name: "agent digest not SHA-256", edit: func(rv *attest.ReferenceValues) { rv.AgentDigests = append(rv.AgentDigests, make(attest.Hex, 20)) }, msg: "is not SHA-256"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rv := validReferenceValues()
			if tc.edit != nil {
				tc.edit(rv)
			}
			err := rv.Validate()
			if tc.msg == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if !errors.Is(err, attest.ErrPolicyEmpty) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Validate: got %v, want %v: ...%s", err, attest.ErrPolicyEmpty, tc.msg)
			}
		})
	}
}

func encodeReferenceValues(t testing.TB, rv *attest.ReferenceValues) []byte {
	t.Helper()
	b, err := json.Marshal(rv)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// padJSON pads a JSON document with trailing spaces to size bytes.
func padJSON(b []byte, size int) []byte {
	return append(bytes.Clone(b), bytes.Repeat([]byte{' '}, size-len(b))...)
}

func TestParseReferenceValues(t *testing.T) {
	valid := encodeReferenceValues(t, validReferenceValues())
	replace := func(old, new string) []byte {
		if !bytes.Contains(valid, []byte(old)) {
			t.Fatalf("no %q in %s", old, valid)
		}
		return bytes.Replace(valid, []byte(old), []byte(new), 1)
	}
	var typeErr *json.UnmarshalTypeError
	tests := []struct {
		name  string
		doc   []byte
		check func(error) bool // nil: valid
	}{
		{name: "valid", doc: valid},
		{name: "at the size limit", doc: padJSON(valid, attest.MaxReferenceValuesSize)},
		{name: "one byte over the size limit", doc: padJSON(valid, attest.MaxReferenceValuesSize+1), check: func(err error) bool { return errors.Is(err, attest.ErrTooLarge) }},
		{name: "unknown field", doc: replace(`{"format"`, `{"allowAll":true,"format"`), check: func(err error) bool { return strings.Contains(err.Error(), "unknown field") }},
		{name: "trailing data", doc: append(bytes.Clone(valid), `{}`...), check: func(err error) bool { return strings.Contains(err.Error(), "trailing data") }},
		{name: "digest not hex", doc: replace(`"agentDigests":["`, `"agentDigests":["zz`), check: func(err error) bool { return strings.Contains(err.Error(), "not hex") }},
		{name: "digest not a string", doc: replace(`"agentDigests":[`, `"agentDigests":[32,`), check: func(err error) bool { return errors.As(err, &typeErr) }},
		{name: "another format", doc: replace(attest.ReferenceValuesFormat, attest.ReferenceValuesFormat+"/v0"), check: func(err error) bool { return strings.Contains(err.Error(), "format") }},
		{name: "not valid", doc: replace(`"agentDigests":["`, `"agentDigests":["00`), check: func(err error) bool { return errors.Is(err, attest.ErrPolicyEmpty) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rv, err := attest.ParseReferenceValues(tc.doc)
			if tc.check == nil {
				if err != nil || len(rv.Images) != 2 {
					t.Fatalf("ParseReferenceValues: %v, %+v", err, rv)
				}
				return
			}
			if err == nil || !tc.check(err) {
				t.Fatalf("ParseReferenceValues: got %v", err)
			}
		})
	}
}

func TestLoadReferenceValues(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	valid := encodeReferenceValues(t, validReferenceValues())
	if rv, err := attest.LoadReferenceValues(write("at-limit.json", padJSON(valid, attest.MaxReferenceValuesSize))); err != nil || len(rv.Images) != 2 {
		t.Fatalf("at the size limit: %v", err)
	}
	if _, err := attest.LoadReferenceValues(write("large.json", padJSON(valid, attest.MaxReferenceValuesSize+1))); !errors.Is(err, attest.ErrTooLarge) {
		t.Fatalf("over the size limit: got %v, want %v", err, attest.ErrTooLarge)
	}
	if _, err := attest.LoadReferenceValues(filepath.Join(dir, "missing.json")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: got %v, want %v", err, fs.ErrNotExist)
	}
	empty := validReferenceValues()
	empty.AgentDigests = nil
	p := write("empty.json", encodeReferenceValues(t, empty))
	if _, err := attest.LoadReferenceValues(p); !errors.Is(err, attest.ErrPolicyEmpty) || !strings.HasPrefix(err.Error(), p+": ") {
		t.Fatalf("no agent digest: got %v, want %v naming the file", err, attest.ErrPolicyEmpty)
	}
}

func TestLoadCertificates(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	root, other := newCA(t, "root", nil), newCA(t, "other", nil)
	var bundle []byte
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.cert.Raw})...)
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("skipped")})...)
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.cert.Raw})...)
	certs, err := attest.LoadCertificates(write("bundle.pem", bundle))
	if err != nil || len(certs) != 2 || !certs[0].Equal(root.cert) || !certs[1].Equal(other.cert) {
		t.Fatalf("bundle: %v, %d certificates", err, len(certs))
	}
	if _, err := attest.LoadCertificates(filepath.Join(dir, "missing.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing file: got %v, want %v", err, fs.ErrNotExist)
	}
	if _, err := attest.LoadCertificates(write("large.pem", padJSON(bundle, attest.MaxReferenceValuesSize+1))); !errors.Is(err, attest.ErrTooLarge) {
		t.Fatalf("over the size limit: got %v, want %v", err, attest.ErrTooLarge)
	}
	p := write("keys.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")}))
	if _, err := attest.LoadCertificates(p); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("no certificate: got %v", err)
	}
	p = write("bad.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")}))
	if _, err := attest.LoadCertificates(p); err == nil || !strings.HasPrefix(err.Error(), p+": x509: ") {
		t.Fatalf("bad certificate: got %v", err)
	}
}
