package attest

import (
	"crypto/x509"
	"embed"
	"encoding/pem"
	"fmt"
	"path"
	"slices"
	"strings"
)

// GCEBundleVersion is where the gce trust bundle comes from.
const GCEBundleVersion = "github.com/google/go-tpm-tools v0.4.10 server/ca-certs"

//go:embed trustbundles/gce/*.crt trustbundles/gce/*.cer
var gceBundle embed.FS

// TrustBundle is a named set of CA certificates shipped with this module,
// selectable in a gate's policy (policy.trustBundles).
type TrustBundle struct {
	Name, Version string
	// Roots are trust anchors, Intermediates only help build chains.
	Roots, Intermediates []*x509.Certificate
}

// TrustBundles are the names LoadTrustBundle knows.
var TrustBundles = []string{"gce"}

// LoadTrustBundle returns a shipped trust bundle:
//   - "gce": Google Compute Engine's vTPM EK/AK CAs (GCEBundleVersion):
//     two roots, three intermediates. They issue both the EK and the AK
//     certificates of Shielded and Confidential VMs.
//
// An unknown name is an error.
func LoadTrustBundle(name string) (*TrustBundle, error) {
	if name != "gce" {
		return nil, fmt.Errorf("unknown trust bundle %q (known: %s)", name, strings.Join(TrustBundles, ", "))
	}
	b := &TrustBundle{Name: name, Version: GCEBundleVersion}
	entries, err := gceBundle.ReadDir("trustbundles/gce")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		raw, err := gceBundle.ReadFile(path.Join("trustbundles/gce", e.Name()))
		if err != nil {
			return nil, err
		}
		if blk, _ := pem.Decode(raw); blk != nil {
			raw = blk.Bytes
		}
		c, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, fmt.Errorf("trust bundle %s: %s: %w", name, e.Name(), err)
		}
		if !c.IsCA {
			return nil, fmt.Errorf("trust bundle %s: %s is not a CA", name, e.Name())
		}
		if c.CheckSignatureFrom(c) == nil && slices.Equal(c.RawIssuer, c.RawSubject) {
			b.Roots = append(b.Roots, c)
		} else {
			b.Intermediates = append(b.Intermediates, c)
		}
	}
	return b, nil
}
