package jobgate

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// EK credential activation: a TPM the gate has never seen is trusted
// through its EK certificate, with no AK enrolled by hand.
//
//  1. Challenge: the agent sends its EK certificate and AK public area.
//     The gate issues a nonce N and makes a credential, under the EK, for
//     the AK's name, wrapping the secret S = HMAC(store key, N, EK
//     certificate digest, AK name). Nothing is stored.
//  2. The agent's TPM opens the credential (TPM2_ActivateCredential): only
//     the TPM holding the EK's private key, and in it only a loaded object
//     with the AK's name, recovers S. The agent quotes over N || S.
//  3. Admission: the gate verifies the EK certificate against the trusted
//     EK roots (the VM's pool's, when a fleet sets them), recomputes S,
//     compares it with the agent's answer, checks that the evidence is
//     signed by the very AK of the activation, and verifies the evidence
//     with that AK as the only trusted one and N || S as its nonce.
//
// No extra round trip: the credential rides on the challenge answer.

// maxChallengeBody bounds a challenge request: an EK certificate and an AK
// public area, base64 in JSON.
const maxChallengeBody = 2*(attest.MaxEKCertificateSize+attest.MaxAKPublicSize) + 1<<10

// activationInfo is what an activation secret is derived for.
func activationInfo(ekDigest string, akName []byte) []byte {
	d, _ := hex.DecodeString(ekDigest)
	return append(append([]byte("ek-activation\x00"), d...), akName...)
}

// challengeCredential makes the credential of an activation request for
// nonce. The EK certificate's form is checked, not its chain: the
// credential is worth nothing until admission verifies the chain.
func (g *Gate) challengeCredential(ctx context.Context, nonce []byte, a *gateapi.Activation) (*gateapi.Credential, *apiError) {
	ek, err := attest.ParseEKCertificate(a.EKCertificate)
	if err != nil {
		return nil, evidenceError(err)
	}
	ak, err := attest.CheckAKPublic(a.AKPublic)
	if err != nil {
		return nil, evidenceError(err)
	}
	secret, err := g.store.NonceSecret(ctx, nonce, activationInfo(ek.Digest, ak.NameBytes()))
	if err != nil {
		return nil, refuse(http.StatusInternalServerError, "internal", err)
	}
	cred, err := attest.MakeCredential(ek.PublicKey, ak, secret)
	if err != nil {
		return nil, refuse(http.StatusInternalServerError, "internal", err)
	}
	return &gateapi.Credential{IDObject: cred.IDObject, EncryptedSecret: cred.EncryptedSecret}, nil
}

// activatedAK checks the activation part of an admission (step 3 above)
// and returns the AK it proves, and the verified EK certificate:
//   - the EK certificate verifies under trust at now (ek_untrusted,
//     ek_expired, ek_revoked, ek_crl_expired; no trust configured is
//     ek_untrusted);
//   - the AK public area is a restricted, fixedTPM signing key
//     (ak_attributes);
//   - the agent's secret is the one the credential wrapped for this nonce,
//     EK and AK (ek_activation_failed: another TPM answered, or none);
//   - the evidence names the activated AK as its signer (ak_name_mismatch).
//
// The caller then verifies the evidence with this AK as the only trusted
// key, which checks the AK's signatures.
func (g *Gate) activatedAK(ctx context.Context, req *gateapi.AdmitRequest, ev *attest.Evidence, trust *attest.EKTrust, now time.Time) (*attest.AKPublicArea, *attest.EKCertificate, *apiError) {
	a := req.Activation
	if a == nil {
		return nil, nil, refuse(http.StatusBadRequest, "malformed_request", errors.New("an activation secret without an activation request"))
	}
	ek, err := attest.VerifyEKCertificate(a.EKCertificate, trust, now)
	if err != nil {
		return nil, nil, evidenceError(err)
	}
	ak, err := attest.CheckAKPublic(a.AKPublic)
	if err != nil {
		return nil, ek, evidenceError(err)
	}
	want, err := g.store.NonceSecret(ctx, req.Nonce, activationInfo(ek.Digest, ak.NameBytes()))
	if err != nil {
		return nil, ek, nonceError(err)
	}
	if len(req.ActivationSecret) == 0 || subtle.ConstantTimeCompare(want, req.ActivationSecret) != 1 {
		return nil, ek, evidenceError(fmt.Errorf("%w (EK %s)", attest.ErrEKActivation, short(ek.Digest)))
	}
	evAK, err := ev.TPMAKPublic()
	if err != nil {
		return nil, ek, evidenceError(err)
	}
	if !bytes.Equal(evAK, ak.Area) {
		return nil, ek, evidenceError(fmt.Errorf("%w: the activation named AK %x", attest.ErrAKMismatch, ak.NameBytes()))
	}
	return ak, ek, nil
}
