package attest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"

	sevclient "github.com/google/go-sev-guest/client"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"google.golang.org/protobuf/proto"
)

// TPMOptions configure a TPM collector.
type TPMOptions struct {
	// EventLog returns the TCG event log. Nil reads it through go-tpm-tools
	// (securityfs on Linux: /sys/kernel/security/tpm0/binary_bios_measurements).
	EventLog func() ([]byte, error)
	// SoftwareTPM labels the evidence as coming from a simulator or swtpm.
	SoftwareTPM bool
	// AKTemplate, if set, is the attestation key's template: a primary key
	// of the endorsement hierarchy (e.g. client.AKTemplateRSA(), or an RSA
	// template with the RSA-PSS scheme). Nil: the platform's AK (see
	// OpenAK).
	AKTemplate *tpm2.Public
	// AKHandle, if set, is a persistent attestation key made by the
	// platform, loaded in place of a template: Azure's vTPM AK is
	// AzureAKHandle.
	AKHandle tpmutil.Handle
	// AKCertNVIndex, if set, is the NV index of the AK's certificate,
	// read at start (it must certify the AK) and sent with every quote:
	// Azure's is AzureAKCertNVIndex.
	AKCertNVIndex uint32
	// SNP, if set, is the SEV-SNP report interface of the confidential VM
	// this vTPM serves (SNPQuoteProvider): every Collect then adds a
	// report whose REPORT_DATA binds the challenge, both keys and the AK.
	SNP sevclient.QuoteProvider
	// SNPKDS fetches the VCEK from AMD's KDS when the SNP host supplies
	// none with its report (trust.DefaultHTTPSGetter()). Nil: such a host
	// fails collection.
	SNPKDS trust.HTTPSGetter
	// AzureVCEK, if set, makes this vTPM an Azure confidential VM's:
	// NewTPMCollector reads the HCL report (ReadAzureHCLReport), refuses
	// it unless its runtime data names the collector's AK, and every
	// Collect sends it with this VCEK (FetchAzureVCEK). Excludes SNP.
	AzureVCEK []byte
	// TDX, if set, quotes the TD this vTPM serves (TDXHardwareQuote on a
	// TDX confidential VM): every Collect then adds a TDX quote whose
	// REPORTDATA binds the challenge, both keys and the AK
	// (Challenge.TDXVTPMReportData). Excludes SNP and AzureVCEK.
	TDX func(reportData [64]byte) ([]byte, error)
}

// Azure trusted launch and confidential VMs: the vTPM's AK is persistent
// at AzureAKHandle, and its certificate, issued by Microsoft's vTPM CA
// ("Global Virtual TPM CA - 01"), is in NV at AzureAKCertNVIndex.
const (
	AzureAKHandle      = tpmutil.Handle(0x81000003)
	AzureAKCertNVIndex = 0x01C101D0
)

// TPMCollector collects evidence from a TPM 2.0 reached through rw
// (/dev/tpmrm0, the go-tpm-tools simulator, or a swtpm socket).
//
// The attestation key is the GCE AK when its template is provisioned in NV
// (with its certificate), otherwise the ECC AK derived from the endorsement
// hierarchy with go-tpm-tools' AK template. Both are primary keys recreated
// at each boot from the TPM's seed: nothing is persisted, and the AK public
// key is stable for a given TPM, which is what lets an admin enroll it.
type TPMCollector struct {
	bootState
	rw     io.ReadWriter
	opts   TPMOptions
	ak     *client.Key
	env    *client.Key
	signer crypto.Signer
	// ekCert is the EK certificate ActivationRequest read.
	ekCert []byte
	// akCert is the AK certificate read from TPMOptions.AKCertNVIndex.
	akCert []byte
	// azureHCL is the HCL report read for TPMOptions.AzureVCEK.
	azureHCL []byte
}

// NewTPMCollector opens the attestation key on rw.
func NewTPMCollector(rw io.ReadWriter, opts TPMOptions) (*TPMCollector, error) {
	if n := btoi(opts.SNP != nil) + btoi(opts.AzureVCEK != nil) + btoi(opts.TDX != nil); n > 1 {
		return nil, errors.New("TPM options: SNP, AzureVCEK and TDX each add a TEE report; give at most one")
	}
	var ak *client.Key
	var err error
	if opts.AKHandle != 0 {
		ak, err = client.LoadCachedKey(rw, opts.AKHandle, client.NullSession{})
		if err != nil {
			err = fmt.Errorf("loading the attestation key at %#x: %w", uint32(opts.AKHandle), err)
		}
	} else if opts.AKTemplate != nil {
		ak, err = client.NewKey(rw, tpm2.HandleEndorsement, *opts.AKTemplate)
		if err != nil {
			err = fmt.Errorf("creating the attestation key: %w", err)
		}
	} else {
		ak, err = OpenAK(rw)
	}
	if err != nil {
		return nil, err
	}
	t := &TPMCollector{rw: rw, opts: opts, ak: ak, bootState: bootState{log: newLifecycleLog(tpmLayout)}}
	if opts.AKCertNVIndex != 0 {
		if t.akCert, err = readAKCertificate(rw, opts.AKCertNVIndex, ak.PublicKey()); err != nil {
			ak.Close()
			return nil, err
		}
	}
	if opts.AzureVCEK != nil {
		if t.azureHCL, err = readAzureHCL(rw, ak.PublicKey()); err != nil {
			ak.Close()
			return nil, err
		}
	}
	return t, nil
}

