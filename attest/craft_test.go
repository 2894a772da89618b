package attest_test

import (
	"bytes"
	"crypto"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	gecel "github.com/google/go-eventlog/cel"
	"github.com/google/go-tpm-tools/client"
	pb "github.com/google/go-tpm-tools/proto/attest"
	"github.com/google/go-tpm/legacy/tpm2"
	"github.com/google/go-tpm/tpmutil"
	"google.golang.org/protobuf/proto"
)

// tpmKey is a key loaded in the TPM: a client.Key or a tpmObject.
type tpmKey interface {
	Handle() tpmutil.Handle
	PublicArea() tpm2.Public
}

// tpmObject is a primary object made with tpm2.CreatePrimary, for templates
// client.NewKey does not take (keys that are not signing keys it knows).
type tpmObject struct {
	handle tpmutil.Handle
	public tpm2.Public
}

func (o tpmObject) Handle() tpmutil.Handle  { return o.handle }
func (o tpmObject) PublicArea() tpm2.Public { return o.public }

func createPrimary(t *testing.T, rw io.ReadWriter, hierarchy tpmutil.Handle, tmpl tpm2.Public) tpmObject {
	t.Helper()
	h, raw, _, _, _, _, err := tpm2.CreatePrimaryEx(rw, hierarchy, tpm2.PCRSelection{}, "", "", tmpl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tpm2.FlushContext(rw, h) })
	pub, err := tpm2.DecodePublic(raw)
	if err != nil {
		t.Fatal(err)
	}
	return tpmObject{handle: h, public: pub}
}

// craftEvidence builds evidence the way the collector does, but with keys and
// lifecycle events the test chooses, to show what Verify makes of evidence a
// modified agent could produce on a genuine TPM.
func craftEvidence(t *testing.T, rw io.ReadWriter, ak *client.Key, env tpmKey, ch attest.Challenge, events ...gecel.Content) *attest.Evidence {
	t.Helper()
	return craftEvidenceClaiming(t, rw, ak, env, nil, ch, events...)
}

