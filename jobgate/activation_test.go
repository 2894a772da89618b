package jobgate_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/ekca"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
	"github.com/google/go-tpm-tools/client"
	"github.com/google/go-tpm/legacy/tpm2"
)

// ekHarness is a gate that trusts no AK, only the EK CA ca, in front of a
// simulated machine whose TPM ca manufactured (an EK certificate in NV).
type ekHarness struct {
	*harness
	ca   *ekca.CA
	cert *x509.Certificate // the machine's EK certificate
}

func newEKHarness(t *testing.T) *ekHarness {
	t.Helper()
	h := newHarness(t)
	ca, err := ekca.New("fleet EK CA")
	if err != nil {
		t.Fatal(err)
	}
	der, err := ekca.Provision(h.machine.TPM, ca, ekca.RSA)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	// Never enrolled: the policy trusts no AK, only the EK CA.
	p := *h.machine.Policy
	p.TrustedAKs, p.TrustedEKs = nil, &attest.EKTrust{Roots: []*x509.Certificate{ca.Cert}}
	h.machine.Policy = &p
	h.start()
	return &ekHarness{harness: h, ca: ca, cert: cert}
}

// activation is one agent's challenge with activation, answered by its TPM.
type activation struct {
	req    *gateapi.Activation
	nonce  []byte
	cred   *gateapi.Credential
	secret []byte
}

func (h *ekHarness) activate(ctx context.Context, c *attest.TPMCollector) *activation {
	h.t.Helper()
	ar, err := c.ActivationRequest()
	if err != nil || ar == nil {
		h.t.Fatalf("activation request: %+v, %v", ar, err)
	}
	a := &activation{req: &gateapi.Activation{EKCertificate: ar.EKCertificate, AKPublic: ar.AKPublic}}
	ch, err := h.client.ChallengeActivation(ctx, a.req)
	if err != nil {
		h.t.Fatal(err)
	}
	if ch.Credential == nil {
		h.t.Fatal("no credential in the challenge answer")
	}
	a.nonce, a.cred = ch.Nonce, ch.Credential
	if a.secret, err = c.ActivateCredential(&attest.Credential{IDObject: ch.Credential.IDObject, EncryptedSecret: ch.Credential.EncryptedSecret}); err != nil {
		h.t.Fatal(err)
	}
	return a
}

// admitWith collects evidence with c over quoteNonce and presents it.
func (h *ekHarness) admitWith(ctx context.Context, c *attest.TPMCollector, a *activation, quoteNonce, secret []byte) error {
	h.t.Helper()
	ev, err := c.Collect(attest.AdmissionChallenge(quoteNonce))
	if err != nil {
		h.t.Fatal(err)
	}
	b, _ := ev.Encode()
	_, err = h.client.Admit(ctx, &gateapi.AdmitRequest{Nonce: a.nonce, Evidence: b, Activation: a.req, ActivationSecret: secret})
	return err
}

func (h *ekHarness) lastAudit() string {
	r := h.auditReasons()
	return r[len(r)-1]
}

// TestEKActivationAdmits: a TPM never enrolled, whose EK certificate the
// gate's EK CA signed, is admitted through credential activation in the
// challenge's round trip; its AK is then trusted for that admission only.
func TestEKActivationAdmits(t *testing.T) {
	h := newEKHarness(t)
	ctx := context.Background()
	c := h.machine.Collector
	// Without activation the same machine has no trusted AK.
	if _, err := h.admit(ctx); rejectedCode(err) != "activation_required" {
		t.Fatalf("without activation: %v, want activation_required", err)
	}
	a := h.activate(ctx, c)
	if err := h.admitWith(ctx, c, a, gateapi.AdmissionNonce(a.nonce, a.secret), a.secret); err != nil {
		t.Fatalf("activated TPM refused: %v", err)
	}
	var detail string
	h.store.AuditLog(ctx, func(r jobgate.AuditRecord) error {
		if r.Action == "admit" && r.Result == "accepted" {
			detail = r.Detail
		}
		return nil
	})
	if !strings.Contains(detail, "EK ") || !strings.Contains(detail, "fleet EK CA") {
		t.Fatalf("admission audit does not name the EK: %q", detail)
	}
}

