package attest_test

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	gecel "github.com/google/go-eventlog/cel"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/attest"
	tpmpb "github.com/google/go-tpm-tools/proto/tpm"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"google.golang.org/protobuf/proto"
)

func nonce(t testing.TB) []byte {
	t.Helper()
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// clone deep-copies evidence through its wire encoding.
func clone(t testing.TB, ev *attest.Evidence) *attest.Evidence {
	t.Helper()
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	out, err := attest.DecodeEvidence(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func editAttestation(t testing.TB, ev *attest.Evidence, edit func(*pb.Attestation)) {
	t.Helper()
	var att pb.Attestation
	if err := proto.Unmarshal(ev.TPM.Attestation, &att); err != nil {
		t.Fatal(err)
	}
	edit(&att)
	b, err := proto.Marshal(&att)
	if err != nil {
		t.Fatal(err)
	}
	ev.TPM.Attestation = b
}

// editCEL rewrites the lifecycle log's records (renumbering them), so that
// only replay against the quoted PCR can notice.
func editCEL(t testing.TB, ev *attest.Evidence, edit func([]gecel.Record) []gecel.Record) {
	t.Helper()
	log, err := gecel.DecodeToCEL(bytes.NewBuffer(ev.CEL))
	if err != nil {
		t.Fatal(err)
	}
	recs := edit(append([]gecel.Record(nil), log.Records()...))
	var buf bytes.Buffer
	for i := range recs {
		recs[i].RecNum = uint64(i)
		if err := recs[i].EncodeCELR(&buf); err != nil {
			t.Fatal(err)
		}
	}
	ev.CEL = buf.Bytes()
}

func TestRoundTripSimulator(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	c, p := m.Collector, m.Policy
	n := nonce(t)
	ev, err := c.Collect(attest.AdmissionChallenge(n))
	if err != nil {
		t.Fatal(err)
	}
	claims, err := attest.Verify(clone(t, ev), attest.AdmissionChallenge(n), p)
	if err != nil {
		t.Fatal(err)
	}
	if claims.ImageID != "test-image" || !claims.SecureBoot || claims.Level != 0 || !claims.SoftwareTPM {
		t.Errorf("claims: image %q secureBoot %v level %d software %v", claims.ImageID, claims.SecureBoot, claims.Level, claims.SoftwareTPM)
	}
	if !bytes.Equal(claims.EnvKeySPKI, c.EnvKey()) || !bytes.Equal(claims.HPKEPublicKey, c.HPKE().PublicKey()) {
		t.Error("claims name other keys than the collector's")
	}
	if got := claims.Lifecycle.AgentDigest; !bytes.Equal(got, attesttest.AgentDigest[:]) {
		t.Errorf("agent digest %x", got)
	}
	if claims.Lifecycle.BuildID != "" || len(claims.BootEvents) == 0 || len(claims.EFIApps) == 0 {
		t.Errorf("lifecycle %+v, %d boot events, %d EFI apps", claims.Lifecycle, len(claims.BootEvents), len(claims.EFIApps))
	}

	// The signer is the certified key.
	digest := sha256.Sum256([]byte("payload"))
	sig, err := c.Signer().Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if !ecdsaVerify(claims, digest[:], sig) {
		t.Error("signature by the collector's signer does not verify with the certified key")
	}
}

// TestTPMLevel: the BuildEnv level TPM evidence supports is the policy's
// (2 for a vTPM, 3 for a hardware TPM), and 0 for a software TPM.
func TestTPMLevel(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	ch := attest.AdmissionChallenge(nonce(t))
	ev, err := m.Collector.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		software bool
		tpmLevel int
		want     int
	}{
		{name: "vTPM by default", want: 2},
		{name: "hardware TPM", tpmLevel: 3, want: 3},
		{name: "software TPM", software: true, tpmLevel: 3, want: 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := clone(t, ev)
			e.SoftwareTPMUnsafe = tc.software
			p := clonePolicy(t, m.Policy)
			p.TPMLevel = tc.tpmLevel
			c, err := attest.Verify(e, ch, p)
			if err != nil {
				t.Fatal(err)
			}
			if c.Level != tc.want {
				t.Errorf("level %d, want %d", c.Level, tc.want)
			}
		})
	}
}

// TestRejections builds valid evidence once, breaks exactly one thing per
// case, and checks the specific error (DESIGN.md threat model).
func TestRejections(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	c, p := m.Collector, m.Policy
	n := nonce(t)
	ch := attest.AdmissionChallenge(n)
	good, err := c.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	base, err := attest.Verify(clone(t, good), ch, p)
	if err != nil {
		t.Fatalf("baseline evidence rejected: %v", err)
	}
	bootEvent := base.BootEvents[len(base.BootEvents)-1]
	soft := newSoftAK(t)

	otherKey, err := attest.NewHPKEKey()
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		evidence func(*attest.Evidence)
		policy   func(*attest.Policy)
		ch       attest.Challenge
		want     error
		// msg tells apart checks that share a sentinel.
		msg string
	}{
		{name: "wrong nonce", ch: attest.AdmissionChallenge(nonce(t)), want: attest.ErrNonceMismatch},
		{name: "admission evidence replayed as a statement quote", ch: attest.StatementChallenge(n), want: attest.ErrNonceMismatch},
		{name: "empty nonce", ch: attest.AdmissionChallenge(nil), want: attest.ErrBadChallenge},
		{name: "HPKE key swapped", evidence: func(e *attest.Evidence) { e.HPKEPublicKey = otherKey.PublicKey() }, want: attest.ErrNonceMismatch},
		{name: "empty policy", policy: func(p *attest.Policy) { p.Reference.Images = nil }, want: attest.ErrPolicyEmpty},
		{name: "nil reference values", policy: func(p *attest.Policy) { p.Reference = nil }, want: attest.ErrPolicyEmpty},
		{name: "no allowed agent", policy: func(p *attest.Policy) { p.Reference.AgentDigests = nil }, want: attest.ErrPolicyEmpty},
		{name: "no trust root", policy: func(p *attest.Policy) { p.TrustedAKs = nil }, want: attest.ErrNoTrustRoot},
		{name: "AK not trusted", policy: func(p *attest.Policy) { p.TrustedAKs = []crypto.PublicKey{otherAK(t)} }, want: attest.ErrUntrustedAK},
		{name: "software TPM under a strict policy", policy: func(p *attest.Policy) { p.AllowSoftwareTPMUnsafe = false }, want: attest.ErrSoftwareTPM},
		{name: "PCR not in reference values", policy: func(p *attest.Policy) { p.Reference.Images[0].PCRs[4] = make(attest.Hex, 32) }, want: attest.ErrReferenceMismatch},
		// The lowest PCR that differs is reported.
		{name: "PCRs not in reference values", policy: func(p *attest.Policy) {
			p.Reference.Images[0].PCRs[7] = make(attest.Hex, 32)
			p.Reference.Images[0].PCRs[4] = make(attest.Hex, 32)
		}, want: attest.ErrReferenceMismatch, msg: "test-image: PCR 4 is "},
		{name: "reference values for TDX only", policy: func(p *attest.Policy) {
			p.Reference.Images = []attest.Image{{ID: "tdx", MRTD: make(attest.Hex, 48), RTMRs: []attest.Hex{make(attest.Hex, 48), make(attest.Hex, 48), make(attest.Hex, 48)}}}
		}, want: attest.ErrReferenceMismatch, msg: "no tpm image"},
		{name: "required boot event absent", policy: func(p *attest.Policy) {
			p.Reference.Images[0].Events = []attest.EventRef{{PCR: 4, Digest: make(attest.Hex, 32)}}
		}, want: attest.ErrReferenceMismatch},
		{name: "agent not in reference values", policy: func(p *attest.Policy) { p.Reference.AgentDigests = []attest.Hex{make(attest.Hex, 32)} }, want: attest.ErrAgentNotAllowed},
		{name: "empty event log", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) { a.EventLog = nil })
		}, want: attest.ErrEventLogEmpty},
		{name: "event log tampered", evidence: func(e *attest.Evidence) {
			// Flip a bit of the measured digest of the kernel's event
			// (the last EFI application on PCR 4).
			editAttestation(t, e, func(a *pb.Attestation) { a.EventLog = flipEventDigest(t, a.EventLog, 4) })
		}, want: attest.ErrEventLogReplay},
		{name: "event log truncated", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) { a.EventLog = a.EventLog[:len(a.EventLog)/2] })
		}, want: attest.ErrEventLogReplay},
		// Framing is checked before go-eventlog parses: it trusts the log's
		// own counts.
		{name: "more boot events than the limit", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) { a.EventLog = make([]byte, sha1EventHeader*(attest.MaxBootEvents+2)) })
		}, want: attest.ErrTooLarge, msg: "events"},
		{name: "event log of the spec ID event alone", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) {
				_, evs := agileEvents(t, a.EventLog)
				a.EventLog = a.EventLog[:evs[0].off]
			})
		}, want: attest.ErrEventLogEmpty},
		// The type field is not measured: the log still replays.
		{name: "boot event of unknown type", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) {
				_, evs := agileEvents(t, a.EventLog)
				a.EventLog = bytes.Clone(a.EventLog)
				binary.LittleEndian.PutUint32(a.EventLog[evs[len(evs)-1].off+4:], 0x7777)
			})
		}, want: attest.ErrEventLogReplay, msg: "unknown type"},
		// Firmware events that replay PCR 13 to the lifecycle log's value:
		// the boot log would then explain the lifecycle PCR too (and the
		// boot-log cache, which leaves PCR 13 out of its key, would be wrong).
		{name: "firmware events on the lifecycle PCR", evidence: func(e *attest.Evidence) {
			cel, err := gecel.DecodeToCEL(bytes.NewBuffer(e.CEL))
			if err != nil {
				t.Fatal(err)
			}
			editAttestation(t, e, func(a *pb.Attestation) {
				algs, _ := agileEvents(t, a.EventLog)
				raw := bytes.Clone(a.EventLog)
				for _, r := range cel.Records() {
					raw = append(raw, agileEvent(algs, attest.LifecyclePCR, tcgEVEventTag, r.Digests[crypto.SHA256], []byte("lifecycle"))...)
				}
				a.EventLog = raw
			})
		}, want: attest.ErrEventLogReplay, msg: "lifecycle PCR"},
		{name: "quoted PCR value edited", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) {
				for _, q := range a.Quotes {
					q.Pcrs.Pcrs[0] = make([]byte, len(q.Pcrs.Pcrs[0]))
				}
			})
		}, want: attest.ErrQuoteSignature},
		{name: "quote signature flipped", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) {
				for _, q := range a.Quotes {
					q.RawSig = bytes.Clone(q.RawSig)
					q.RawSig[len(q.RawSig)-1] ^= 1
				}
			})
		}, want: attest.ErrQuoteSignature},
		{name: "no SHA-256 quote", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) { a.Quotes = nil })
		}, want: attest.ErrMalformedEvidence, msg: "no SHA-256 quote"},
		{name: "SHA-256 quote is not a TPMS_ATTEST", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) {
				for _, q := range a.Quotes {
					if q.GetPcrs().GetHash() == tpmpb.HashAlgo_SHA256 {
						q.Quote = []byte("not an attestation")
					}
				}
			})
		}, want: attest.ErrMalformedEvidence, msg: "quote attestation data"},
		{name: "attestation does not decode", evidence: func(e *attest.Evidence) { e.TPM.Attestation = []byte{0xff} }, want: attest.ErrMalformedEvidence, msg: "TPM attestation"},
		{name: "AK public area does not decode", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) { a.AkPub = []byte{0, 1} })
		}, want: attest.ErrMalformedEvidence, msg: "AK public area"},
		{name: "AK public area holds no public key", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) { a.AkPub = hmacAKPublicArea(t) })
		}, want: attest.ErrMalformedEvidence, msg: "AK public key:"},
		{name: "AK point not on the curve", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) {
				a.AkPub = editPublicArea(t, a.AkPub, func(p *tpm2.Public) { p.ECCParameters.Point.YRaw[31] ^= 1 })
			})
		}, want: attest.ErrMalformedEvidence, msg: "AK public key encoding"},
		// A restricted key that also decrypts could be made to decrypt a
		// credential (TPM2_ActivateCredential's threat) and is no AK.
		{name: "AK can also decrypt", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) {
				a.AkPub = editPublicArea(t, a.AkPub, func(p *tpm2.Public) { p.Attributes |= tpm2.FlagDecrypt })
			})
		}, want: attest.ErrUntrustedAK, msg: "restricted signing key"},
		{name: "lifecycle event removed", evidence: func(e *attest.Evidence) {
			editCEL(t, e, func(r []gecel.Record) []gecel.Record { return r[1:] })
		}, want: attest.ErrCELReplay},
		{name: "lifecycle events reordered", evidence: func(e *attest.Evidence) {
			editCEL(t, e, func(r []gecel.Record) []gecel.Record { return []gecel.Record{r[1], r[0]} })
		}, want: attest.ErrCELReplay},
		{name: "lifecycle log empty", evidence: func(e *attest.Evidence) { e.CEL = nil }, want: attest.ErrCELReplay},
		// Records are checked to be on PCR 13's SHA-256 bank before the
		// replay, which only compares the registers it is given.
		{name: "lifecycle records on another PCR", evidence: func(e *attest.Evidence) {
			editCEL(t, e, func(r []gecel.Record) []gecel.Record {
				for i := range r {
					r[i].Index = attest.LifecyclePCR + 1
				}
				return r
			})
		}, want: attest.ErrCELReplay, msg: "is on register type 1 index 14"},
		{name: "lifecycle records on a CC measurement register", evidence: func(e *attest.Evidence) {
			editCEL(t, e, func(r []gecel.Record) []gecel.Record {
				for i := range r {
					r[i].IndexType = gecel.CCMRType
				}
				return r
			})
		}, want: attest.ErrCELReplay, msg: "is on register type 108 index 13"},
		{name: "lifecycle records without a SHA-256 digest", evidence: func(e *attest.Evidence) {
			editCEL(t, e, func(r []gecel.Record) []gecel.Record {
				for i := range r {
					b, err := r[i].Content.MarshalBinary()
					if err != nil {
						t.Fatal(err)
					}
					d := sha512.Sum384(b)
					r[i].Digests = map[crypto.Hash][]byte{crypto.SHA384: d[:]}
				}
				return r
			})
		}, want: attest.ErrCELReplay, msg: "no SHA-256 digest"},
		// Record numbers are not measured.
		{name: "lifecycle records numbered from 1", evidence: func(e *attest.Evidence) {
			log, err := gecel.DecodeToCEL(bytes.NewBuffer(e.CEL))
			if err != nil {
				t.Fatal(err)
			}
			recs := log.Records()
			for i := range recs {
				recs[i].RecNum++
			}
			e.CEL = encodeCEL(t, recs...)
		}, want: attest.ErrCELOrder, msg: "has number 1"},
		{name: "lifecycle record content edited", evidence: func(e *attest.Evidence) {
			editCEL(t, e, func(r []gecel.Record) []gecel.Record {
				r[0].Content.Value = bytes.Clone(r[0].Content.Value)
				r[0].Content.Value[len(r[0].Content.Value)-1] ^= 1
				return r
			})
		}, want: attest.ErrCELReplay},
		{name: "environment key not the certified one", evidence: func(e *attest.Evidence) {
			e.EnvKey = otherEnvKeySPKI(t)
		}, want: attest.ErrNonceMismatch},
		{name: "certification of another key", evidence: func(e *attest.Evidence) {
			e.TPM.EnvKeyPublic = otherAKPublicArea(t)
		}, want: attest.ErrKeyNotCertified},
		{name: "certification signature flipped", evidence: func(e *attest.Evidence) {
			e.TPM.CertifySignature[len(e.TPM.CertifySignature)-1] ^= 1
		}, want: attest.ErrKeyNotCertified},
		{name: "certify signature does not decode", evidence: func(e *attest.Evidence) {
			e.TPM.CertifySignature = []byte{0x00, 0x18}
		}, want: attest.ErrKeyNotCertified, msg: "certify signature:"},
		{name: "certify signature over SHA-1", evidence: func(e *attest.Evidence) {
			sig, err := tpm2.DecodeSignature(bytes.NewBuffer(e.TPM.CertifySignature))
			if err != nil {
				t.Fatal(err)
			}
			sig.ECC.HashAlg = tpm2.AlgSHA1
			if e.TPM.CertifySignature, err = sig.Encode(); err != nil {
				t.Fatal(err)
			}
		}, want: attest.ErrKeyNotCertified, msg: "ECDSA-SHA256"},
		{name: "certify signature is RSASSA", evidence: func(e *attest.Evidence) {
			sig, err := tpm2.Signature{Alg: tpm2.AlgRSASSA, RSA: &tpm2.SignatureRSA{HashAlg: tpm2.AlgSHA256, Signature: make([]byte, 256)}}.Encode()
			if err != nil {
				t.Fatal(err)
			}
			e.TPM.CertifySignature = sig
		}, want: attest.ErrKeyNotCertified, msg: "ECDSA-SHA256"},
		{name: "environment key public area does not decode", evidence: func(e *attest.Evidence) {
			e.TPM.EnvKeyPublic = []byte{0, 1}
		}, want: attest.ErrKeyNotCertified, msg: "environment key public area"},
		// Same template, another key: only the certified name tells.
		{name: "certified name is another environment key", evidence: func(e *attest.Evidence) {
			k, err := ecdsaKey()
			if err != nil {
				t.Fatal(err)
			}
			e.TPM.EnvKeyPublic = envKeyPublicArea(t, &k.PublicKey)
		}, want: attest.ErrKeyNotCertified, msg: "certified name is another key"},
		{name: "environment key name algorithm unknown", evidence: func(e *attest.Evidence) {
			e.TPM.EnvKeyPublic = editPublicArea(t, e.TPM.EnvKeyPublic, func(p *tpm2.Public) { p.NameAlg = 0x0099 })
		}, want: attest.ErrKeyNotCertified, msg: "environment key name"},
		{name: "control: signed by a trusted software AK", evidence: func(e *attest.Evidence) { soft.resign(t, e, nil) }, policy: soft.trust},
		// Data an AK may sign (TPM2_Sign with a hash ticket) that is no
		// TPMS_ATTEST.
		{name: "AK-signed certify info is not an attestation", evidence: func(e *attest.Evidence) {
			e.TPM.CertifyInfo = []byte("not an attestation")
			soft.resign(t, e, nil)
		}, policy: soft.trust, want: attest.ErrKeyNotCertified, msg: "certify info:"},
		{name: "certified name is a handle", evidence: func(e *attest.Evidence) {
			soft.resign(t, e, func(ad *tpm2.AttestationData) {
				h := tpmutil.Handle(0x81000001)
				ad.AttestedCertifyInfo.Name = tpm2.Name{Handle: &h}
			})
		}, policy: soft.trust, want: attest.ErrKeyNotCertified, msg: "certified name is another key"},
		{name: "certified qualified name is a handle", evidence: func(e *attest.Evidence) {
			soft.resign(t, e, func(ad *tpm2.AttestationData) {
				h := tpmutil.Handle(tpm2.HandleNull)
				ad.AttestedCertifyInfo.QualifiedName = tpm2.Name{Handle: &h}
			})
		}, policy: soft.trust, want: attest.ErrKeyNotCertified, msg: "null hierarchy"},
		{name: "certify info swapped for the quote", evidence: func(e *attest.Evidence) {
			var att pb.Attestation
			if err := proto.Unmarshal(e.TPM.Attestation, &att); err != nil {
				t.Fatal(err)
			}
			e.TPM.CertifyInfo = att.Quotes[0].Quote
			e.TPM.CertifySignature = att.Quotes[0].RawSig
		}, want: attest.ErrKeyNotCertified},
		{name: "unknown kind", evidence: func(e *attest.Evidence) { e.Kind = "sev" }, want: attest.ErrMalformedEvidence},
		{name: "wrong format", evidence: func(e *attest.Evidence) { e.Format = "v0" }, want: attest.ErrMalformedEvidence},
		{name: "missing TPM part", evidence: func(e *attest.Evidence) { e.TPM = nil }, want: attest.ErrMalformedEvidence},
		{name: "oversized lifecycle log", evidence: func(e *attest.Evidence) { e.CEL = make([]byte, attest.MaxCELSize+1) }, want: attest.ErrTooLarge},
		{name: "oversized event log", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) { a.EventLog = padEventLog(t, a.EventLog, attest.MaxEventLogSize+1) })
		}, want: attest.ErrTooLarge, msg: "TCG event log"},
		{name: "control: event log at the size limit", evidence: func(e *attest.Evidence) {
			editAttestation(t, e, func(a *pb.Attestation) { a.EventLog = padEventLog(t, a.EventLog, attest.MaxEventLogSize) })
		}},
		{name: "control: required boot event present", policy: func(p *attest.Policy) {
			p.Reference.Images[0].Events = []attest.EventRef{{PCR: bootEvent.PCR, Digest: bootEvent.Digest}}
		}},
		{name: "required boot event on another PCR", policy: func(p *attest.Policy) {
			p.Reference.Images[0].Events = []attest.EventRef{{PCR: bootEvent.PCR + 1, Digest: bootEvent.Digest}}
		}, want: attest.ErrReferenceMismatch, msg: "no event"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev := clone(t, good)
			if tc.evidence != nil {
				tc.evidence(ev)
			}
			pol := clonePolicy(t, p)
			if tc.policy != nil {
				tc.policy(pol)
			}
			chal := ch
			if tc.ch.Purpose != "" {
				chal = tc.ch
			}
			_, err := attest.Verify(ev, chal, pol)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: got %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Verify: got %q, want the %q check", err, tc.msg)
			}
		})
	}
}