// readAzureHCL reads the HCL report and checks that its runtime data names
// ak: one naming another key would only be refused at the gate
// (ErrAKNotBound), with a less helpful error.
func readAzureHCL(rw io.ReadWriter, ak crypto.PublicKey) ([]byte, error) {
	raw, r, err := ReadAzureHCLReport(rw)
	if err != nil {
		return nil, err
	}
	if rsaAK, _ := ak.(*rsa.PublicKey); !r.AKMatches(rsaAK) {
		return nil, fmt.Errorf("%w: the collector's AK is not the HCLAkPub of the runtime data (use Azure's AK, persistent at %#x)", ErrAKNotBound, uint32(AzureAKHandle))
	}
	return raw, nil
}

// readAKCertificate reads the AK certificate at an NV index and checks
// that it certifies ak (a certificate for another key would only be
// refused at the gate, with a less helpful error).
func readAKCertificate(rw io.ReadWriter, index uint32, ak crypto.PublicKey) ([]byte, error) {
	der, err := ReadEKCertificate(rw, index)
	if err != nil {
		return nil, fmt.Errorf("AK certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: AK certificate at NV index %#x: %v", ErrMalformedEvidence, index, err)
	}
	if k, ok := cert.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(ak) {
		return nil, fmt.Errorf("%w: the AK certificate at NV index %#x is for another key", ErrUntrustedAK, index)
	}
	return der, nil
}

// OpenAK loads the TPM's attestation key: the GCE AK if provisioned, else the
// standard ECC AK of the endorsement hierarchy. The caller closes it.
func OpenAK(rw io.ReadWriter) (*client.Key, error) {
	if ak, err := client.GceAttestationKeyECC(rw); err == nil {
		return ak, nil
	}
	ak, err := client.NewKey(rw, tpm2.HandleEndorsement, client.AKTemplateECC())
	if err != nil {
		return nil, fmt.Errorf("creating the attestation key: %w", err)
	}
	return ak, nil
}

// AKPublic returns the SubjectPublicKeyInfo of a TPM's attestation key: what
// an admin enrolls in the gate's trusted AKs for a machine without an AK
// certificate.
func AKPublic(rw io.ReadWriter) ([]byte, error) {
	ak, err := OpenAK(rw)
	if err != nil {
		return nil, err
	}
	defer ak.Close()
	return x509.MarshalPKIXPublicKey(ak.PublicKey())
}

// Kind implements Collector.
func (t *TPMCollector) Kind() Kind { return KindTPM }

// Extend implements Collector.
func (t *TPMCollector) Extend(e Event) error {
	return t.extend(e, func(h crypto.Hash, pcr int, digest []byte) error {
		alg, err := tpm2.HashToAlgorithm(h)
		if err != nil {
			return err
		}
		return tpm2.PCRExtend(t.rw, tpmutil.Handle(pcr), alg, digest, "")
	})
}

// GenerateKeys implements Collector: the environment key is a primary ECDSA
// P-256 key in the null hierarchy, with fixedTPM|fixedParent|
// sensitiveDataOrigin: generated inside the TPM, never exportable, and gone
// at the next TPM reset.
//
// A primary key is derived from the hierarchy's seed and its template, so
// anyone who can send TPM commands in the same boot could re-create a key
// made from a fixed template, also after Close flushed it. The template's
// unique field is therefore 64 random bytes, kept only in this function's
// memory and zeroed once the key exists: after Close nobody, the agent
// included, can make this key again (BuildEnv L2.agent-quote: the
// environment key is unique to this environment).
func (t *TPMCollector) GenerateKeys() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.env != nil || t.closed {
		return errors.New("environment keys already generated for this boot")
	}
	tmpl, err := envKeyTemplateWithUnique()
	if err != nil {
		return err
	}
	env, err := client.NewKey(t.rw, tpm2.HandleNull, tmpl)
	clear(tmpl.ECCParameters.Point.XRaw)
	clear(tmpl.ECCParameters.Point.YRaw)
	if err != nil {
		return fmt.Errorf("creating the environment key: %w", err)
	}
	signer, err := env.GetSigner()
	if err != nil {
		env.Close()
		return err
	}
	spki, err := x509.MarshalPKIXPublicKey(env.PublicKey())
	if err != nil {
		env.Close()
		return err
	}
	hk, err := NewHPKEKey()
	if err != nil {
		env.Close()
		return err
	}
	t.env, t.spki, t.hpke = env, spki, hk
	t.signer = &lockedSigner{t: t, s: signer}
	return nil
}

