package attest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/google/go-eventlog/extract"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	pb "github.com/google/go-tpm-tools/proto/attest"
	tpmpb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm/legacy/tpm2"
	"google.golang.org/protobuf/proto"
)

// EnvKeyAttributes are the TPM object attributes an environment key must
// have: a signing key generated inside the TPM that can never be duplicated.
const EnvKeyAttributes = tpm2.FlagSign | tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin | tpm2.FlagUserWithAuth

// EnvKeyTemplate is the TPM template of the environment key: ECDSA P-256
// with SHA-256, created as a primary key in the null hierarchy (see the
// collector), so the TPM forgets it at the next reset.
func EnvKeyTemplate() tpm2.Public {
	return tpm2.Public{
		Type:       tpm2.AlgECC,
		NameAlg:    tpm2.AlgSHA256,
		Attributes: EnvKeyAttributes,
		ECCParameters: &tpm2.ECCParams{
			Sign:    &tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256},
			CurveID: tpm2.CurveNISTP256,
		},
	}
}

// tpmInput is a TPM attestation to check: ours (ev set) or a bare
// go-tpm-tools attestation (inspection only).
type tpmInput struct {
	att *pb.Attestation
	cel []byte
	ev  *Evidence // nil for a bare attestation
	// nonce is the quote's expected qualifying data; nil: not checked
	// (inspection only).
	nonce []byte
	// ch is the challenge nonce was derived from (nil with it).
	ch *Challenge
}

func verifyTPM(ev *Evidence, ch *Challenge, p *Policy, c *Claims, s *steps) error {
	var att pb.Attestation
	if err := s.run("decode", func() (string, error) {
		if err := proto.Unmarshal(ev.TPM.Attestation, &att); err != nil {
			return "", fmt.Errorf("%w: TPM attestation: %v", ErrMalformedEvidence, err)
		}
		return "attested-runner TPM evidence", nil
	}); err != nil {
		return err
	}
	in := tpmInput{att: &att, cel: ev.CEL, ev: ev, ch: ch}
	if ch != nil {
		in.nonce = ch.TPMNonce(ev.EnvKey, ev.HPKEPublicKey)
	}
	return verifyTPMInput(in, p, c, s)
}

