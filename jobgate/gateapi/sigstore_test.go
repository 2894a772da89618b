package gateapi

import "testing"

func TestSigstoreValidate(t *testing.T) {
	for u, ok := range map[string]bool{
		"https://fulcio.sigstore.dev": true,
		"http://127.0.0.1:5555":       true,
		"http://localhost:5555":       true,
		"http://fulcio.example":       false,
		"ftp://fulcio.example":        false,
		"fulcio.example":              false,
		"https://u:p@fulcio.example":  false,
		"":                            false,
	} {
		err := (&Sigstore{FulcioURL: u, RekorURL: "https://rekor.sigstore.dev"}).Validate()
		if (err == nil) != ok {
			t.Errorf("fulcioUrl %q: %v", u, err)
		}
		err = (&Sigstore{FulcioURL: "https://fulcio.sigstore.dev", RekorURL: u}).Validate()
		if (err == nil) != ok {
			t.Errorf("rekorUrl %q: %v", u, err)
		}
	}
}
