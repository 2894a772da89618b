package attest

import "errors"

// Sentinel errors of EK-based enrollment (ek.go, akpublic.go): why a TPM
// that presents an EK certificate and an AK is not given a credential.
var (
	// ErrEKUntrusted: the EK certificate chains to no configured EK root
	// (or none is configured), has an unsupported key, or an extension
	// nothing here understands.
	ErrEKUntrusted = errors.New("EK certificate does not chain to a trusted EK root")
	// ErrEKExpired: the EK certificate, or a certificate of its chain, is
	// outside its validity period.
	ErrEKExpired = errors.New("EK certificate is expired or not yet valid")
	// ErrEKRevoked: a configured CRL of the chain's issuer lists the EK
	// certificate (or an intermediate of its chain).
	ErrEKRevoked = errors.New("EK certificate is revoked")
	// ErrEKCRLExpired: the issuer's configured CRL is past its next update:
	// whether the certificate is revoked now cannot be told.
	ErrEKCRLExpired = errors.New("the EK issuer's CRL is out of date")
	// ErrAKAttributes: the AK public area is not that of a restricted
	// signing key that never leaves its TPM (fixedTPM, fixedParent,
	// sensitiveDataOrigin, restricted, sign, no decrypt), or its algorithm
	// or parameters are not accepted.
	ErrAKAttributes = errors.New("AK public area is not a restricted signing key bound to its TPM")
	// ErrEKActivation: the answer to a credential is not its secret: the
	// TPM that answered does not hold the EK, or not the AK it was made for.
	ErrEKActivation = errors.New("credential activation failed: the answer is not from the TPM holding the EK and AK")
	// ErrAKMismatch: the evidence is signed by another AK than the one
	// credential activation proved.
	ErrAKMismatch = errors.New("the evidence's AK is not the activated AK")
)