func verifyTPMInput(in tpmInput, p *Policy, c *Claims, s *steps) error {
	att := in.att
	if len(att.GetEventLog()) > MaxEventLogSize {
		return s.fail("decode", fmt.Errorf("%w: TCG event log is %d bytes", ErrTooLarge, len(att.GetEventLog())))
	}
	var ak crypto.PublicKey
	if !p.hasAKRoots() {
		// Inspection only (Verify requires a root): the quote can be checked
		// for consistency with its own AK, which proves nothing about who
		// made it.
		var spki []byte
		var err error
		if ak, spki, err = restrictedAK(att); err != nil {
			return s.fail("attestation key", err)
		}
		c.AK, c.AKDigest = spki, KeyDigest(spki)
		s.unanchored = "the TPM quote's signer, AK sha256:" + c.AKDigest[:16] + ", was not checked against any trusted AK or AK root"
		s.skip("attestation key", "no trusted AK or AK root given: the quote's signer, AK sha256:"+c.AKDigest[:16]+", is not verified")
	} else if err := s.run("attestation key", func() (string, error) {
		var spki []byte
		var err error
		if ak, spki, err = trustedAK(att, p); err != nil {
			return "", err
		}
		c.AK, c.AKDigest = spki, KeyDigest(spki)
		return "trusted AK sha256:" + c.AKDigest[:16], nil
	}); err != nil {
		return err
	}

	var quote *tpmpb.Quote
	if err := s.run("quote", func() (string, error) {
		var err error
		if quote, err = sha256Quote(att); err != nil {
			return "", err
		}
		ad, err := tpm2.DecodeAttestationData(quote.GetQuote())
		if err != nil {
			return "", fmt.Errorf("%w: quote attestation data: %v", ErrMalformedEvidence, err)
		}
		nonce := in.nonce
		if nonce != nil && subtle.ConstantTimeCompare(ad.ExtraData, nonce) != 1 {
			return "", fmt.Errorf("%w: TPM quote", ErrNonceMismatch)
		}
		if nonce == nil {
			nonce = ad.ExtraData // inspection without a nonce: self-consistency only
		}
		if err := verifyQuote(quote, ak, nonce); err != nil {
			return "", fmt.Errorf("%w: %v", ErrQuoteSignature, err)
		}
		c.PCRs = quote.GetPcrs().GetPcrs()
		what := "signature, PCR digest and nonce valid"
		if in.nonce == nil {
			what = "signature and PCR digest valid"
		}
		if !p.hasAKRoots() {
			what += " (signature by the attestation's own, unverified AK)"
		}
		return fmt.Sprintf("%s, %d SHA-256 PCRs", what, len(c.PCRs)), nil
	}); err != nil {
		return err
	}
	if in.nonce == nil {
		s.skip("nonce", "no nonce given: the quote may answer any challenge (freshness not checked)")
	}

	if err := s.run("event log", func() (string, error) {
		if err := verifyBootLog(att.GetEventLog(), c.PCRs, p, c); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d events replay to the quoted PCRs; Secure Boot %s", len(c.BootEvents), onOff(c.SecureBoot)), nil
	}); err != nil {
		return err
	}

	if in.ev == nil && len(in.cel) == 0 {
		s.skip("lifecycle log", "the attestation has no canonical event log")
	} else if err := s.run("lifecycle log", func() (string, error) {
		events, err := replayCEL(in.cel, tpmLayout, c.PCRs[LifecyclePCR])
		if err != nil {
			return "", err
		}
		if in.ev == nil {
			c.Lifecycle = &Lifecycle{Events: events}
			return fmt.Sprintf("%d events replay to PCR %d", len(events), LifecyclePCR), nil
		}
		if c.Lifecycle, err = checkLifecycle(events, in.ev.EnvKey, in.ev.HPKEPublicKey); err != nil {
			return "", err
		}
		return lifecycleString(c.Lifecycle), nil
	}); err != nil {
		return err
	}

	if in.ev != nil {
		if err := s.run("environment key", func() (string, error) {
			nonce := in.nonce
			if nonce == nil {
				// Inspection without a challenge: check the certification is
				// for the same (unknown) nonce as the quote.
				ad, _ := tpm2.DecodeAttestationData(quote.GetQuote())
				nonce = ad.ExtraData
			}
			if err := verifyCertify(in.ev, ak, nonce); err != nil {
				return "", err
			}
			return "sha256:" + c.EnvKeyDigest[:16] + " certified: non-exportable, null hierarchy", nil
		}); err != nil {
			return err
		}
	}

	snp := in.ev != nil && in.ev.TPM.SNP != nil
	hcl := in.ev != nil && in.ev.TPM.AzureHCL != nil
	tdx := in.ev != nil && in.ev.TPM.TDX != nil
	if matched, err := checkReference(s, p, c, matchTPMImage); !matched {
		if err == nil && snp {
			s.skip("sev-snp", "no reference values given: the SEV-SNP report is not judged")
		}
		if err == nil && hcl {
			s.skip("azure-hcl", "no reference values given: the HCL report is not judged")
		}
		if err == nil && tdx {
			s.skip("tdx quote", "no reference values given: the TDX quote is not judged")
		}
		return err
	}
	// A TPM quote alone is level 2 whatever the TPM: level 3 needs a
	// hardware TEE report binding the attestation (DESIGN.md, Levels).
	c.Level, c.Hardware = 2, HardwareTPM
	switch {
	case snp:
		if err := verifyTPMSNP(in, p, c, s); err != nil {
			return err
		}
	case hcl:
		if err := verifyTPMAzureHCL(in, ak, p, c, s); err != nil {
			return err
		}
	case tdx:
		if err := verifyTPMTDX(in, p, c, s); err != nil {
			return err
		}
	}
	if c.SoftwareTPM {
		c.Level = 0
	}
	return nil
}