// TestEKActivationRefusals: each case breaks one thing of a genuine
// activation and asserts the reason code, at the gate and in its audit log.
func TestEKActivationRefusals(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		// edit breaks the harness (trust, clock) before the challenge.
		edit func(t *testing.T, h *ekHarness)
		// admit presents the activation; nil presents it unchanged.
		admit func(t *testing.T, h *ekHarness, a *activation) error
		want  string
	}{
		{name: "EK certificate chains to no configured root", edit: func(t *testing.T, h *ekHarness) {
			other, err := ekca.New("another EK CA")
			if err != nil {
				t.Fatal(err)
			}
			h.machine.Policy.TrustedEKs = &attest.EKTrust{Roots: []*x509.Certificate{other.Cert}}
			h.start()
		}, want: "ek_untrusted"},
		{name: "no EK root configured", edit: func(t *testing.T, h *ekHarness) {
			h.machine.Policy.TrustedEKs = nil
			h.machine.Policy.TrustedAKs = nil
			h.cfg.Policy.AllowedLabels = nil
			h.machine.Policy.TrustedAKRoots = []*x509.Certificate{h.ca.Cert} // some root, so the gate starts
			h.start()
		}, want: "ek_untrusted"},
		{name: "EK certificate expired", edit: func(t *testing.T, h *ekHarness) {
			h.clock.Add(ekca.EKCertValidity + time.Hour)
		}, want: "ek_expired"},
		{name: "EK certificate revoked", edit: func(t *testing.T, h *ekHarness) {
			h.machine.Policy.TrustedEKs.CRLs = []*x509.RevocationList{crl(t, h.ca, time.Now().Add(time.Hour), h.cert)}
			h.start()
		}, want: "ek_revoked"},
		{name: "EK CRL out of date", edit: func(t *testing.T, h *ekHarness) {
			h.machine.Policy.TrustedEKs.CRLs = []*x509.RevocationList{crl(t, h.ca, time.Now().Add(-time.Minute))}
			h.start()
		}, want: "ek_crl_expired"},
		{name: "activation answered by another TPM", admit: func(t *testing.T, h *ekHarness, a *activation) error {
			// What a TPM without the EK can offer: a guess.
			guess := make([]byte, len(a.secret))
			rand.Read(guess)
			return h.admitWith(ctx, h.machine.Collector, a, gateapi.AdmissionNonce(a.nonce, guess), guess)
		}, want: "ek_activation_failed"},
		{name: "no activation answer", admit: func(t *testing.T, h *ekHarness, a *activation) error {
			return h.admitWith(ctx, h.machine.Collector, a, a.nonce, nil)
		}, want: "ek_activation_failed"},
		{name: "evidence signed by another AK than the activated one", admit: func(t *testing.T, h *ekHarness, a *activation) error {
			// The simulator's object slots hold one collector at a time.
			h.machine.Collector.Close()
			tmpl := client.AKTemplateRSA()
			other, err := attest.NewTPMCollector(h.machine.TPM, attest.TPMOptions{
				EventLog: func() ([]byte, error) { return attesttest.BootLog(), nil }, SoftwareTPM: true, AKTemplate: &tmpl})
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if err := other.GenerateKeys(); err != nil {
				t.Fatal(err)
			}
			return h.admitWith(ctx, other, a, gateapi.AdmissionNonce(a.nonce, a.secret), a.secret)
		}, want: "ak_name_mismatch"},
		{name: "quote over the nonce without the activation secret", admit: func(t *testing.T, h *ekHarness, a *activation) error {
			return h.admitWith(ctx, h.machine.Collector, a, a.nonce, a.secret)
		}, want: "nonce_mismatch"},
		{name: "activation secret without an activation request", admit: func(t *testing.T, h *ekHarness, a *activation) error {
			a.req = nil
			return h.admitWith(ctx, h.machine.Collector, a, gateapi.AdmissionNonce(a.nonce, a.secret), a.secret)
		}, want: "malformed_request"},
		{name: "activation request with another EK certificate", admit: func(t *testing.T, h *ekHarness, a *activation) error {
			// The genuine answer, presented for another TPM's certificate
			// (same CA): the secret was derived for this EK only.
			k, _, err := fakegithub.AppKey() // some other RSA 2048 key
			if err != nil {
				t.Fatal(err)
			}
			otherEK, err := h.ca.Issue(&k.PublicKey, 1, time.Now().Add(time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			a.req = &gateapi.Activation{EKCertificate: otherEK, AKPublic: a.req.AKPublic}
			return h.admitWith(ctx, h.machine.Collector, a, gateapi.AdmissionNonce(a.nonce, a.secret), a.secret)
		}, want: "ek_activation_failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newEKHarness(t)
			if tc.edit != nil {
				tc.edit(t, h)
			}
			a := h.activate(ctx, h.machine.Collector)
			var err error
			if tc.admit != nil {
				err = tc.admit(t, h, a)
			} else {
				err = h.admitWith(ctx, h.machine.Collector, a, gateapi.AdmissionNonce(a.nonce, a.secret), a.secret)
			}
			if got := rejectedCode(err); got != tc.want {
				t.Fatalf("got %v (code %q), want %q", err, got, tc.want)
			}
			if got, want := h.lastAudit(), "admit:rejected:"+tc.want; got != want {
				t.Fatalf("audit %q, want %q", got, want)
			}
		})
	}
}

