package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/internal/cli"
	"github.com/attested-runner/attested-runner/internal/fileio"
	pb "github.com/google/go-tpm-tools/proto/attest"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

const evidenceUsage = `Usage: attested-verify evidence FILE [flags]

Inspect hardware evidence: verify what can be verified with the inputs
given, print what was measured, and derive candidate reference values.

FILE is one of (detected, or forced with --kind):
  - attested-runner evidence (JSON, as sent to the gate or embedded in
    provenance);
  - a go-tpm-tools Attestation protobuf, binary or JSON (gotpm attest);
  - a raw TDX quote (v4), with --ccel and --ccel-table for its event log.

Checks whose inputs are missing are reported as skipped (-), never as
passed (✓):
  --nonce             the challenge (attested-runner evidence, with --purpose)
                      or the raw nonce (go-tpm-tools attestation, TDX quote);
                      without it, freshness is not checked
  --trusted-ak / --trusted-ak-root   who may have made a TPM quote
  --reference-values  what the boot must have measured
  --ccel / --ccel-table   a raw TDX quote's event log; without them, RTMR 0-2
                      are shown but not replayed
  --tdx-collateral    Intel collateral (JSON: tcbInfo, qeIdentity, pckCrl,
                      rootCaCrl) to judge a TDX quote's TCB with, at --time;
                      evidence that embeds collateral is judged with it.
                      Without either, the TCB is not evaluated (level 2)
  --trusted-tdx-root  PEM CA certificates to check TDX quotes and collateral
                      under, in place of Intel's SGX root CA (built in):
                      test chains only
  --snp-allow-smt / --snp-min-tcb   what an SEV-SNP report riding in TPM
                      evidence (a vTPM in an SEV-SNP VM, or an Azure
                      confidential VM's HCL report) must show besides the
                      image's snpMeasurements (which need
                      --reference-values; a vTPM's report also needs
                      --nonce for its REPORT_DATA); its signer is checked
                      against AMD's roots (built in), or --trusted-snp-roots
                      (AMD KDS cert_chain format)

Result: VERIFIED (exit 0) when no check failed and the quote's signer was
checked against a trust anchor: for a TPM quote --trusted-ak or
--trusted-ak-root, for a TDX quote Intel's SGX root CA (built in). Without
an anchor a TPM quote is NOT VERIFIED (exit 1): anyone could have made it;
the other checks still run and what was measured is still printed. Other
skipped checks do not fail the result: give their inputs to require them.

With --format json the report includes "referenceValues": a candidate
reference-values document built from the measurements of a VERIFIED
inspection. Review it, then load it into the gate (--reference-values-out
writes it alone).

Examples:
  attested-verify evidence boot.json --trusted-ak ak.pem --reference-values rv.json
  attested-verify evidence quote.dat --kind tdx --ccel ccel.bin --ccel-table ccel-table.bin \
      --nonce $(xxd -p -c 64 nonce.bin) --time 2024-06-01T00:00:00Z --format json
`

type evidenceConfig struct {
	file              string
	kind              string
	eventLog          string
	ccel, ccelTable   string
	nonceHex, purpose string
	trustedAKs        cli.StringList
	trustedAKRoots    cli.StringList
	referenceVals     string
	tdxCollateral     string
	tdxRoot           string
	snpRoots          string
	snpAllowSMT       bool
	snpMinTCB         string
	at                string
	directKernelBoot  bool
	allowSoftwareTPM  bool
	format            string
	refOut            string
}

