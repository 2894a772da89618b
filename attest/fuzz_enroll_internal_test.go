package attest

import "testing"

// FuzzUnwrapTPM2B: credential parts come from the gate (or whoever
// answers in its name) and go to the TPM.
func FuzzUnwrapTPM2B(f *testing.F) {
	f.Add([]byte{0, 2, 0xab, 0xcd})
	f.Add([]byte{0, 0})
	f.Add(make([]byte, 260))
	f.Fuzz(func(t *testing.T, b []byte) {
		body, err := unwrapTPM2B(b)
		if err != nil {
			return
		}
		if len(body) != len(b)-2 || len(body) == 0 || len(body) > maxCredentialPart {
			t.Fatalf("unwrapped %d bytes of %d", len(body), len(b))
		}
	})
}