// verifyTPMSNP judges the SEV-SNP report riding in TPM evidence (BuildEnv
// L3.hw-quote): VerifySNPReport against the matched image's SEV-SNP
// measurements and p.SNP, with REPORT_DATA bound to the challenge, both
// keys and the AK that signed the quote. Only then is the level 3, from
// hardware "sev-snp".
func verifyTPMSNP(in tpmInput, p *Policy, c *Claims, s *steps) error {
	if in.ch == nil {
		s.skip("sev-snp", "no challenge given: the report's REPORT_DATA cannot be checked, so it earns nothing")
		return nil
	}
	return s.run("sev-snp", func() (string, error) {
		sp, err := imageSNPPolicy("an SEV-SNP report", p, c)
		if err != nil {
			return "", err
		}
		snp := in.ev.TPM.SNP
		claims, err := VerifySNPReport(snp.Report, snp.VCEK, in.ch.SNPReportData(in.ev.EnvKey, in.ev.HPKEPublicKey, c.AK), sp)
		if err != nil {
			return "", err
		}
		return snpLevel3(c, claims, SNPBindingReportData, "report binds this quote's AK and keys"), nil
	})
}

// imageSNPPolicy is what an SEV-SNP report riding in TPM evidence (what:
// which kind) is judged by: the matched image's SEV-SNP measurements, of
// which there must be one (ErrReferenceMismatch), and p.SNP.
func imageSNPPolicy(what string, p *Policy, c *Claims) (*SNPPolicy, error) {
	if len(c.Image.SNPMeasurements) == 0 {
		return nil, fmt.Errorf("%w: the evidence carries %s and image %s lists no snpMeasurements", ErrReferenceMismatch, what, c.ImageID)
	}
	return &SNPPolicy{Measurements: c.Image.SNPMeasurements, Time: p.now(), SNPRequirements: p.SNP}, nil
}

// snpLevel3 records a verified SEV-SNP report that bound the vTPM's
// attestation by binding (level 3 from "sev-snp") and says so, after how.
func snpLevel3(c *Claims, claims *SNPClaims, binding, how string) string {
	claims.Binding = binding
	c.SNP, c.Level, c.Hardware = claims, 3, HardwareSEVSNP
	return fmt.Sprintf("%s; MEASUREMENT %x…, TCB %s, policy %#x (SMT %s)",
		how, []byte(claims.Measurement[:8]), claims.ReportedTCB, claims.GuestPolicy, onOff(claims.GuestPolicyFlags().SMT))
}

// verifyTPMAzureHCL judges an Azure confidential VM's HCL report (BuildEnv
// L3.hw-quote): the chain SEV-SNP report -> runtime data -> AK
// (VerifyAzureHCLReport, against the matched image's SEV-SNP measurements
// and p.SNP), and that AK is ak, the one that signed the quote
// (ErrAKNotBound). The quote's nonce, checked before, is what makes the
// whole fresh: the HCL report itself dates from boot. Only then is the
// level 3, from hardware "sev-snp" with binding "azure-hcl".
func verifyTPMAzureHCL(in tpmInput, ak crypto.PublicKey, p *Policy, c *Claims, s *steps) error {
	return s.run("azure-hcl", func() (string, error) {
		sp, err := imageSNPPolicy("an Azure HCL report", p, c)
		if err != nil {
			return "", err
		}
		hcl := in.ev.TPM.AzureHCL
		r, claims, err := VerifyAzureHCLReport(hcl.Report, hcl.VCEK, sp)
		if err != nil {
			return "", err
		}
		if rsaAK, _ := ak.(*rsa.PublicKey); !r.AKMatches(rsaAK) {
			return "", fmt.Errorf("%w: runtime data names HCLAkPub sha256:%s, the quote is signed by AK sha256:%s", ErrAKNotBound, rsaKeyDigest(r.AK), c.AKDigest[:16])
		}
		return snpLevel3(c, claims, SNPBindingAzureHCL, "SEV-SNP report binds the HCL runtime data, which names this quote's AK"), nil
	})
}

