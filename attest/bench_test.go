package attest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"testing"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/internal/benchratio"
)

// ecdsaVerifyBaseline returns one raw ECDSA P-256 verification: the unit the
// target is expressed in (Verify <= 5x).
func ecdsaVerifyBaseline() func() {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	d := sha256.Sum256([]byte("x"))
	sig, err := ecdsa.SignASN1(rand.Reader, k, d[:])
	if err != nil {
		panic(err)
	}
	return func() {
		if !ecdsa.VerifyASN1(&k.PublicKey, d[:], sig) {
			panic("baseline verify failed")
		}
	}
}

// BenchmarkVerify verifies TPM evidence with a real 34 KiB RHEL 8 event log
// (82 events, Secure Boot databases with certificates) and a lifecycle log.
func BenchmarkVerify(b *testing.B) {
	m := attesttest.SimulatedMachine(b)
	ch := attest.AdmissionChallenge(make([]byte, 32))
	ev, err := m.Collector.Collect(ch)
	if err != nil {
		b.Fatal(err)
	}
	enc, err := ev.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(enc)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := attest.Verify(ev, ch, m.Policy); err != nil {
			b.Fatal(err)
		}
	}
	benchratio.Report(b, "ecdsa-verify", ecdsaVerifyBaseline())
}

// BenchmarkDecodeAndVerify adds decoding the JSON evidence, as the gate does.
func BenchmarkDecodeAndVerify(b *testing.B) {
	m := attesttest.SimulatedMachine(b)
	ch := attest.AdmissionChallenge(make([]byte, 32))
	ev, err := m.Collector.Collect(ch)
	if err != nil {
		b.Fatal(err)
	}
	enc, err := ev.Encode()
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		ev, err := attest.DecodeEvidence(enc)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := attest.Verify(ev, ch, m.Policy); err != nil {
			b.Fatal(err)
		}
	}
	benchratio.Report(b, "ecdsa-verify", ecdsaVerifyBaseline())
}

// BenchmarkCollect is one evidence collection on the in-process simulator:
// quotes over every PCR bank, TPM2_Certify, log encoding.
func BenchmarkCollect(b *testing.B) {
	m := attesttest.SimulatedMachine(b)
	ch := attest.AdmissionChallenge(make([]byte, 32))
	for b.Loop() {
		if _, err := m.Collector.Collect(ch); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCold is BenchmarkVerify without the boot-log cache: every
// verification parses and extracts the event log, as for a machine whose
// firmware log the gate has not seen before.
func BenchmarkVerifyCold(b *testing.B) {
	attest.SetBootLogCache(false)
	defer attest.SetBootLogCache(true)
	m := attesttest.SimulatedMachine(b)
	ch := attest.AdmissionChallenge(make([]byte, 32))
	ev, err := m.Collector.Collect(ch)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := attest.Verify(ev, ch, m.Policy); err != nil {
			b.Fatal(err)
		}
	}
	benchratio.Report(b, "ecdsa-verify", ecdsaVerifyBaseline())
}

// BenchmarkVerifyTEE verifies TPM evidence carrying each TEE part, to show
// what the hardware report adds to a TPM verification: x-tpm-verify is the
// ratio to BenchmarkVerify's work (plain TPM evidence, same event log).
func BenchmarkVerifyTEE(b *testing.B) {
	ch := attest.AdmissionChallenge(make([]byte, 32))
	m := attesttest.SimulatedMachine(b)
	plain, err := m.Collector.Collect(ch)
	if err != nil {
		b.Fatal(err)
	}
	plainPolicy := m.Policy
	m.Collector.Close()
	m.TPM.Close()
	tdxQuote, err := os.ReadFile("testdata/tdx/cos-113-tdx-quote.dat")
	if err != nil {
		b.Fatal(err)
	}
	for _, shape := range []struct {
		name string
		open func(testing.TB) (*attest.TPMCollector, *attest.Policy)
	}{
		{"sev-snp-vtpm", func(tb testing.TB) (*attest.TPMCollector, *attest.Policy) {
			return attesttest.SimulatedSNPTPM(tb, attesttest.NewSNPHost(tb))
		}},
		{"azure-cvm", func(tb testing.TB) (*attest.TPMCollector, *attest.Policy) {
			c, p, err := attesttest.AzureCVM(tb, attesttest.NewSNPHost(tb), nil)
			if err != nil {
				tb.Fatal(err)
			}
			return c, p
		}},
		{"tdx-vtpm", func(tb testing.TB) (*attest.TPMCollector, *attest.Policy) {
			s, err := attesttest.NewTDXSigner(tdxQuote)
			if err != nil {
				tb.Fatal(err)
			}
			return attesttest.SimulatedTDXVTPM(tb, s, nil)
		}},
	} {
		b.Run(shape.name, func(b *testing.B) {
			c, p := shape.open(b)
			if err := attesttest.BootAgent(c); err != nil {
				b.Fatal(err)
			}
			ev, err := c.Collect(ch)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if claims, err := attest.Verify(ev, ch, p); err != nil || claims.Level != 3 {
					b.Fatal(claims, err)
				}
			}
			benchratio.Report(b, "tpm-verify", func() {
				if _, err := attest.Verify(plain, ch, plainPolicy); err != nil {
					panic(err)
				}
			})
		})
	}
}
