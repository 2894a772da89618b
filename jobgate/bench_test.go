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
	"github.com/attested-runner/attested-runner/internal/pgtest"
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
		b.Run(name, func(b *testing.B) { benchAdmissions(b, name, "bbolt") })
	}
}

// BenchmarkAdmissionStores is BenchmarkAdmissions/instant on each store:
// one gate on bbolt, one gate on PostgreSQL, two gates (two pools, two
// HTTP servers, clients split between them) on one PostgreSQL database, a
// throwaway cluster on this machine with fsync on. x-bbolt-rate and
// x-bbolt-p99 are admissions/s and p99 latency over the bbolt gate's,
// measured in the same process.
func BenchmarkAdmissionStores(b *testing.B) {
	for _, store := range []string{"bbolt", "postgres", "postgres-2-gates"} {
		b.Run(store, func(b *testing.B) { benchAdmissions(b, "instant", store) })
	}
}

// bboltBaseline is the bbolt gate's result in this process, for ratios.
var bboltBaseline struct {
	sync.Mutex
	rate, p99 float64
}

type admissionStats struct {
	admitted  int
	wall, cpu time.Duration
	lat       []time.Duration
}

func (s *admissionStats) rate() float64 { return float64(s.admitted) / s.wall.Seconds() }

func (s *admissionStats) quantile(q float64) time.Duration {
	sort.Slice(s.lat, func(i, j int) bool { return s.lat[i] < s.lat[j] })
	return s.lat[int(float64(len(s.lat))*q)]
}

func benchAdmissions(b *testing.B, registry, store string) {
	const clients, batch = 32, 300
	if registry == "instant" && store != "bbolt" {
		bboltBaseline.Lock()
		measured := bboltBaseline.rate > 0
		bboltBaseline.Unlock()
		if !measured {
			// Run alone: measure the bbolt gate first, in this process
			// (before this run takes the one simulator).
			testing.Benchmark(func(b *testing.B) { benchAdmissions(b, "instant", "bbolt") })
		}
	}
	sim := attesttest.Simulator(b)
	policy, err := attesttest.Policy(sim)
	if err != nil {
		b.Fatal(err)
	}
	var reg jobgate.Registry = &instantRegistry{}
	if registry == "fake-github" {
		reg = fakeRegistry(b)
	}
	gates := benchGates(b, store, reg, policy)
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
			// Request i goes to gate i%len(gates), which issues its nonce.
			ch, err := gates[i%len(gates)].Challenge(ctx)
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
	admit := func(reqs []*gateapi.AdmitRequest, st *admissionStats) {
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
					_, err := gates[i%len(gates)].Admit(ctx, reqs[i])
					d := time.Since(t0)
					mu.Lock()
					if err == nil {
						st.admitted++
						st.lat = append(st.lat, d)
					} else {
						b.Error(err)
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		st.wall += time.Since(start)
		var ru1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		st.cpu += time.Duration(ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano())
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
	for i, r := range seq {
		if _, err := gates[i%len(gates)].Admit(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	seqCost := time.Since(seqStart) / time.Duration(len(seq))

	var st admissionStats
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		reqs := prepare(batch)
		b.StartTimer()
		admit(reqs, &st)
	}
	if st.admitted == 0 {
		b.Fatal("nothing admitted")
	}
	rate, p50, p99 := st.rate(), st.quantile(0.5), st.quantile(0.99)
	b.ReportMetric(rate, "admissions/s")
	b.ReportMetric(float64(p50.Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p99.Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(seqCost)/float64(verifyCost), "x-verify")
	b.ReportMetric(float64(st.cpu.Microseconds())/float64(st.admitted)/1000, "cpu-ms/admission")
	if registry == "instant" {
		bboltBaseline.Lock()
		if store == "bbolt" {
			bboltBaseline.rate, bboltBaseline.p99 = rate, float64(p99)
		} else if bboltBaseline.rate > 0 {
			b.ReportMetric(rate/bboltBaseline.rate, "x-bbolt-rate")
			b.ReportMetric(float64(p99)/bboltBaseline.p99, "x-bbolt-p99")
		}
		bboltBaseline.Unlock()
	}
	b.Logf("%s, %s: %d admissions in %s (CPU %s of this process, clients included); verify %s, sequential admission %s",
		registry, store, st.admitted, st.wall, st.cpu, verifyCost, seqCost)
}

// benchGates starts the gates of one benchmark: one on bbolt, one on
// PostgreSQL, or two on one PostgreSQL database. Each has its own HTTP
// server; the returned clients talk to them.
func benchGates(b *testing.B, store string, reg jobgate.Registry, policy *attest.Policy) []*gateapi.Client {
	b.Helper()
	var stores []jobgate.Store
	switch store {
	case "bbolt":
		s, err := jobgate.OpenBoltStore(filepath.Join(b.TempDir(), "gate.db"))
		if err != nil {
			b.Fatal(err)
		}
		stores = append(stores, s)
	case "postgres", "postgres-2-gates":
		dsn := pgtest.DB(b)
		for range map[string]int{"postgres": 1, "postgres-2-gates": 2}[store] {
			s, err := jobgate.OpenPostgresStore(context.Background(), jobgate.PostgresOptions{DSN: dsn})
			if err != nil {
				b.Fatal(err)
			}
			stores = append(stores, s)
		}
	default:
		b.Fatalf("unknown store %s", store)
	}
	signer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var clients []*gateapi.Client
	for _, s := range stores {
		b.Cleanup(func() { s.Close() })
		g, err := jobgate.New(jobgate.Options{
			Config: &jobgate.Config{GateID: "g", BuilderID: "b", GitHub: jobgate.GitHubConfig{Org: "octo-org", Labels: []string{"self-hosted"}},
				TTL: jobgate.TTLConfig{Nonce: jobgate.Duration(time.Hour)}},
			Store: s, Registry: reg, Policy: policy, Signer: signer,
		})
		if err != nil {
			b.Fatal(err)
		}
		srv := httptest.NewServer(g.Handler())
		b.Cleanup(srv.Close)
		clients = append(clients, &gateapi.Client{BaseURL: srv.URL})
	}
	return clients
}