// envKeyTemplateWithUnique is EnvKeyTemplate with a random unique field
// (TPM 2.0 Part 1, 27.2.6: the unique field of a primary's template is
// entropy for its derivation; for ECC, up to the curve size per coordinate).
func envKeyTemplateWithUnique() (tpm2.Public, error) {
	tmpl := EnvKeyTemplate()
	unique := make([]byte, 64)
	if _, err := rand.Read(unique); err != nil {
		return tpm2.Public{}, fmt.Errorf("environment key entropy: %w", err)
	}
	tmpl.ECCParameters.Point = tpm2.ECPoint{XRaw: unique[:32], YRaw: unique[32:]}
	return tmpl, nil
}

// Signer implements Collector. Signing takes the collector's lock: one TPM
// command stream at a time.
func (t *TPMCollector) Signer() crypto.Signer { return t.signer }

// Collect implements Collector: a quote over all PCR banks and TPM2_Certify
// of the environment key, both with the challenge bound to both keys.
func (t *TPMCollector) Collect(ch Challenge) (*Evidence, error) {
	if err := t.lockForCollect(ch); err != nil {
		return nil, err
	}
	defer t.mu.Unlock()
	hpkePub := t.hpke.PublicKey()
	nonce := ch.TPMNonce(t.spki, hpkePub)
	var eventLog []byte
	var err error
	if t.opts.EventLog != nil {
		eventLog, err = t.opts.EventLog()
	} else {
		eventLog, err = client.GetEventLog(t.rw)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the TCG event log: %w", err)
	}
	if eventLog == nil {
		eventLog = []byte{} // nil would make go-tpm-tools read securityfs itself
	}
	att, err := attestWith(t.rw, t.ak, nonce, eventLog)
	if err != nil {
		return nil, fmt.Errorf("quoting: %w", err)
	}
	if t.akCert != nil {
		att.AkCert = t.akCert
	}
	attBytes, err := proto.Marshal(att)
	if err != nil {
		return nil, err
	}
	scheme, err := akSigScheme(t.ak.PublicArea())
	if err != nil {
		return nil, err
	}
	info, sig, err := tpm2.CertifyEx(t.rw, "", "", t.env.Handle(), t.ak.Handle(), nonce, scheme)
	if err != nil {
		return nil, fmt.Errorf("certifying the environment key: %w", err)
	}
	pubArea, err := t.env.PublicArea().Encode()
	if err != nil {
		return nil, err
	}
	cel, err := t.log.encode()
	if err != nil {
		return nil, err
	}
	akSPKI, err := x509.MarshalPKIXPublicKey(t.ak.PublicKey())
	if err != nil {
		return nil, err
	}
	var snp *SNPEvidence
	if t.opts.SNP != nil {
		report, vcek, err := SNPReportFrom(t.opts.SNP, ch.SNPReportData(t.spki, hpkePub, akSPKI), t.opts.SNPKDS)
		if err != nil {
			return nil, err
		}
		snp = &SNPEvidence{Report: report, VCEK: vcek}
	}
	var tdx *TDXVTPMEvidence
	if t.opts.TDX != nil {
		quote, err := t.opts.TDX(ch.TDXVTPMReportData(t.spki, hpkePub, akSPKI))
		if err != nil {
			return nil, fmt.Errorf("TDX quote: %w", err)
		}
		tdx = &TDXVTPMEvidence{Quote: quote}
	}
	var hcl *AzureHCLEvidence
	if t.azureHCL != nil {
		hcl = &AzureHCLEvidence{Report: t.azureHCL, VCEK: t.opts.AzureVCEK}
	}
	return &Evidence{
		Format:            EvidenceFormat,
		Kind:              KindTPM,
		EnvKey:            t.spki,
		HPKEPublicKey:     hpkePub,
		CEL:               cel,
		SoftwareTPMUnsafe: t.opts.SoftwareTPM,
		TPM: &TPMEvidence{
			Attestation:      attBytes,
			EnvKeyPublic:     pubArea,
			CertifyInfo:      info,
			CertifySignature: sig,
			SNP:              snp,
			AzureHCL:         hcl,
			TDX:              tdx,
		},
	}, nil
}

// Close implements Collector: flushes the environment key and the AK from the
// TPM and drops the HPKE key. Idempotent. The environment key is then
// destroyed, not only unloaded: its template's random unique field was
// discarded when it was created (see GenerateKeys), so no TPM command can
// derive it again.
func (t *TPMCollector) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	if t.env != nil {
		t.env.Close()
	}
	if t.hpke != nil {
		t.hpke.Destroy()
	}
	t.ak.Close()
	return nil
}

// lockedSigner serializes signing with the collector's other TPM commands
// and refuses to sign once the collector is closed.
type lockedSigner struct {
	t *TPMCollector
	s crypto.Signer
}

func (l *lockedSigner) Public() crypto.PublicKey { return l.s.Public() }

func (l *lockedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	l.t.mu.Lock()
	defer l.t.mu.Unlock()
	if l.t.closed {
		return nil, ErrKeyDestroyed
	}
	return l.s.Sign(r, digest, opts)
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