// craftEvidenceClaiming is craftEvidence for evidence that names envSPKI
// (nil: env's own key) as its environment key, in the challenge binding and
// the env-key event, while the TPM certifies env.
func craftEvidenceClaiming(t *testing.T, rw io.ReadWriter, ak *client.Key, env tpmKey, envSPKI []byte, ch attest.Challenge, events ...gecel.Content) *attest.Evidence {
	t.Helper()
	hk, err := attest.NewHPKEKey()
	if err != nil {
		t.Fatal(err)
	}
	if envSPKI == nil {
		pub, err := env.PublicArea().Key()
		if err != nil {
			t.Fatal(err)
		}
		envSPKI = spki(t, pub)
	}
	if events == nil {
		events = []gecel.Content{attest.AgentStartEvent(attesttest.AgentDigest), attest.EnvKeyEvent(envSPKI, hk.PublicKey())}
	}
	log := gecel.NewPCR()
	for _, e := range events {
		err := log.AppendEvent(e, []crypto.Hash{crypto.SHA256}, attest.LifecyclePCR, func(_ crypto.Hash, pcr int, d []byte) error {
			return tpm2.PCRExtend(rw, tpmutil.Handle(pcr), tpm2.AlgSHA256, d, "")
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var cel bytes.Buffer
	if err := log.EncodeCEL(&cel); err != nil {
		t.Fatal(err)
	}
	nonce := ch.TPMNonce(envSPKI, hk.PublicKey())
	att, err := ak.Attest(client.AttestOpts{Nonce: nonce, TCGEventLog: attesttest.BootLog(), SkipTeeAttestation: true})
	if err != nil {
		t.Fatal(err)
	}
	attBytes, err := proto.Marshal(att)
	if err != nil {
		t.Fatal(err)
	}
	info, sig := certify(t, rw, ak, env, nonce)
	pub, err := env.PublicArea().Encode()
	if err != nil {
		t.Fatal(err)
	}
	return &attest.Evidence{
		Format: attest.EvidenceFormat, Kind: attest.KindTPM, EnvKey: envSPKI, HPKEPublicKey: hk.PublicKey(),
		CEL: cel.Bytes(), SoftwareTPMUnsafe: true,
		TPM: &attest.TPMEvidence{Attestation: attBytes, EnvKeyPublic: pub, CertifyInfo: info, CertifySignature: sig},
	}
}

// certify runs TPM2_Certify of env by ak over nonce.
func certify(t *testing.T, rw io.ReadWriter, ak *client.Key, env tpmKey, nonce []byte) (info, sig []byte) {
	t.Helper()
	info, sig, err := tpm2.CertifyEx(rw, "", "", env.Handle(), ak.Handle(), nonce, tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256})
	if err != nil {
		t.Fatal(err)
	}
	return info, sig
}

func newKey(t *testing.T, rw io.ReadWriter, parent tpmutil.Handle, tmpl tpm2.Public) *client.Key {
	t.Helper()
	k, err := client.NewKey(rw, parent, tmpl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)
	return k
}

func TestCraftedEvidence(t *testing.T) {
	unrestricted := client.AKTemplateECC()
	unrestricted.Attributes &^= tpm2.FlagRestricted
	exportable := attest.EnvKeyTemplate()
	exportable.Attributes &^= tpm2.FlagFixedTPM | tpm2.FlagFixedParent
	withPolicy := attest.EnvKeyTemplate()
	withPolicy.AuthPolicy = make([]byte, 32)
	sha1Names := attest.EnvKeyTemplate()
	sha1Names.NameAlg = tpm2.AlgSHA1
	p384 := attest.EnvKeyTemplate()
	p384.ECCParameters.CurveID = tpm2.CurveNISTP384
	p384.ECCParameters.Sign.Hash = tpm2.AlgSHA384
	rsaKey := tpm2.Public{
		Type: tpm2.AlgRSA, NameAlg: tpm2.AlgSHA256, Attributes: attest.EnvKeyAttributes,
		RSAParameters: &tpm2.RSAParams{Sign: &tpm2.SigScheme{Alg: tpm2.AlgRSASSA, Hash: tpm2.AlgSHA256}, KeyBits: 2048},
	}
	hmacKey := tpm2.Public{
		Type: tpm2.AlgKeyedHash, NameAlg: tpm2.AlgSHA256, Attributes: attest.EnvKeyAttributes,
		KeyedHashParameters: &tpm2.KeyedHashParams{Alg: tpm2.AlgHMAC, Hash: tpm2.AlgSHA256},
	}
	null := func(tmpl tpm2.Public) func(*testing.T, io.ReadWriter) tpmKey {
		return func(t *testing.T, rw io.ReadWriter) tpmKey { return createPrimary(t, rw, tpm2.HandleNull, tmpl) }
	}

	tests := []struct {
		name string
		ak   func(rw io.ReadWriter) *client.Key
		// env is the key the TPM certifies (default: an environment key).
		env func(*testing.T, io.ReadWriter) tpmKey
		// claim: the evidence names another (software) P-256 key as its
		// environment key, bound by the nonce and the env-key event.
		claim bool
		edit  func(t *testing.T, rw io.ReadWriter, ak *client.Key, env tpmKey, ev *attest.Evidence, p *attest.Policy)
		want  error
		msg   string
	}{
		{name: "genuine", want: nil},
		{name: "environment key in the owner hierarchy survives reboot", env: func(t *testing.T, rw io.ReadWriter) tpmKey {
			return newKey(t, rw, tpm2.HandleOwner, attest.EnvKeyTemplate())
		}, want: attest.ErrKeyNotCertified},
		{name: "environment key exportable", env: func(t *testing.T, rw io.ReadWriter) tpmKey {
			return newKey(t, rw, tpm2.HandleNull, exportable)
		}, want: attest.ErrKeyNotCertified},
		// A policy session could let something other than the key's
		// holder use it.
		{name: "environment key with an auth policy", env: null(withPolicy), want: attest.ErrKeyNotCertified, msg: "no auth policy"},
		{name: "environment key with SHA-1 names", env: null(sha1Names), want: attest.ErrKeyNotCertified, msg: "SHA-256 names"},
		// Genuine TPM keys of the right attributes and hierarchy that are
		// not P-256 signing keys, presented as a P-256 environment key.
		{name: "certified key is an HMAC key", env: null(hmacKey), claim: true, want: attest.ErrKeyNotCertified, msg: "environment key:"},
		{name: "certified key is P-384", env: null(p384), claim: true, want: attest.ErrKeyNotCertified, msg: "not P-256"},
		{name: "certified key is RSA", env: null(rsaKey), claim: true, want: attest.ErrKeyNotCertified, msg: "not P-256"},
		// A modified agent that keeps a software key and has the TPM
		// certify some other key.
		{name: "certified key is not the environment key", claim: true, want: attest.ErrKeyNotCertified, msg: "not the evidence's environment key"},
		{name: "certification for another challenge", edit: func(t *testing.T, rw io.ReadWriter, ak *client.Key, env tpmKey, ev *attest.Evidence, _ *attest.Policy) {
			ev.TPM.CertifyInfo, ev.TPM.CertifySignature = certify(t, rw, ak, env, nonce(t))
		}, want: attest.ErrNonceMismatch, msg: "certification"},
		// The quote by a trusted RSA AK, the certification an ECDSA
		// signature: by some other key.
		{name: "RSA AK", edit: func(t *testing.T, rw io.ReadWriter, _ *client.Key, _ tpmKey, ev *attest.Evidence, p *attest.Policy) {
			rsaAK, err := client.AttestationKeyRSA(rw)
			if err != nil {
				t.Fatal(err)
			}
			defer rsaAK.Close()
			p.TrustedAKs = []crypto.PublicKey{rsaAK.PublicKey()}
			att, err := rsaAK.Attest(client.AttestOpts{Nonce: tpmNonce(ev), TCGEventLog: attesttest.BootLog(), SkipTeeAttestation: true})
			if err != nil {
				t.Fatal(err)
			}
			if ev.TPM.Attestation, err = proto.Marshal(att); err != nil {
				t.Fatal(err)
			}
		}, want: attest.ErrKeyNotCertified, msg: "by an ECC AK"},
		// A quote over fewer PCRs than the reference image lists.
		{name: "reference PCR not quoted", edit: func(t *testing.T, _ io.ReadWriter, ak *client.Key, _ tpmKey, ev *attest.Evidence, p *attest.Policy) {
			replaceQuote(t, ev, ak, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14})
			p.Reference.Images[0].PCRs[15] = make(attest.Hex, 32)
		}, want: attest.ErrReferenceMismatch, msg: "PCR 15 not quoted"},
		{name: "lifecycle PCR not quoted", edit: func(t *testing.T, _ io.ReadWriter, ak *client.Key, _ tpmKey, ev *attest.Evidence, _ *attest.Policy) {
			replaceQuote(t, ev, ak, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14})
		}, want: attest.ErrCELReplay, msg: "missing from the quote"},
		// A trusted but unrestricted key can sign any digest, including a
		// forged TPMS_ATTEST: such an "AK" must be refused whatever it signed.
		{name: "unrestricted AK could sign forged quotes", ak: func(rw io.ReadWriter) *client.Key {
			return newKey(t, rw, tpm2.HandleEndorsement, unrestricted)
		}, want: attest.ErrUntrustedAK},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			sim := attesttest.Simulator(t)
			defer sim.Close()
			p, err := attesttest.Policy(sim)
			if err != nil {
				t.Fatal(err)
			}
			ak, err := attest.OpenAK(sim)
			if err != nil {
				t.Fatal(err)
			}
			defer ak.Close()
			var env tpmKey = newKey(t, sim, tpm2.HandleNull, attest.EnvKeyTemplate())
			if tc.env != nil {
				env = tc.env(t, sim)
			}
			var claimed []byte
			if tc.claim {
				claimed = otherEnvKeySPKI(t)
			}
			ch := attest.AdmissionChallenge(nonce(t))
			ev := craftEvidenceClaiming(t, sim, ak, env, claimed, ch)
			if tc.edit != nil {
				tc.edit(t, sim, ak, env, ev, p)
			}
			if tc.ak != nil {
				// go-tpm-tools refuses to quote with an unrestricted key, so
				// present that key as the AK of otherwise genuine evidence.
				fake := tc.ak(sim)
				p.TrustedAKs = []crypto.PublicKey{fake.PublicKey()}
				pub, err := fake.PublicArea().Encode()
				if err != nil {
					t.Fatal(err)
				}
				editAttestation(t, ev, func(a *pb.Attestation) { a.AkPub = pub })
			}
			_, err = attest.Verify(ev, ch, p)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: got %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Verify: got %q, want the %q check", err, tc.msg)
			}
			if tc.ak != nil {
				// Inspected with no AK root, the AK's attributes are still
				// checked (a quote by it would prove nothing even then).
				in := attest.InspectEvidence(ev, attest.InspectOptions{Policy: &attest.Policy{AllowSoftwareTPMUnsafe: true}})
				if !errors.Is(in.Err, tc.want) || in.Checks[len(in.Checks)-1].Name != "attestation key" {
					t.Fatalf("Inspect without AK roots: got %v, want %v (%+v)", in.Err, tc.want, in.Checks)
				}
			}
		})
	}
}