func parseEvidence(args []string, stderr io.Writer) (*evidenceConfig, error) {
	var c evidenceConfig
	fs := cli.NewFlagSet("evidence", evidenceUsage, stderr)
	fs.StringVar(&c.kind, "kind", "auto", "input kind: auto, evidence, tpm (go-tpm-tools attestation) or tdx (raw quote)")
	fs.StringVar(&c.eventLog, "event-log", "", "TCG event log to use for a go-tpm-tools attestation (replaces the one inside)")
	fs.StringVar(&c.ccel, "ccel", "", "CCEL event log for a TDX quote (/sys/firmware/acpi/tables/data/CCEL)")
	fs.StringVar(&c.ccelTable, "ccel-table", "", "CCEL ACPI table for a TDX quote (/sys/firmware/acpi/tables/CCEL)")
	fs.StringVar(&c.nonceHex, "nonce", "", "hex nonce the evidence must answer")
	fs.StringVar(&c.purpose, "purpose", "admission", "for attested-runner evidence with --nonce: admission, dispatch or statement")
	fs.Var(&c.trustedAKs, "trusted-ak", "PEM file of trusted TPM attestation keys (repeatable)")
	fs.Var(&c.trustedAKRoots, "trusted-ak-root", "PEM file of trusted AK certificate roots (repeatable)")
	fs.StringVar(&c.referenceVals, "reference-values", "", "reference-values file to check the measurements against")
	fs.StringVar(&c.tdxCollateral, "tdx-collateral", "", "Intel TDX collateral (JSON) to evaluate the TCB with")
	fs.StringVar(&c.tdxRoot, "trusted-tdx-root", "", "PEM CA certificates to check TDX quotes and collateral under, in place of Intel's SGX root CA")
	fs.StringVar(&c.snpRoots, "trusted-snp-roots", "", "PEM ASK and ARK (AMD KDS cert_chain) to check SEV-SNP reports under, in place of AMD's built-in roots")
	fs.BoolVar(&c.snpAllowSMT, "snp-allow-smt", false, "accept SEV-SNP guests whose policy allows SMT")
	fs.StringVar(&c.snpMinTCB, "snp-min-tcb", "", "lowest SEV-SNP reported TCB accepted: BOOTLOADER,TEE,SNP,MICROCODE (e.g. 3,0,8,115)")
	fs.StringVar(&c.at, "time", "", "verify certificates and collateral as of this RFC 3339 time (historical evidence)")
	fs.BoolVar(&c.directKernelBoot, "direct-kernel-boot", false, "the firmware loaded the kernel itself (QEMU -kernel): allow the kernel's EFI app event before 'Calling EFI Application'")
	fs.BoolVar(&c.allowSoftwareTPM, "insecure-allow-software-tpm", false, "do not fail evidence labelled as from a software TPM")
	fs.StringVar(&c.format, "format", "text", "output format: text or json")
	fs.StringVar(&c.refOut, "reference-values-out", "", "write the candidate reference values to this file")
	pos, err := cli.Parse(fs, args)
	if err != nil {
		if err == flag.ErrHelp {
			return nil, err
		}
		return nil, cli.Usagef("%v", err)
	}
	switch {
	case len(pos) != 1:
		return nil, cli.Usagef("evidence: exactly one FILE, got %d", len(pos))
	case c.format != "text" && c.format != "json":
		return nil, cli.Usagef("evidence: --format must be text or json")
	}
	switch c.kind {
	case "auto", "evidence", "tpm", "tdx":
	default:
		return nil, cli.Usagef("evidence: --kind must be auto, evidence, tpm or tdx")
	}
	c.file = pos[0]
	return &c, nil
}

type evidenceReport struct {
	Source          string                  `json:"source"`
	Kind            attest.Kind             `json:"kind"`
	Verified        bool                    `json:"verified"`
	Error           string                  `json:"error,omitempty"`
	Checks          []attest.Check          `json:"checks"`
	Measured        *measured               `json:"measured,omitempty"`
	ReferenceValues *attest.ReferenceValues `json:"referenceValues,omitempty"`
}

type measured struct {
	Level      int               `json:"buildEnvLevel"`
	Hardware   string            `json:"hardware,omitempty"`
	ImageID    string            `json:"imageId,omitempty"`
	AKDigest   string            `json:"akDigest,omitempty"`
	EnvKey     string            `json:"envKeyDigest,omitempty"`
	SecureBoot *bool             `json:"secureBoot,omitempty"`
	PCRs       map[string]string `json:"pcrs,omitempty"`
	EFIApps    []string          `json:"efiApps,omitempty"`
	MRTD       string            `json:"mrtd,omitempty"`
	RTMRs      []string          `json:"rtmrs,omitempty"`
	Lifecycle  []string          `json:"lifecycle,omitempty"`
	BootEvents int               `json:"bootEvents,omitempty"`
	// TDX: the kernel command line from the CCEL, the quoting enclave and
	// Intel's TCB verdict with the collateral's dates.
	KernelCmdline string                `json:"kernelCmdline,omitempty"`
	TDXQE         *attest.TDXQEIdentity `json:"tdxQe,omitempty"`
	TDXTCB        *attest.TDXTCB        `json:"tdxTcb,omitempty"`
	// SEVSNP: what the SEV-SNP report riding in TPM evidence showed.
	SEVSNP *attest.SNPClaims `json:"sevSnp,omitempty"`
}

