// Package gateapi is the wire protocol between an attested-runner agent and
// the gate (jobgate): request and response types of the versioned HTTP API,
// and a client with bounded retries. It is small on purpose: the agent
// imports it without the gate's store or GitHub client.
package gateapi

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// Paths of the gate API.
const (
	PathChallenge  = "/v1/challenge"
	PathAdmit      = "/v1/admit"
	PathDeregister = "/v1/deregister"
	PathRoots      = "/v1/roots"
)

// ChallengeRequest is the body of a challenge request: empty, or an EK
// activation request of a TPM whose AK the gate does not know yet.
type ChallengeRequest struct {
	Activation *Activation `json:"activation,omitempty"`
}

// Activation names a TPM by its endorsement key (EK) certificate and the
// attestation key (AK) it wants trusted through credential activation.
type Activation struct {
	// EKCertificate is the DER EK certificate from the TPM's NV (TCG EK
	// Credential Profile indices).
	EKCertificate []byte `json:"ekCertificate"`
	// AKPublic is the AK's public area (TPMT_PUBLIC).
	AKPublic []byte `json:"akPublic"`
}

// ChallengeResponse carries a single-use nonce, and for an activation
// request a credential only that TPM can open for that AK.
type ChallengeResponse struct {
	Nonce     []byte    `json:"nonce"`
	ExpiresAt time.Time `json:"expiresAt"`
	// Credential, for an activation request, wraps the activation secret
	// under the EK for the AK's name (TPM2_MakeCredential's output, both
	// parts size-prefixed). The agent opens it with TPM2_ActivateCredential
	// and answers with AdmissionNonce(Nonce, secret) as its quote's nonce.
	Credential *Credential `json:"credential,omitempty"`
}

// Credential is TPM2_MakeCredential's output (TPM2B_ID_OBJECT,
// TPM2B_ENCRYPTED_SECRET).
type Credential struct {
	IDObject        []byte `json:"idObject"`
	EncryptedSecret []byte `json:"encryptedSecret"`
}

// AdmissionNonce is the nonce an agent's admission evidence answers: the
// gate's nonce, followed by the activation secret when the challenge came
// with a credential. A quote over it proves that the AK signing it was in
// the TPM that opened the credential, in the same round trip.
func AdmissionNonce(nonce, activationSecret []byte) []byte {
	if len(activationSecret) == 0 {
		return nonce
	}
	return append(append([]byte(nil), nonce...), activationSecret...)
}

// AdmitRequest asks the gate to admit an environment.
type AdmitRequest struct {
	Nonce []byte `json:"nonce"`
	// Evidence is an attest.Evidence document, embedded as JSON.
	Evidence json.RawMessage `json:"evidence"`
	// Labels the agent asks for, on top of the gate's base labels. The gate
	// grants only labels its policy allows.
	Labels []string `json:"labels,omitempty"`
	// AgentVersion is informational (the agent digest in the evidence is
	// what is checked).
	AgentVersion string `json:"agentVersion,omitempty"`
	// VMID names the fleet VM the agent runs in (from the platform: QEMU
	// fw_cfg, the cloud's metadata), so the gate's fleet can follow the VM
	// through its life. A gate with a fleet admits a named VM only once,
	// only while it is being launched, with the AK it enrolled for it.
	VMID string `json:"vmId,omitempty"`
	// Activation repeats the challenge's activation request, and
	// ActivationSecret is what TPM2_ActivateCredential released: with
	// them, the AK of the evidence is trusted as the EK's (no AK is
	// enrolled by hand).
	Activation       *Activation `json:"activation,omitempty"`
	ActivationSecret []byte      `json:"activationSecret,omitempty"`
}

// AdmitResponse is the gate's answer to an admitted environment.
type AdmitResponse struct {
	RunnerName string   `json:"runnerName"`
	RunnerID   int64    `json:"runnerId"`
	Labels     []string `json:"labels"`
	// SealedJITConfig is the encoded JIT runner configuration, HPKE-sealed
	// to the environment's attested HPKE key with context JITContext.
	SealedJITConfig []byte `json:"sealedJitConfig"`
	// EnvironmentCertificate is the gate-signed VSA (a sigstore bundle).
	EnvironmentCertificate json.RawMessage `json:"environmentCertificate"`
	ExpiresAt              time.Time       `json:"expiresAt"`
	// Sigstore, when the gate's policy names one, is where the environment
	// gets keyless certificates and transparency log entries for jobs that
	// hand it their OIDC token. Nil: key-signed bundles only.
	Sigstore *Sigstore `json:"sigstore,omitempty"`
	// DeliverySignature is the gate's signature (ECDSA P-256, ASN.1, by
	// its certificate key) over DeliveryDigest: it binds the sealed
	// configuration and the certificate to this admission, so a party
	// between agent and gate cannot swap either (see VerifyDelivery).
	DeliverySignature []byte `json:"deliverySignature"`
}