// TestEKActivationChallengeRefusals: an activation request that cannot be
// given a credential is refused at the challenge, and audited.
func TestEKActivationChallengeRefusals(t *testing.T) {
	h := newEKHarness(t)
	ctx := context.Background()
	ar, err := h.machine.Collector.ActivationRequest()
	if err != nil {
		t.Fatal(err)
	}
	notRestricted := editArea(t, ar.AKPublic, func(p *tpm2.Public) { p.Attributes &^= tpm2.FlagRestricted })
	for _, tc := range []struct {
		name string
		req  *gateapi.Activation
		want string
	}{
		{"AK not restricted", &gateapi.Activation{EKCertificate: ar.EKCertificate, AKPublic: notRestricted}, "ak_attributes"},
		{"no AK", &gateapi.Activation{EKCertificate: ar.EKCertificate}, "evidence_malformed"},
		{"no EK certificate", &gateapi.Activation{AKPublic: ar.AKPublic}, "evidence_malformed"},
		{"EK certificate oversized", &gateapi.Activation{EKCertificate: make([]byte, attest.MaxEKCertificateSize+1), AKPublic: ar.AKPublic}, "evidence_too_large"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.client.ChallengeActivation(ctx, tc.req)
			if got := rejectedCode(err); got != tc.want {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
			if got, want := h.lastAudit(), "challenge:rejected:"+tc.want; got != want {
				t.Fatalf("audit %q, want %q", got, want)
			}
		})
	}
}

func crl(t *testing.T, ca *ekca.CA, next time.Time, revoked ...*x509.Certificate) *x509.RevocationList {
	t.Helper()
	var serials []*big.Int
	for _, c := range revoked {
		serials = append(serials, c.SerialNumber)
	}
	der, err := ca.CRL(next, serials...)
	if err != nil {
		t.Fatal(err)
	}
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func editArea(t *testing.T, area []byte, edit func(*tpm2.Public)) []byte {
	t.Helper()
	p, err := tpm2.DecodePublic(area)
	if err != nil {
		t.Fatal(err)
	}
	edit(&p)
	b, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