// verifyTPMTDX judges the TDX quote riding in TPM evidence (BuildEnv
// L3.hw-quote; a vTPM in a TDX confidential VM, Compute Engine's shape):
// signature, PCK chain, debug, quoting enclave and TCB as for TDX
// evidence, REPORTDATA bound to the challenge, both keys and the AK that
// signed the quote, and MRTD among the matched image's tdxMrtds. Only
// with a TCB Intel rates UpToDate is the level 3, from hardware "tdx";
// without collateral the TPM's level 2 stands.
func verifyTPMTDX(in tpmInput, p *Policy, c *Claims, s *steps) error {
	if in.ch == nil {
		s.skip("tdx quote", "no challenge given: the quote's REPORTDATA cannot be checked, so it earns nothing")
		return nil
	}
	if len(c.Image.TDXMRTDs) == 0 {
		return s.fail("tdx quote", fmt.Errorf("%w: the evidence carries a TDX quote and image %s lists no tdxMrtds", ErrReferenceMismatch, c.ImageID))
	}
	quote, err := ParseTDXQuote(in.ev.TPM.TDX.Quote)
	if err != nil {
		return s.fail("tdx quote", err)
	}
	rd := in.ch.TDXVTPMReportData(in.ev.EnvKey, in.ev.HPKEPublicKey, c.AK)
	upToDate, err := verifyTDXPlatform(tdxVTPMSteps, quote, rd[:], "REPORTDATA binds this quote's AK and keys", in.ev.TPM.TDX.Collateral, p, c, s)
	if err != nil {
		return err
	}
	if err := s.run("tdx firmware", func() (string, error) {
		for _, m := range c.Image.TDXMRTDs {
			if bytes.Equal(m, c.MRTD) {
				return fmt.Sprintf("MRTD %x… listed by image %s", []byte(c.MRTD[:8]), c.ImageID), nil
			}
		}
		return "", fmt.Errorf("%w: TDX MRTD %x is not among image %s's tdxMrtds", ErrReferenceMismatch, []byte(c.MRTD), c.ImageID)
	}); err != nil {
		return err
	}
	if upToDate {
		c.Level, c.Hardware = 3, HardwareTDX
	}
	return nil
}

// rsaKeyDigest is KeyDigest's first 16 hex digits for an RSA key.
func rsaKeyDigest(k *rsa.PublicKey) string {
	spki, err := x509.MarshalPKIXPublicKey(k)
	if err != nil {
		return "(unencodable)"
	}
	return KeyDigest(spki)[:16]
}

func onOff(b bool) string {
	if b {
		return "enabled"
	}
	return "disabled"
}

// restrictedAK reads the AK from the attestation without trusting it, for
// inspection: the attributes are still checked.
func restrictedAK(att *pb.Attestation) (crypto.PublicKey, []byte, error) {
	pubArea, err := tpm2.DecodePublic(att.GetAkPub())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: AK public area: %v", ErrMalformedEvidence, err)
	}
	if err := checkAKAttributes(pubArea); err != nil {
		return nil, nil, err
	}
	pub, err := pubArea.Key()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: AK public key: %v", ErrMalformedEvidence, err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: AK public key encoding: %v", ErrMalformedEvidence, err)
	}
	return pub, spki, nil
}

