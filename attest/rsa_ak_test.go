package attest_test

import (
	"crypto/x509"
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/attest"
	tpmpb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm-tools/server"
	"github.com/google/go-tpm/legacy/tpm2"
	"google.golang.org/protobuf/proto"
)

func sha256Quote(att *pb.Attestation) *tpmpb.Quote {
	for _, q := range att.GetQuotes() {
		if q.GetPcrs().GetHash() == tpmpb.HashAlgo_SHA256 {
			return q
		}
	}
	return nil
}

// TestAttestationKeyTypes: quote and TPM2_Certify verify for ECDSA,
// RSASSA and RSA-PSS attestation keys on the simulator, and each breaks
// with the specific error when one thing is changed.
func TestAttestationKeyTypes(t *testing.T) {
	for _, kind := range []struct {
		name string
		tmpl tpm2.Public
		alg  tpm2.Algorithm
	}{
		{"ecdsa", client.AKTemplateECC(), tpm2.AlgECDSA},
		{"rsassa", client.AKTemplateRSA(), tpm2.AlgRSASSA},
		{"rsa-pss", attesttest.AKTemplateRSAPSS(), tpm2.AlgRSAPSS},
	} {
		t.Run(kind.name, func(t *testing.T) {
			m := attesttest.SimulatedMachineWithAK(t, kind.tmpl)
			defer m.TPM.Close()
			ch := attest.AdmissionChallenge(nonce(t))
			good, err := m.Collector.Collect(ch)
			if err != nil {
				t.Fatal(err)
			}
			c, err := attest.Verify(clone(t, good), ch, m.Policy)
			if err != nil {
				t.Fatalf("genuine evidence refused: %v", err)
			}
			if want := attest.KeyDigest(spki(t, m.Policy.TrustedAKs[0])); c.AKDigest != want {
				t.Fatalf("claims name AK %s, want %s", c.AKDigest, want)
			}
			if got := tpm2.Algorithm(binary.BigEndian.Uint16(good.TPM.CertifySignature)); got != kind.alg {
				t.Fatalf("certification signed with %v, want %v", got, kind.alg)
			}
			var att pb.Attestation
			if err := proto.Unmarshal(good.TPM.Attestation, &att); err != nil {
				t.Fatal(err)
			}
			if got := tpm2.Algorithm(binary.BigEndian.Uint16(sha256Quote(&att).GetRawSig())); got != kind.alg {
				t.Fatalf("quote signed with %v, want %v", got, kind.alg)
			}

			other := tpm2.AlgRSAPSS
			if kind.alg == tpm2.AlgRSAPSS {
				other = tpm2.AlgRSASSA
			}
			for _, tc := range []struct {
				name string
				edit func(*attest.Evidence)
				ch   attest.Challenge
				want error
			}{
				{name: "certify signature flipped", want: attest.ErrKeyNotCertified, edit: func(ev *attest.Evidence) {
					ev.TPM.CertifySignature[len(ev.TPM.CertifySignature)-1] ^= 1
				}},
				{name: "certify signature relabelled with another scheme", want: attest.ErrKeyNotCertified, edit: func(ev *attest.Evidence) {
					binary.BigEndian.PutUint16(ev.TPM.CertifySignature, uint16(other))
				}},
				{name: "certify info edited", want: attest.ErrKeyNotCertified, edit: func(ev *attest.Evidence) {
					ev.TPM.CertifyInfo[len(ev.TPM.CertifyInfo)-1] ^= 1
				}},
				{name: "quote signature flipped", want: attest.ErrQuoteSignature, edit: func(ev *attest.Evidence) {
					editAttestation(t, ev, func(a *pb.Attestation) {
						q := sha256Quote(a)
						q.RawSig[len(q.RawSig)-1] ^= 1
					})
				}},
				{name: "quote relabelled with another scheme", want: attest.ErrQuoteSignature, edit: func(ev *attest.Evidence) {
					editAttestation(t, ev, func(a *pb.Attestation) {
						binary.BigEndian.PutUint16(sha256Quote(a).RawSig, uint16(other))
					})
				}},
				{name: "quoted PCR value edited", want: attest.ErrQuoteSignature, edit: func(ev *attest.Evidence) {
					editAttestation(t, ev, func(a *pb.Attestation) { sha256Quote(a).Pcrs.Pcrs[7][0] ^= 1 })
				}},
				{name: "quoted PCR dropped", want: attest.ErrQuoteSignature, edit: func(ev *attest.Evidence) {
					editAttestation(t, ev, func(a *pb.Attestation) { delete(sha256Quote(a).Pcrs.Pcrs, 23) })
				}},
				{name: "quote answers another challenge", want: attest.ErrNonceMismatch, ch: attest.AdmissionChallenge(nonce(t))},
			} {
				t.Run(tc.name, func(t *testing.T) {
					ev := clone(t, good)
					if tc.edit != nil {
						tc.edit(ev)
					}
					use := ch
					if tc.ch.Nonce != nil {
						use = tc.ch
					}
					if _, err := attest.Verify(ev, use, m.Policy); !errors.Is(err, tc.want) {
						t.Fatalf("got %v, want %v", err, tc.want)
					}
				})
			}
		})
	}
}