// editPublicArea decodes a TPMT_PUBLIC, edits it and encodes it again.
func editPublicArea(t testing.TB, b []byte, edit func(*tpm2.Public)) []byte {
	t.Helper()
	p, err := tpm2.DecodePublic(b)
	if err != nil {
		t.Fatal(err)
	}
	edit(&p)
	out, err := p.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// hmacAKPublicArea is the public area of an HMAC key with the attributes of
// an AK: it decodes, but holds no public key.
func hmacAKPublicArea(t testing.TB) []byte {
	t.Helper()
	b, err := tpm2.Public{
		Type:                tpm2.AlgKeyedHash,
		NameAlg:             tpm2.AlgSHA256,
		Attributes:          client.AKTemplateECC().Attributes,
		KeyedHashParameters: &tpm2.KeyedHashParams{Alg: tpm2.AlgHMAC, Hash: tpm2.AlgSHA256},
	}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestVerifyWithoutPolicy: no policy is not an empty one that passes.
func TestVerifyWithoutPolicy(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	ch := attest.AdmissionChallenge(nonce(t))
	ev, err := m.Collector.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.Verify(ev, ch, nil); !errors.Is(err, attest.ErrPolicyEmpty) {
		t.Fatalf("Verify: got %v, want %v", err, attest.ErrPolicyEmpty)
	}
}

// flipEventDigest flips one bit of the SHA-256 digest of the last event on
// pcr, in place in the raw log.
func flipEventDigest(t testing.TB, raw []byte, pcr int) []byte {
	t.Helper()
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{})
	if err != nil {
		t.Fatal(err)
	}
	var digest []byte
	for _, e := range el.Events(register.HashSHA256) {
		if e.Index == pcr {
			digest = e.Digest
		}
	}
	i := bytes.LastIndex(raw, digest)
	if digest == nil || i < 0 {
		t.Fatalf("no event on PCR %d", pcr)
	}
	out := bytes.Clone(raw)
	out[i] ^= 1
	return out
}

// otherAK is some other P-256 key, standing in for an unknown AK.
func otherAK(t testing.TB) crypto.PublicKey {
	t.Helper()
	k, err := ecdsaKey()
	if err != nil {
		t.Fatal(err)
	}
	return k.Public()
}

func otherEnvKeySPKI(t testing.TB) []byte {
	t.Helper()
	k, err := ecdsaKey()
	if err != nil {
		t.Fatal(err)
	}
	return spki(t, k.Public())
}

// otherAKPublicArea is a TPM public area of another P-256 key: the AK
// template, which differs from the environment key's.
func otherAKPublicArea(t testing.TB) []byte {
	t.Helper()
	b, err := client.AKTemplateECC().Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}