func checkAKAttributes(pubArea tpm2.Public) error {
	want := tpm2.FlagRestricted | tpm2.FlagSign | tpm2.FlagFixedTPM | tpm2.FlagFixedParent | tpm2.FlagSensitiveDataOrigin
	if pubArea.Attributes&want != want || pubArea.Attributes&tpm2.FlagDecrypt != 0 {
		return fmt.Errorf("%w: AK attributes %#x are not those of a restricted signing key", ErrUntrustedAK, uint32(pubArea.Attributes))
	}
	return nil
}

// trustedAK returns the attestation key if the policy trusts it. The AK must
// be a restricted signing key: only then does the TPM refuse to sign data
// that imitates a quote, which is what makes a quote mean anything.
func trustedAK(att *pb.Attestation, p *Policy) (crypto.PublicKey, []byte, error) {
	pub, spki, err := restrictedAK(att)
	if err != nil {
		return nil, nil, err
	}
	for _, t := range p.TrustedAKs {
		tb, err := x509.MarshalPKIXPublicKey(t)
		if err == nil && bytes.Equal(tb, spki) {
			return pub, spki, nil
		}
	}
	if len(att.GetAkCert()) == 0 || len(p.TrustedAKRoots) == 0 {
		return nil, nil, fmt.Errorf("%w: AK %s is not a trusted key and has no certificate under a trusted root", ErrUntrustedAK, KeyDigest(spki)[:16])
	}
	cert, err := x509.ParseCertificate(att.GetAkCert())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: AK certificate: %v", ErrMalformedEvidence, err)
	}
	certSPKI, err := x509.MarshalPKIXPublicKey(cert.PublicKey)
	if err != nil || !bytes.Equal(certSPKI, spki) {
		return nil, nil, fmt.Errorf("%w: AK certificate is for another key than the AK public area", ErrUntrustedAK)
	}
	inter := x509.NewCertPool()
	for _, ic := range p.TrustedAKIntermediates {
		inter.AddCert(ic)
	}
	for _, raw := range att.GetIntermediateCerts() {
		ic, err := x509.ParseCertificate(raw)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: AK intermediate certificate: %v", ErrMalformedEvidence, err)
		}
		inter.AddCert(ic)
	}
	roots := x509.NewCertPool()
	for _, r := range p.TrustedAKRoots {
		roots.AddCert(r)
	}
	// TPM AK certificates mark the SAN extension critical with a form Go
	// does not parse (see go-tpm-tools server.VerifyAKCert); accept only that.
	cert.UnhandledCriticalExtensions = slices.DeleteFunc(slices.Clone(cert.UnhandledCriticalExtensions), func(oid asn1.ObjectIdentifier) bool {
		return oid.Equal(asn1.ObjectIdentifier{2, 5, 29, 17})
	})
	if _, err := cert.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: inter,
		CurrentTime:   p.now(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return nil, nil, fmt.Errorf("%w: AK certificate: %v", ErrUntrustedAK, err)
	}
	return pub, spki, nil
}

func sha256Quote(att *pb.Attestation) (*tpmpb.Quote, error) {
	for _, q := range att.GetQuotes() {
		if q.GetPcrs().GetHash() == tpmpb.HashAlgo_SHA256 {
			return q, nil
		}
	}
	return nil, fmt.Errorf("%w: no SHA-256 quote", ErrMalformedEvidence)
}

// verifyBootLog replays the TCG event log against the quoted SHA-256 PCRs and
// extracts the boot state, with go-eventlog (the same code go-tpm-tools'
// server.VerifyAttestation runs), minus its acceptance of an empty log.
func verifyBootLog(raw []byte, pcrs map[uint32][]byte, p *Policy, c *Claims) error {
	if len(raw) == 0 {
		return ErrEventLogEmpty
	}
	key := bootCacheKey(raw, pcrs, p.DirectKernelBoot)
	r, ok := bootLogCache.get(key)
	if !ok {
		var err error
		if r, err = replayBootLog(raw, pcrs, p.DirectKernelBoot); err != nil {
			return err
		}
		bootLogCache.put(key, r)
	}
	c.BootEvents, c.SecureBoot, c.EFIApps = r.events, r.secureBoot, r.efiApps
	return nil
}

