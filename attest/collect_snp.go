package attest

import (
	"errors"
	"fmt"
	"os"

	sevabi "github.com/google/go-sev-guest/abi"
	sevclient "github.com/google/go-sev-guest/client"
)

// ErrNoSNP: this machine is not an SEV-SNP guest (no configfs-tsm report
// interface for SEV-SNP, no /dev/sev-guest).
var ErrNoSNP = errors.New("not an SEV-SNP guest")

// DetectSNP reports whether this machine can produce SEV-SNP attestation
// reports, with the reason when it cannot (wrapping ErrNoSNP).
func DetectSNP() error {
	if qp, err := sevclient.GetQuoteProvider(); err == nil && qp.IsSupported() {
		return nil
	}
	if _, err := os.Stat("/dev/sev-guest"); err == nil {
		return nil
	}
	return fmt.Errorf("%w: neither configfs-tsm (/sys/kernel/config/tsm/report, kernel 6.7+) nor /dev/sev-guest is available", ErrNoSNP)
}

// CollectSNPReport asks the hardware (configfs-tsm, else /dev/sev-guest,
// as go-sev-guest chooses) for an attestation report with reportData, and
// returns the raw report and the VCEK certificate the host supplied, if
// any. It refuses clearly (ErrNoSNP) without SEV-SNP hardware. Not tested:
// no SEV-SNP hardware was available.
func CollectSNPReport(reportData [64]byte) (report, vcek []byte, err error) {
	if err := DetectSNP(); err != nil {
		return nil, nil, err
	}
	qp, err := sevclient.GetQuoteProvider()
	if err != nil {
		return nil, nil, fmt.Errorf("SEV-SNP quote provider: %w", err)
	}
	raw, err := qp.GetRawQuote(reportData)
	if err != nil {
		return nil, nil, fmt.Errorf("SEV-SNP report: %w", err)
	}
	if len(raw) < sevabi.ReportSize || len(raw) > sevabi.ReportSize+MaxAttestationSize {
		return nil, nil, fmt.Errorf("%w: SEV-SNP report and certificates are %d bytes", ErrMalformedEvidence, len(raw))
	}
	att, err := sevabi.ReportCertsToProto(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: SEV-SNP report and certificates: %v", ErrMalformedEvidence, err)
	}
	return raw[:sevabi.ReportSize], att.GetCertificateChain().GetVcekCert(), nil
}