func runEvidence(_ context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseEvidence(args, stderr)
	if err != nil {
		return err
	}
	raw, err := cli.ReadFile(c.file, attest.MaxEvidenceSize)
	if err != nil {
		return err
	}
	p, err := loadPolicy(c.referenceVals, c.trustedAKs, c.trustedAKRoots)
	if err != nil {
		return err
	}
	if c.tdxCollateral != "" {
		b, err := cli.ReadFile(c.tdxCollateral, 4*attest.MaxPCSResponseSize)
		if err != nil {
			return err
		}
		var coll attest.TDXCollateral
		if err := json.Unmarshal(b, &coll); err != nil {
			return fmt.Errorf("--tdx-collateral: %w", err)
		}
		p.TDXCollateral = &coll
	}
	if c.tdxRoot != "" {
		certs, err := attest.LoadCertificates(c.tdxRoot)
		if err != nil {
			return fmt.Errorf("--trusted-tdx-root: %w", err)
		}
		p.TrustedTDXRoots = x509.NewCertPool()
		for _, cert := range certs {
			p.TrustedTDXRoots.AddCert(cert)
		}
	}
	if p.SNP, err = c.snpRequirements(); err != nil {
		return err
	}
	p.DirectKernelBoot = c.directKernelBoot
	p.AllowSoftwareTPMUnsafe = c.allowSoftwareTPM
	if c.at != "" {
		if p.Time, err = time.Parse(time.RFC3339, c.at); err != nil {
			return cli.Usagef("--time: %v", err)
		}
	}
	var nonce []byte
	if c.nonceHex != "" {
		if nonce, err = hex.DecodeString(strings.TrimSpace(c.nonceHex)); err != nil {
			return cli.Usagef("--nonce is not hex: %v", err)
		}
	}

	in, err := inspect(c, raw, nonce, p)
	if err != nil {
		return err
	}
	rep := evidenceReport{Source: in.Source, Kind: in.Kind, Verified: in.Verified(), Checks: in.Checks}
	if in.Err != nil {
		rep.Error = in.Err.Error()
		if errors.Is(in.Err, attest.ErrNoTrustRoot) {
			rep.Error += "; give " + skipHints["attestation key"]
		}
	}
	rep.Measured = measurements(in.Claims)
	if in.Verified() {
		rep.ReferenceValues = in.CandidateReferenceValues(candidateID(in))
	}
	if c.refOut != "" {
		if rep.ReferenceValues == nil {
			return fmt.Errorf("--reference-values-out: no verified measurements to derive reference values from")
		}
		b, err := json.MarshalIndent(rep.ReferenceValues, "", "  ")
		if err != nil {
			return err
		}
		if err := fileio.WriteFileAtomic(c.refOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	if c.format == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		printEvidenceText(stdout, rep, c.refOut)
	}
	if !rep.Verified {
		return errNotVerified
	}
	return nil
}

// snpRequirements are the --snp-* and --trusted-snp-roots flags.
func (c *evidenceConfig) snpRequirements() (attest.SNPRequirements, error) {
	r := attest.SNPRequirements{AllowSMT: c.snpAllowSMT}
	if c.snpMinTCB != "" {
		parts := strings.Split(c.snpMinTCB, ",")
		var v [4]uint8
		for i, p := range parts {
			n, err := strconv.ParseUint(strings.TrimSpace(p), 10, 8)
			if err != nil || len(parts) != 4 {
				return r, cli.Usagef("--snp-min-tcb %q: want four numbers 0-255, BOOTLOADER,TEE,SNP,MICROCODE", c.snpMinTCB)
			}
			v[i] = uint8(n)
		}
		r.MinimumTCB = attest.SNPTCB{BootLoader: v[0], TEE: v[1], SNP: v[2], Microcode: v[3]}
	}
	if c.snpRoots != "" {
		roots, err := attest.LoadSNPRoots(c.snpRoots)
		if err != nil {
			return r, fmt.Errorf("--trusted-snp-roots: %w", err)
		}
		r.TrustedRoots = roots
	}
	return r, nil
}

func candidateID(in *attest.Inspection) string {
	if in.Claims != nil && in.Claims.ImageID != "" {
		return in.Claims.ImageID
	}
	return "candidate-" + time.Now().UTC().Format("20060102")
}

// inspect detects the input kind and runs the matching inspection.
func inspect(c *evidenceConfig, raw, nonce []byte, p *attest.Policy) (*attest.Inspection, error) {
	kind := c.kind
	trimmed := bytes.TrimSpace(raw)
	if kind == "auto" {
		kind = detectKind(trimmed)
	}
	switch kind {
	case "evidence":
		ev, err := attest.DecodeEvidence(trimmed)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", c.file, err)
		}
		o := attest.InspectOptions{Policy: p}
		if nonce != nil {
			ch := attest.Challenge{Purpose: attest.Purpose(c.purpose), Nonce: nonce}
			o.Challenge = &ch
		}
		return attest.InspectEvidence(ev, o), nil
	case "tpm":
		var att pb.Attestation
		if len(trimmed) > 0 && trimmed[0] == '{' {
			if err := protojson.Unmarshal(trimmed, &att); err != nil {
				return nil, fmt.Errorf("%s: not a go-tpm-tools attestation (JSON): %w", c.file, err)
			}
		} else if err := proto.Unmarshal(raw, &att); err != nil {
			return nil, fmt.Errorf("%s: not a go-tpm-tools attestation: %w", c.file, err)
		}
		if c.eventLog != "" {
			log, err := cli.ReadFile(c.eventLog, attest.MaxEventLogSize)
			if err != nil {
				return nil, err
			}
			att.EventLog = log
		}
		return attest.InspectTPMAttestation(&att, attest.InspectOptions{RawNonce: nonce, Policy: p}), nil
	case "tdx":
		var table, log []byte
		var err error
		if c.ccelTable != "" {
			if table, err = cli.ReadFile(c.ccelTable, 4096); err != nil {
				return nil, err
			}
		}
		if c.ccel != "" {
			if log, err = cli.ReadFile(c.ccel, attest.MaxEventLogSize); err != nil {
				return nil, err
			}
		}
		return attest.InspectTDXQuote(raw, table, log, attest.InspectOptions{RawNonce: nonce, Policy: p}), nil
	}
	return nil, cli.Usagef("evidence: %s: cannot tell what this is; use --kind", c.file)
}