func replayBootLog(raw []byte, pcrs map[uint32][]byte, directKernelBoot bool) (bootResult, error) {
	var r bootResult
	if err := checkEventLogFraming(raw); err != nil {
		return r, err
	}
	mrs := make([]register.MR, 0, len(pcrs))
	for i, d := range pcrs {
		mrs = append(mrs, register.PCR{Index: int(i), Digest: d, DigestAlg: crypto.SHA256})
	}
	events, err := tcg.ParseAndReplay(raw, mrs, tcg.ParseOpts{})
	if err != nil {
		return r, fmt.Errorf("%w: %v", ErrEventLogReplay, err)
	}
	if len(events) == 0 {
		return r, ErrEventLogEmpty
	}
	r.events = make([]BootEvent, 0, len(events))
	for i, e := range events {
		// go-eventlog panics on event types it does not know, and the type
		// field is not measured: refuse them here.
		name, known := e.Type.KnownName()
		if !known {
			return r, fmt.Errorf("%w: event %d has unknown type %#x", ErrEventLogReplay, i, uint32(e.Type))
		}
		if e.Index == LifecyclePCR {
			return r, fmt.Errorf("%w: firmware event %d extends the lifecycle PCR %d", ErrEventLogReplay, i, LifecyclePCR)
		}
		r.events = append(r.events, BootEvent{PCR: uint32(e.Index), Type: name, Digest: e.Digest})
	}
	fs, err := extract.FirmwareLogState(events, crypto.SHA256, extract.TPMRegisterConfig, extract.Opts{
		Loader:                        extract.UnsupportedLoader,
		AllowEFIAppBeforeCallingEvent: directKernelBoot,
	})
	if err != nil {
		return r, fmt.Errorf("%w: %v", ErrEventLogReplay, err)
	}
	r.secureBoot = fs.GetSecureBoot().GetEnabled()
	for _, app := range fs.GetEfi().GetApps() {
		r.efiApps = append(r.efiApps, app.GetDigest())
	}
	return r, nil
}

// nullHierarchyQualifiedName is the qualified-name digest of a primary
// object in the null hierarchy: H(TPM_RH_NULL || name), name being
// nameAlg || H(public area) (TPM 2.0 Part 1, 16.6).
func nullHierarchyQualifiedName(name *tpm2.HashValue) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(tpm2.HandleNull))
	b = binary.BigEndian.AppendUint16(b, uint16(name.Alg))
	d := sha256.Sum256(append(b, name.Value...))
	return d[:]
}

