package attest

import (
	"fmt"
	"io"

	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/attest"
	tpmpb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm/legacy/tpm2"
)

// akSigScheme is the signature scheme of a restricted signing key: the only
// one the TPM lets it use. TPM2_Certify by the AK is verified over SHA-256,
// so that is the digest the scheme must name.
func akSigScheme(pub tpm2.Public) (tpm2.SigScheme, error) {
	var s *tpm2.SigScheme
	switch {
	case pub.Type == tpm2.AlgRSA && pub.RSAParameters != nil:
		s = pub.RSAParameters.Sign
	case pub.Type == tpm2.AlgECC && pub.ECCParameters != nil:
		s = pub.ECCParameters.Sign
	}
	if s == nil {
		return tpm2.SigScheme{}, fmt.Errorf("the attestation key (%v) has no signature scheme", pub.Type)
	}
	switch s.Alg {
	case tpm2.AlgECDSA, tpm2.AlgRSASSA, tpm2.AlgRSAPSS:
	default:
		return tpm2.SigScheme{}, fmt.Errorf("the attestation key's scheme %v is not ECDSA, RSASSA or RSA-PSS", s.Alg)
	}
	if s.Hash != tpm2.AlgSHA256 {
		return tpm2.SigScheme{}, fmt.Errorf("the attestation key signs with %v, want SHA-256", s.Hash)
	}
	return tpm2.SigScheme{Alg: s.Alg, Hash: s.Hash}, nil
}

// attestWith quotes every allocated PCR bank with ak for nonce and returns
// the go-tpm-tools attestation. ECDSA and RSASSA AKs use go-tpm-tools'
// Key.Attest; it refuses RSA-PSS AKs (its own check of the quote knows only
// those two), so their attestation is assembled here the same way: AK
// public area and certificate, one quote per bank, the event log.
func attestWith(rw io.ReadWriter, ak *client.Key, nonce, eventLog []byte) (*pb.Attestation, error) {
	scheme, err := akSigScheme(ak.PublicArea())
	if err != nil {
		return nil, err
	}
	if scheme.Alg != tpm2.AlgRSAPSS {
		return ak.Attest(client.AttestOpts{Nonce: nonce, TCGEventLog: eventLog, SkipTeeAttestation: true})
	}
	sels, err := client.AllocatedPCRs(rw)
	if err != nil {
		return nil, err
	}
	att := &pb.Attestation{AkCert: ak.CertDERBytes(), EventLog: eventLog}
	if att.AkPub, err = ak.PublicArea().Encode(); err != nil {
		return nil, err
	}
	for _, sel := range sels {
		q := &tpmpb.Quote{}
		if q.Quote, q.RawSig, err = tpm2.QuoteRaw(rw, ak.Handle(), "", "", nonce, sel, tpm2.AlgNull); err != nil {
			return nil, fmt.Errorf("quoting PCR bank %v: %w", sel.Hash, err)
		}
		if q.Pcrs, err = client.ReadPCRs(rw, sel); err != nil {
			return nil, err
		}
		// Checked here as go-tpm-tools checks its own quotes: a PCR that
		// changed between quote and read shows now, not at the gate.
		if err := verifyQuote(q, ak.PublicKey(), nonce); err != nil {
			return nil, fmt.Errorf("quote of PCR bank %v: %w", sel.Hash, err)
		}
		att.Quotes = append(att.Quotes, q)
	}
	return att, nil
}
