package jobgate_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http/httptest"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// instantRegistry mints instantly: the gate's own cost, without GitHub's.
type instantRegistry struct{ n atomic.Int64 }

func (r *instantRegistry) Mint(_ context.Context, name string, _ []string, _ string) (int64, string, error) {
	return r.n.Add(1), "eyJmYWtlIjoiaml0In0=", nil
}
func (r *instantRegistry) Remove(context.Context, int64) error                  { return nil }
func (r *instantRegistry) List(context.Context) ([]jobgate.GitHubRunner, error) { return nil, nil }

// BenchmarkAdmissions admits distinct environments (each a fresh key on a
// reset simulator, evidence prepared outside the timed part) against a
// gate with the embedded store, through its HTTP API on loopback, with 32
// concurrent clients. Two registries: "instant" (GitHub excluded, the
// gate's own throughput) and "fake-github" (the fake GitHub on loopback,
// which generates an RSA key per runner: GitHub-side cost on our 2 cores).
// Reports admissions/s, p50/p99 latency, and x-verify: one sequential
// admission's latency over one attest.Verify of the same evidence.
func BenchmarkAdmissions(b *testing.B) {
	for _, name := range []string{"instant", "fake-github"} {
		b.Run(name, func(b *testing.B) { benchAdmissions(b, name) })
	}
}

func benchAdmissions(b *testing.B, registry string) {
	const clients, batch = 32, 300
	sim := attesttest.Simulator(b)
	policy, err := attesttest.Policy(sim)
	if err != nil {
		b.Fatal(err)
	}
	var reg jobgate.Registry = &instantRegistry{}
	if registry == "fake-github" {
		reg = fakeRegistry(b)
	}
	store, err := jobgate.OpenBoltStore(filepath.Join(b.TempDir(), "gate.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	g, err := jobgate.New(jobgate.Options{
		Config: &jobgate.Config{GateID: "g", BuilderID: "b", GitHub: jobgate.GitHubConfig{Org: "octo-org", Labels: []string{"self-hosted"}},
			TTL: jobgate.TTLConfig{Nonce: jobgate.Duration(time.Hour)}},
		Store: store, Registry: reg, Policy: policy, Signer: signer,
	})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler())
	defer srv.Close()
	client := &gateapi.Client{BaseURL: srv.URL}
	ctx := context.Background()

	prepare := func(n int) []*gateapi.AdmitRequest {
		reqs := make([]*gateapi.AdmitRequest, n)
		for i := range reqs {
			if err := sim.Reset(); err != nil {
				b.Fatal(err)
			}
			if err := attesttest.ReplayBootLog(sim, attesttest.BootLog()); err != nil {
				b.Fatal(err)
			}
			c, err := attest.NewTPMCollector(sim, attest.TPMOptions{EventLog: func() ([]byte, error) { return attesttest.BootLog(), nil }, SoftwareTPM: true})
			if err != nil {
				b.Fatal(err)
			}
			if err := attesttest.BootAgent(c); err != nil {
				b.Fatal(err)
			}
			ch, err := client.Challenge(ctx)
			if err != nil {
				b.Fatal(err)
			}
			ev, err := c.Collect(attest.AdmissionChallenge(ch.Nonce))
			if err != nil {
				b.Fatal(err)
			}
			enc, _ := json.Marshal(ev)
			reqs[i] = &gateapi.AdmitRequest{Nonce: ch.Nonce, Evidence: enc}
			c.Close()
		}
		return reqs
	}

	// Baseline: one Verify of prepared evidence, and one sequential admission.
	one := prepare(1)[0]
	ev, err := attest.DecodeEvidence(one.Evidence)
	if err != nil {
		b.Fatal(err)
	}
	verifyStart := time.Now()
	const verifies = 50
	for range verifies {
		if _, err := attest.Verify(ev, attest.AdmissionChallenge(one.Nonce), policy); err != nil {
			b.Fatal(err)
		}
	}
	verifyCost := time.Since(verifyStart) / verifies
	seq := prepare(10)
	seqStart := time.Now()
	for _, r := range seq {
		if _, err := client.Admit(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	seqCost := time.Since(seqStart) / time.Duration(len(seq))

	var lat []time.Duration
	var admitted int
	var wall, cpu time.Duration
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		reqs := prepare(batch)
		b.StartTimer()
		var mu sync.Mutex
		var wg sync.WaitGroup
		next := atomic.Int64{}
		var ru0 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					i := int(next.Add(1)) - 1
					if i >= len(reqs) {
						return
					}
					t0 := time.Now()
					_, err := client.Admit(ctx, reqs[i])
					d := time.Since(t0)
					mu.Lock()
					if err == nil {
						admitted++
						lat = append(lat, d)
					} else {
						b.Error(err)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		wall += time.Since(start)
		var ru1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		cpu += time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
	}
	if admitted == 0 {
		b.Fatal("nothing admitted")
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(admitted)/wall.Seconds(), "admissions/s")
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(seqCost)/float64(verifyCost), "x-verify")
	b.ReportMetric(float64(cpu.Microseconds())/float64(admitted)/1000, "cpu-ms/admission")
	b.Logf("%s: %d admissions in %s (CPU %s, clients and fake GitHub included); verify %s, sequential admission %s", registry, admitted, wall, cpu, verifyCost, seqCost)
}
