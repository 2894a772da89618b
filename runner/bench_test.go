package runner_test

import (
	"context"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/attest/attesttest"
	"github.com/attested-runner/attested-runner/runner"
)

// BenchmarkStartToListening measures agent start -> runner listening: boot
// events, key creation, challenge, evidence (simulator TPM), admission
// (gate and fake GitHub on loopback, JIT minted), certificate check, runner
// process started. Reported as ms-to-listening; ns/op also includes the
// teardown that follows.
func BenchmarkStartToListening(b *testing.B) {
	sim := attesttest.Simulator(b)
	policy, err := attesttest.Policy(sim)
	if err != nil {
		b.Fatal(err)
	}
	w := newWorldB(b, policy)
	var total time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
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
		cfg := w.cfg
		cfg.Collector = c
		ctx, cancel := context.WithCancel(context.Background())
		var listening time.Time
		cfg.OnListening = func(string) { listening = time.Now(); cancel() }
		a, err := runner.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		out := a.Run(ctx)
		if listening.IsZero() {
			b.Fatalf("never listening: %+v", out)
		}
		total += listening.Sub(start)
		n++
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(n), "ms-to-listening")
}