func detectKind(b []byte) string {
	if len(b) > 0 && b[0] == '{' {
		var probe struct {
			Format string `json:"format"`
		}
		if json.Unmarshal(b, &probe) == nil && probe.Format == attest.EvidenceFormat {
			return "evidence"
		}
		return "tpm"
	}
	// TDX quotes start with version 4, attestation key type 2 (ECDSA-256)
	// and TEE type 0x81 (little endian).
	if len(b) > 8 && b[0] == 4 && b[1] == 0 && b[4] == 0x81 {
		return "tdx"
	}
	return "tpm"
}

func measurements(c *attest.Claims) *measured {
	if c == nil {
		return nil
	}
	m := &measured{Level: c.Level, Hardware: c.Hardware, ImageID: c.ImageID, AKDigest: c.AKDigest, EnvKey: c.EnvKeyDigest, BootEvents: len(c.BootEvents),
		KernelCmdline: c.KernelCmdline, TDXQE: c.TDXQE, TDXTCB: c.TDXTCB, SEVSNP: c.SNP}
	if len(c.PCRs) > 0 {
		m.PCRs = map[string]string{}
		for i, v := range c.PCRs {
			m.PCRs[fmt.Sprint(i)] = hex.EncodeToString(v)
		}
		sb := c.SecureBoot
		m.SecureBoot = &sb
	}
	for _, a := range c.EFIApps {
		m.EFIApps = append(m.EFIApps, hex.EncodeToString(a))
	}
	if len(c.MRTD) > 0 {
		if c.Lifecycle != nil || c.KernelCmdline != "" || c.SecureBoot {
			// The CCEL was replayed (evidence, or a quote given with it).
			sb := c.SecureBoot
			m.SecureBoot = &sb
		}
		m.MRTD = hex.EncodeToString(c.MRTD)
		for _, r := range c.RTMRs {
			m.RTMRs = append(m.RTMRs, hex.EncodeToString(r))
		}
	}
	if c.Lifecycle != nil {
		for _, e := range c.Lifecycle.Events {
			m.Lifecycle = append(m.Lifecycle, e.String())
		}
	}
	return m
}

// snpBindings say what each SEV-SNP binding means.
var snpBindings = map[string]string{
	attest.SNPBindingReportData: "report-data: REPORT_DATA binds this challenge, both keys and the quote's AK",
	attest.SNPBindingAzureHCL:   "azure-hcl: REPORT_DATA is the SHA-256 of the HCL runtime data, which names the quote's AK (the report dates from boot; the quote's nonce is the freshness)",
}

