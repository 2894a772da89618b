package attest

import (
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	sevabi "github.com/google/go-sev-guest/abi"
	sevclient "github.com/google/go-sev-guest/client"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify/trust"
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
// report and the VCEK (or VLEK) certificate the host supplied with it. If
// the host supplies none, the VCEK is fetched from AMD's KDS through
// getter (trust.DefaultHTTPSGetter(); nil: an error instead), for the report's
// CHIP_ID and REPORTED_TCB. Nothing fetched is trusted here: the verifier
// checks the VCEK against AMD's roots.
func SNPReportFrom(qp sevclient.QuoteProvider, reportData [64]byte, getter trust.HTTPSGetter) (report, vcek []byte, err error) {
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
		if getter == nil {
			return nil, nil, fmt.Errorf("%w: the host supplied no VCEK or VLEK certificate with the SEV-SNP report, and fetching it from AMD's KDS is off", ErrMalformedEvidence)
		}
		if vcek, err = vcekFromKDS(getter, att.GetReport()); err != nil {
			return nil, nil, err
		}
	}
	return raw[:sevabi.ReportSize], vcek, nil
}

// vcekFromKDS fetches the VCEK of the chip and TCB a report names from
// AMD's KDS (DER, within MaxSNPCertSize, and a certificate).
func vcekFromKDS(getter trust.HTTPSGetter, r *spb.Report) ([]byte, error) {
	// The product line is the report's CPU family (reports v3+); older
	// reports name none, and KDS is asked under its default line (Milan):
	// a wrong line only gets a refusal naming the URL.
	line := kds.DefaultProductLine()
	if fms := r.GetCpuid1EaxFms(); fms != 0 {
		line = kds.ProductLineFromFms(fms)
	}
	url := kds.VCEKCertURL(line, r.GetChipId(), kds.TCBVersion(r.GetReportedTcb()))
	der, err := getter.Get(url)
	if err != nil {
		return nil, fmt.Errorf("the host supplied no VCEK, and AMD's KDS did not give it (%s): %w", url, err)
	}
	if len(der) > MaxSNPCertSize {
		return nil, fmt.Errorf("%w: AMD's KDS answered %d bytes for the VCEK (%s)", ErrTooLarge, len(der), url)
	}
	if _, err := x509.ParseCertificate(der); err != nil {
		return nil, fmt.Errorf("%w: AMD's KDS answered no VCEK certificate (%s): %v", ErrMalformedEvidence, url, err)
	}
	return der, nil
}