// TestRealGCEAttestationRSA checks a real Compute Engine attestation
// (go-tpm-tools' test data: an RSA-2048 RSASSA AK with its AK certificate)
// against Google's roots: the AK certificate chains, the quote verifies
// for its nonce; another nonce, a flipped signature or another root fail.
func TestRealGCEAttestationRSA(t *testing.T) {
	raw, err := os.ReadFile("testdata/gotpmtools/gce-cos-85-nonce9009.pb")
	if err != nil {
		t.Fatal(err)
	}
	decode := func(t *testing.T) *pb.Attestation {
		var att pb.Attestation
		if err := proto.Unmarshal(raw, &att); err != nil {
			t.Fatal(err)
		}
		return &att
	}
	gce := &attest.Policy{TrustedAKRoots: server.GceEKRoots, TrustedAKIntermediates: server.GceEKIntermediates}
	status := func(in *attest.Inspection) map[string]attest.Status {
		out := map[string]attest.Status{}
		for _, c := range in.Checks {
			out[c.Name] = c.Status
		}
		return out
	}
	in := attest.InspectTPMAttestation(decode(t), attest.InspectOptions{RawNonce: []byte{0x90, 0x09}, Policy: gce})
	if st := status(in); st["attestation key"] != attest.StatusPass || st["quote"] != attest.StatusPass {
		t.Fatalf("genuine GCE attestation: %v (%v)", st, in.Err)
	}

	for _, tc := range []struct {
		name   string
		edit   func(*pb.Attestation)
		nonce  []byte
		policy *attest.Policy
		want   error
	}{
		{name: "another nonce", nonce: []byte{0x90, 0x0a}, want: attest.ErrNonceMismatch},
		{name: "quote signature flipped", edit: func(a *pb.Attestation) {
			q := sha256Quote(a)
			q.RawSig[len(q.RawSig)-1] ^= 1
		}, want: attest.ErrQuoteSignature},
		{name: "quoted PCR edited", edit: func(a *pb.Attestation) { sha256Quote(a).Pcrs.Pcrs[0][0] ^= 1 }, want: attest.ErrQuoteSignature},
		{name: "AK certificate under another root", policy: &attest.Policy{TrustedAKRoots: []*x509.Certificate{newAuthority(t).cert}}, want: attest.ErrUntrustedAK},
		{name: "AK certificate without its intermediate", policy: &attest.Policy{TrustedAKRoots: server.GceEKRoots}, want: attest.ErrUntrustedAK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			att := decode(t)
			if tc.edit != nil {
				tc.edit(att)
			}
			n := []byte{0x90, 0x09}
			if tc.nonce != nil {
				n = tc.nonce
			}
			p := gce
			if tc.policy != nil {
				p = tc.policy
			}
			in := attest.InspectTPMAttestation(att, attest.InspectOptions{RawNonce: n, Policy: p})
			if !errors.Is(in.Err, tc.want) {
				t.Fatalf("got %v, want %v", in.Err, tc.want)
			}
		})
	}
}