// skipHints name the flags that would have let a skipped check run.
var skipHints = map[string]string{
	"attestation key":  "--trusted-ak or --trusted-ak-root",
	"nonce":            "--nonce",
	"reference values": "--reference-values",
	"agent":            "--reference-values",
	"event log":        "--ccel and --ccel-table",
	"tcb":              "--tdx-collateral (Intel PCS collateral)",
	"sev-snp":          "--reference-values (with snpMeasurements) and --nonce",
	"tdx quote":        "--reference-values (with tdxMrtds) and --nonce",
	"tdx tcb":          "--tdx-collateral (Intel PCS collateral)",
	"azure-hcl":        "--reference-values (with snpMeasurements)",
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func printEvidenceText(w io.Writer, r evidenceReport, refOut string) {
	fmt.Fprintf(w, "%s (%s)\n", r.Source, r.Kind)
	for _, ch := range r.Checks {
		switch ch.Status {
		case attest.StatusPass:
			fmt.Fprintf(w, "  ✓ %-17s %s\n", ch.Name, ch.Detail)
		case attest.StatusSkipped:
			detail := ch.Detail
			if h, ok := skipHints[ch.Name]; ok {
				detail += "; give " + h
			}
			fmt.Fprintf(w, "  - %-17s SKIPPED: %s\n", ch.Name, detail)
		default:
			fmt.Fprintf(w, "  ✗ %-17s %s\n", ch.Name, ch.Detail)
		}
	}
	if m := r.Measured; m != nil {
		fmt.Fprintln(w, "Measured:")
		if m.SecureBoot != nil {
			fmt.Fprintf(w, "  Secure Boot  %v\n", *m.SecureBoot)
		}
		for _, a := range m.EFIApps {
			fmt.Fprintf(w, "  EFI app      %s\n", a)
		}
		idx := make([]string, 0, len(m.PCRs))
		for i := range m.PCRs {
			idx = append(idx, i)
		}
		sort.Slice(idx, func(a, b int) bool { return len(idx[a]) < len(idx[b]) || len(idx[a]) == len(idx[b]) && idx[a] < idx[b] })
		for _, i := range idx {
			if m.PCRs[i] != strings.Repeat("0", 64) && m.PCRs[i] != strings.Repeat("f", 64) {
				fmt.Fprintf(w, "  PCR %-8s %s\n", i, m.PCRs[i])
			}
		}
		if m.MRTD != "" {
			fmt.Fprintf(w, "  MRTD         %s\n", m.MRTD)
			for i, r := range m.RTMRs {
				fmt.Fprintf(w, "  RTMR %d       %s\n", i, r)
			}
		}
		if m.KernelCmdline != "" {
			fmt.Fprintf(w, "  kernel cmdline %s\n", m.KernelCmdline)
		}
		if q := m.TDXQE; q != nil {
			fmt.Fprintf(w, "  TDX QE       MRSIGNER %s, ISVPRODID %d, ISVSVN %d\n", q.MRSigner, q.ISVProdID, q.ISVSVN)
		}
		if t := m.TDXTCB; t != nil {
			fmt.Fprintf(w, "  TDX TCB      %s (FMSPC %s, TCB date %s", orNone(t.Status), t.FMSPC, orNone(t.TCBDate))
			if len(t.AdvisoryIDs) > 0 {
				fmt.Fprintf(w, ", advisories %s", strings.Join(t.AdvisoryIDs, " "))
			}
			fmt.Fprintf(w, "), quoting enclave %s, judged at %s\n", orNone(t.QEStatus), t.EvaluatedAt.Format(time.RFC3339))
			for _, it := range t.SortedItems() {
				fmt.Fprintf(w, "  collateral   %-32s issued %s, next update %s\n", it.Name, it.Issued.UTC().Format(time.RFC3339), it.NextUpdate.UTC().Format(time.RFC3339))
			}
		}
		if s := m.SEVSNP; s != nil {
			flags := s.GuestPolicyFlags()
			fmt.Fprintf(w, "  sev-snp      MEASUREMENT %s\n", s.Measurement)
			fmt.Fprintf(w, "  sev-snp      guest policy %#x: SMT %s, debug %s, migration agent %s; reported TCB %s; VCEK sha256:%s\n",
				s.GuestPolicy, allowed(flags.SMT), allowed(flags.Debug), allowed(flags.MigrateMA), s.ReportedTCB, s.VCEKDigest)
			fmt.Fprintf(w, "  sev-snp      binding %s\n", snpBindings[s.Binding])
		}
		for _, e := range m.Lifecycle {
			fmt.Fprintf(w, "  lifecycle    %s\n", e)
		}
		if m.Hardware != "" {
			fmt.Fprintf(w, "  level        %d (%s)\n", m.Level, m.Hardware)
		}
	}
	if refOut != "" {
		fmt.Fprintf(w, "Candidate reference values written to %s: review before loading into the gate.\n", refOut)
	}
	if r.Verified {
		fmt.Fprintln(w, "Result: VERIFIED (checks marked - were skipped: their inputs were not given)")
	} else {
		fmt.Fprintf(w, "Result: NOT VERIFIED: %s\n", r.Error)
	}
}

func allowed(b bool) string {
	if b {
		return "allowed"
	}
	return "not allowed"
}