// Sigstore names the Sigstore instances of a gate's policy (public good:
// https://fulcio.sigstore.dev and https://rekor.sigstore.dev).
type Sigstore struct {
	FulcioURL string `json:"fulcioUrl"`
	// RekorURL speaks Rekor's v1 API.
	RekorURL string `json:"rekorUrl"`
	// OIDCIssuer, optional, is the issuer job tokens must come from;
	// default GitHub Actions' issuer for the job's server.
	OIDCIssuer string `json:"oidcIssuer,omitempty"`
}

// Validate requires https URLs (http only to a loopback host, for tests
// and a local demo).
func (s *Sigstore) Validate() error {
	for _, u := range []struct{ name, url string }{{"fulcioUrl", s.FulcioURL}, {"rekorUrl", s.RekorURL}} {
		p, err := url.Parse(u.url)
		switch {
		case err != nil || p.Host == "" || p.User != nil || p.RawQuery != "" || p.Fragment != "":
			return fmt.Errorf("sigstore.%s %q is not a URL", u.name, u.url)
		case p.Scheme == "https":
		case p.Scheme == "http" && (p.Hostname() == "127.0.0.1" || p.Hostname() == "::1" || p.Hostname() == "localhost"):
		default:
			return fmt.Errorf("sigstore.%s %q: https required (http only on loopback)", u.name, u.url)
		}
	}
	return nil
}

// deliveryDomain separates delivery signatures from every other use of the
// gate's key.
const deliveryDomain = "attested-runner/v1/jit-delivery"

// DeliveryDigest is the SHA-256 the gate signs when it answers an
// admission: the runner's name and id, the admission nonce, the digests of
// the agent's evidence, of the sealed JIT configuration and of the
// environment certificate, and the Sigstore instances (so nobody in
// between can point the agent at a Fulcio of their own), each
// length-prefixed.
func DeliveryDigest(nonce, evidence []byte, r *AdmitResponse) []byte {
	ev := sha256.Sum256(evidence)
	sealed := sha256.Sum256(r.SealedJITConfig)
	cert := sha256.Sum256(r.EnvironmentCertificate)
	var id [8]byte
	binary.BigEndian.PutUint64(id[:], uint64(r.RunnerID))
	h := sha256.New()
	var ss Sigstore
	if r.Sigstore != nil {
		ss = *r.Sigstore
	}
	for _, part := range [][]byte{[]byte(deliveryDomain), []byte(r.RunnerName), id[:], nonce, ev[:], sealed[:], cert[:],
		[]byte(ss.FulcioURL), []byte(ss.RekorURL), []byte(ss.OIDCIssuer)} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(part)))
		h.Write(n[:])
		h.Write(part)
	}
	return h.Sum(nil)
}

// ErrDeliveryForged: an admission answer that no trusted gate key signed
// for this admission.
var ErrDeliveryForged = errors.New("the admission answer is not signed by a pinned gate key for this admission")

// VerifyDelivery checks an admission answer's signature against the gate
// keys the agent trusts (pinned in its measured image, never fetched from
// the gate), for the nonce and evidence the agent sent.
func VerifyDelivery(gateKeys []crypto.PublicKey, nonce, evidence []byte, r *AdmitResponse) error {
	if len(gateKeys) == 0 {
		return fmt.Errorf("%w: no pinned gate key", ErrDeliveryForged)
	}
	if len(r.DeliverySignature) == 0 {
		return fmt.Errorf("%w: unsigned", ErrDeliveryForged)
	}
	d := DeliveryDigest(nonce, evidence, r)
	for _, k := range gateKeys {
		if ek, ok := k.(*ecdsa.PublicKey); ok && ecdsa.VerifyASN1(ek, d, r.DeliverySignature) {
			return nil
		}
	}
	return ErrDeliveryForged
}

// JITContext is the HPKE context a JIT configuration is sealed under.
func JITContext(runnerName string) string { return "jit-config/" + runnerName }

// DeregisterRequest asks the gate to remove a runner. It is signed by the
// environment key the runner was admitted with (ECDSA P-256, ASN.1, over
// SHA-256 of DeregisterMessage).
type DeregisterRequest struct {
	RunnerName string `json:"runnerName"`
	// Outcome classifies how the environment ended, for the gate's audit
	// log and metrics: one of Outcomes ("" is "failed").
	Outcome   string    `json:"outcome,omitempty"`
	Reason    string    `json:"reason"`
	SignedAt  time.Time `json:"signedAt"`
	Signature []byte    `json:"signature"`
}

// Outcomes a deregistration may report.
var Outcomes = []string{"done", "failed", "image_out_of_date", "idle"}

// DeregisterMessage is the exact byte string a deregistration signs.
func DeregisterMessage(runnerName, outcome, reason string, signedAt time.Time) []byte {
	return []byte("attested-runner/v2/deregister\n" + runnerName + "\n" + outcome + "\n" + reason + "\n" + signedAt.UTC().Format(time.RFC3339Nano))
}

// DeregisterResponse reports what the gate did.
type DeregisterResponse struct {
	Removed bool   `json:"removed"`
	Detail  string `json:"detail"`
}

// Error is the body of every non-2xx response.
type Error struct {
	// Code is a stable machine-readable reason (e.g. "nonce_used").
	Code    string `json:"code"`
	Message string `json:"message"`
}