// verifyCertify checks TPM2_Certify: the AK vouches that the environment key
// lives in this TPM with the required attributes, for this challenge.
func verifyCertify(ev *Evidence, ak crypto.PublicKey, nonce []byte) error {
	t := ev.TPM
	sig, err := tpm2.DecodeSignature(bytes.NewBuffer(t.CertifySignature))
	if err != nil {
		return fmt.Errorf("%w: certify signature: %v", ErrKeyNotCertified, err)
	}
	// ECDSA by an ECC AK, RSASSA or RSA-PSS by an RSA AK, over SHA-256.
	alg, err := verifyAKSignature(ak, sig, t.CertifyInfo)
	if err != nil {
		return fmt.Errorf("%w: certify signature: %v", ErrKeyNotCertified, err)
	}
	if alg != tpm2.AlgSHA256 {
		return fmt.Errorf("%w: certify signature digest is %v, want SHA-256", ErrKeyNotCertified, alg)
	}
	ad, err := tpm2.DecodeAttestationData(t.CertifyInfo)
	if err != nil {
		return fmt.Errorf("%w: certify info: %v", ErrKeyNotCertified, err)
	}
	if ad.Type != tpm2.TagAttestCertify || ad.AttestedCertifyInfo == nil {
		return fmt.Errorf("%w: attestation is not a certification", ErrKeyNotCertified)
	}
	if subtle.ConstantTimeCompare(ad.ExtraData, nonce) != 1 {
		return fmt.Errorf("%w: certification", ErrNonceMismatch)
	}
	pub, err := tpm2.DecodePublic(t.EnvKeyPublic)
	if err != nil {
		return fmt.Errorf("%w: environment key public area: %v", ErrKeyNotCertified, err)
	}
	// The key's name, nameAlg || H(public area), is the one certified.
	name, err := pub.Name()
	if err != nil {
		return fmt.Errorf("%w: environment key name: %v", ErrKeyNotCertified, err)
	}
	if certified := ad.AttestedCertifyInfo.Name.Digest; certified == nil || !bytes.Equal(certified.Value, name.Digest.Value) {
		return fmt.Errorf("%w: certified name is another key", ErrKeyNotCertified)
	}
	if pub.Attributes != EnvKeyAttributes {
		return fmt.Errorf("%w: attributes %#x, want %#x (sign, fixedTPM, fixedParent, sensitiveDataOrigin, userWithAuth)",
			ErrKeyNotCertified, uint32(pub.Attributes), uint32(EnvKeyAttributes))
	}
	if pub.NameAlg != tpm2.AlgSHA256 || len(pub.AuthPolicy) != 0 {
		return fmt.Errorf("%w: key must use SHA-256 names and no auth policy", ErrKeyNotCertified)
	}
	qn := ad.AttestedCertifyInfo.QualifiedName.Digest
	if qn == nil || qn.Alg != tpm2.AlgSHA256 || !bytes.Equal(qn.Value, nullHierarchyQualifiedName(name.Digest)) {
		return fmt.Errorf("%w: key is not a primary key of the null hierarchy (it would survive reboot)", ErrKeyNotCertified)
	}
	key, err := pub.Key()
	if err != nil {
		return fmt.Errorf("%w: environment key: %v", ErrKeyNotCertified, err)
	}
	ec, ok := key.(*ecdsa.PublicKey)
	if !ok || ec.Curve != elliptic.P256() {
		return fmt.Errorf("%w: environment key is not P-256", ErrKeyNotCertified)
	}
	spki, err := x509.MarshalPKIXPublicKey(ec)
	if err != nil || !bytes.Equal(spki, ev.EnvKey) {
		return fmt.Errorf("%w: the certified key is not the evidence's environment key", ErrKeyNotCertified)
	}
	return nil
}

// matchTPMImage finds the reference image the quoted PCRs and replayed boot
// events satisfy.
func matchTPMImage(rv *ReferenceValues, c *Claims) (*Image, error) {
	return matchImage(rv, KindTPM, func(im *Image) string { return tpmImageMismatch(im, c) })
}

func tpmImageMismatch(im *Image, c *Claims) string {
	for _, i := range sortedPCRs(im.PCRs) {
		got, ok := c.PCRs[i]
		if !ok {
			return fmt.Sprintf("PCR %d not quoted", i)
		}
		if !bytes.Equal(got, im.PCRs[i]) {
			return fmt.Sprintf("PCR %d is %x, want %x", i, got, []byte(im.PCRs[i]))
		}
	}
	for _, want := range im.Events {
		found := false
		for _, e := range c.BootEvents {
			if e.PCR == want.PCR && bytes.Equal(e.Digest, want.Digest) {
				found = true
				break
			}
		}
		if !found {
			return fmt.Sprintf("no event %x on PCR %d (%s)", []byte(want.Digest), want.PCR, want.Description)
		}
	}
	if im.SecureBoot && !c.SecureBoot {
		return "Secure Boot is not enabled"
	}
	return ""
}
