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

// SNPQuoteProvider returns this machine's SEV-SNP report interface
// (configfs-tsm, else /dev/sev-guest, as go-sev-guest chooses), refusing
// clearly (ErrNoSNP) without SEV-SNP hardware. It is what
// TPMOptions.SNP takes on a confidential VM with a vTPM. Not tested on
// hardware: no SEV-SNP machine was available.
func SNPQuoteProvider() (sevclient.QuoteProvider, error) {
	if err := DetectSNP(); err != nil {
		return nil, err
	}
	qp, err := sevclient.GetQuoteProvider()
	if err != nil {
		return nil, fmt.Errorf("SEV-SNP quote provider: %w", err)
	}
	return qp, nil
}

// SNPReportFrom asks qp for a report with reportData and returns the raw
// report and the VCEK (or VLEK) certificate the host supplied with it.
// A host that supplies none is an error: fetching the VCEK from AMD's KDS
// is not done.
func SNPReportFrom(qp sevclient.QuoteProvider, reportData [64]byte) (report, vcek []byte, err error) {
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
	chain := att.GetCertificateChain()
	vcek = chain.GetVcekCert()
	if len(vcek) == 0 {
		vcek = chain.GetVlekCert()
	}
	if len(vcek) == 0 {
		return nil, nil, fmt.Errorf("%w: the host supplied no VCEK or VLEK certificate with the SEV-SNP report (fetching it from AMD's KDS is not done)", ErrMalformedEvidence)
	}
	return raw[:sevabi.ReportSize], vcek, nil
}