// replaceQuote replaces the SHA-256 quote by one of ak over pcrs only.
func replaceQuote(t *testing.T, ev *attest.Evidence, ak *client.Key, pcrs []int) {
	t.Helper()
	q, err := ak.Quote(tpm2.PCRSelection{Hash: tpm2.AlgSHA256, PCRs: pcrs}, tpmNonce(ev))
	if err != nil {
		t.Fatal(err)
	}
	editAttestation(t, ev, func(a *pb.Attestation) {
		for i, old := range a.Quotes {
			if old.GetPcrs().GetHash() == q.GetPcrs().GetHash() {
				a.Quotes[i] = q
			}
		}
	})
}

// tpmNonce is the quote nonce evidence must carry for the challenge the
// crafting tests use: it is read back from the certification.
func tpmNonce(ev *attest.Evidence) []byte {
	ad, err := tpm2.DecodeAttestationData(ev.TPM.CertifyInfo)
	if err != nil {
		panic(err)
	}
	return ad.ExtraData
}

// TestAKFromAnotherTPM: evidence from one TPM, policy enrolling another
// TPM's AK (same boot, same reference values).
func TestAKFromAnotherTPM(t *testing.T) {
	m := attesttest.SimulatedMachine(t)
	ch := attest.AdmissionChallenge(nonce(t))
	ev, err := m.Collector.Collect(ch)
	if err != nil {
		t.Fatal(err)
	}
	m.Collector.Close()
	m.TPM.Close()

	other := attesttest.Simulator(t) // manufactured afresh: new endorsement seed
	p, err := attesttest.Policy(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := attest.Verify(ev, ch, p); !errors.Is(err, attest.ErrUntrustedAK) {
		t.Fatalf("Verify: got %v, want ErrUntrustedAK", err)
	}
	// Control: the same evidence under the first machine's policy passes.
	if _, err := attest.Verify(ev, ch, m.Policy); err != nil {
		t.Fatalf("control: %v", err)
	}
}

func TestLifecycle(t *testing.T) {
	const build = "octo/app/actions/runs/42/attempts/1/jobs/build"
	tests := []struct {
		name   string
		extend []attest.Event
		want   error
		msg    string
		check  func(*testing.T, *attest.Lifecycle)
	}{
		{name: "job start, end, teardown", extend: []attest.Event{
			attest.JobStartEvent(build), attest.JobEndEvent(build), attest.TeardownEvent("job completed"),
		}, check: func(t *testing.T, lc *attest.Lifecycle) {
			if lc.BuildID != build || !lc.JobEnded || !lc.TornDown || len(lc.Events) != 5 {
				t.Errorf("lifecycle %+v", lc)
			}
		}},
		{name: "idle teardown", extend: []attest.Event{attest.TeardownEvent("idle")}, check: func(t *testing.T, lc *attest.Lifecycle) {
			if lc.BuildID != "" || !lc.TornDown {
				t.Errorf("lifecycle %+v", lc)
			}
		}},
		{name: "teardown with no reason", extend: []attest.Event{attest.TeardownEvent("")}, check: func(t *testing.T, lc *attest.Lifecycle) {
			if !lc.TornDown {
				t.Errorf("lifecycle %+v", lc)
			}
		}},
		{name: "second job on a single-use environment", extend: []attest.Event{
			attest.JobStartEvent(build), attest.JobStartEvent("octo/app/actions/runs/43/attempts/1/jobs/build"),
		}, want: attest.ErrCELOrder, msg: "event 3 (job-start) after job-start"},
		{name: "job end twice", extend: []attest.Event{
			attest.JobStartEvent(build), attest.JobEndEvent(build), attest.JobEndEvent(build),
		}, want: attest.ErrCELOrder, msg: "event 4 (job-end) after job-end"},
		{name: "teardown twice", extend: []attest.Event{
			attest.TeardownEvent("idle"), attest.TeardownEvent("idle"),
		}, want: attest.ErrCELOrder, msg: "event 3 (teardown) after teardown"},
		{name: "job end for another build", extend: []attest.Event{
			attest.JobStartEvent(build), attest.JobEndEvent("octo/other/actions/runs/1/attempts/1/jobs/x"),
		}, want: attest.ErrCELOrder},
		{name: "job after teardown", extend: []attest.Event{
			attest.TeardownEvent("idle"), attest.JobStartEvent(build),
		}, want: attest.ErrCELOrder},
		{name: "job end without start", extend: []attest.Event{attest.JobEndEvent(build)}, want: attest.ErrCELOrder},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := attesttest.SimulatedMachine(t)
			for _, e := range tc.extend {
				if err := m.Collector.Extend(e); err != nil {
					t.Fatal(err)
				}
			}
			ch := attest.StatementChallenge(nonce(t))
			ev, err := m.Collector.Collect(ch)
			if err != nil {
				t.Fatal(err)
			}
			c, err := attest.Verify(ev, ch, m.Policy)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify: got %v, want %v", err, tc.want)
			}
			if tc.msg != "" && !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("Verify: got %q, want %q", err, tc.msg)
			}
			if tc.check != nil {
				tc.check(t, c.Lifecycle)
			}
		})
	}
}
