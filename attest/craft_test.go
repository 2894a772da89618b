package attest_test

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
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

// craftEvidence builds evidence the way the collector does, but with keys and
// lifecycle events the test chooses, to show what Verify makes of evidence a
// modified agent could produce on a genuine TPM.
func craftEvidence(t *testing.T, rw io.ReadWriter, ak, env *client.Key, ch attest.Challenge, events ...gecel.Content) *attest.Evidence {
	t.Helper()
	hk, err := attest.NewHPKEKey()
	if err != nil {
		t.Fatal(err)
	}
	envSPKI, err := x509.MarshalPKIXPublicKey(env.PublicKey())
	if err != nil {
		t.Fatal(err)
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
	info, sig, err := tpm2.CertifyEx(rw, "", "", env.Handle(), ak.Handle(), nonce, tpm2.SigScheme{Alg: tpm2.AlgECDSA, Hash: tpm2.AlgSHA256})
	if err != nil {
		t.Fatal(err)
	}
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

	tests := []struct {
		name string
		ak   func(rw io.ReadWriter) *client.Key
		env  func(rw io.ReadWriter) *client.Key
		want error
	}{
		{name: "genuine", want: nil},
		{name: "environment key in the owner hierarchy survives reboot", env: func(rw io.ReadWriter) *client.Key {
			return newKey(t, rw, tpm2.HandleOwner, attest.EnvKeyTemplate())
		}, want: attest.ErrKeyNotCertified},
		{name: "environment key exportable", env: func(rw io.ReadWriter) *client.Key {
			return newKey(t, rw, tpm2.HandleNull, exportable)
		}, want: attest.ErrKeyNotCertified},
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
			env := newKey(t, sim, tpm2.HandleNull, attest.EnvKeyTemplate())
			if tc.env != nil {
				env = tc.env(sim)
			}
			ch := attest.AdmissionChallenge(nonce(t))
			ev := craftEvidence(t, sim, ak, env, ch)
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
		{name: "second job on a single-use environment", extend: []attest.Event{
			attest.JobStartEvent(build), attest.JobStartEvent("octo/app/actions/runs/43/attempts/1/jobs/build"),
		}, want: attest.ErrCELOrder},
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
			if tc.check != nil {
				tc.check(t, c.Lifecycle)
			}
		})
	}
}

// TestUnknownLifecycleEvent: a genuine TPM, an agent that extends an event
// type this verifier does not know.
func TestUnknownLifecycleEvent(t *testing.T) {
	sim := attesttest.Simulator(t)
	p, err := attesttest.Policy(sim)
	if err != nil {
		t.Fatal(err)
	}
	ak, err := attest.OpenAK(sim)
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close()
	env := newKey(t, sim, tpm2.HandleNull, attest.EnvKeyTemplate())
	ch := attest.AdmissionChallenge(nonce(t))
	ev := craftEvidence(t, sim, ak, env, ch,
		attest.AgentStartEvent(attesttest.AgentDigest),
		gecel.FakeTlv{EventType: gecel.FakeEvent1, EventContent: []byte("debug shell opened")})
	if _, err := attest.Verify(ev, ch, p); !errors.Is(err, attest.ErrUnknownEvent) {
		t.Fatalf("Verify: got %v, want ErrUnknownEvent", err)
	}
}
