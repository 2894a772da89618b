package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"os"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"
)

// loadResult is what one load round measured.
type loadResult struct {
	agents int
	// rate is admissions per second, from the first challenge to the last
	// admission answer.
	rate float64
	// latencies: per agent, from its challenge request to the gate's
	// admission answer (evidence collection on its TPM included).
	p50, p99, max time.Duration
}

func (r loadResult) String() string {
	return fmt.Sprintf("%d agents: %.1f admissions/s, admission latency p50 %s, p99 %s, max %s",
		r.agents, r.rate, r.p50.Round(time.Millisecond), r.p99.Round(time.Millisecond), r.max.Round(time.Millisecond))
}

// runLoad starts n agents at once, each on its own machine (one swtpm
// process each), all enrolled in one gate, with n jobs queued. It checks
// the invariants and returns the measurements:
//   - every agent is admitted once, runs exactly one job and deregisters;
//   - no double admission: runner names and environment keys are unique,
//     GitHub minted exactly as many runners as the gate admitted;
//   - no lost audit record: the audit log holds one admission decision per
//     admission request and one deregistration per deregistration request
//     that reached the gate, and its hash chain verifies.
func runLoad(t testing.TB, n int) loadResult {
	e, ms := newEnv(t, envOptions{machines: n})
	for i := range n {
		e.queue(int64(10000+i), fakeStep{Name: "build", Run: "echo job " + strconv.Itoa(i)})
	}
	agents := make([]*harness.Agent, n)
	t0 := time.Now()
	for i, m := range ms {
		agents[i] = e.startAgent(harness.AgentOptions{Machine: m})
	}
	t.Logf("started %d agents in %s", n, time.Since(t0))
	var wg sync.WaitGroup
	exits := make([]*harness.AgentExit, n)
	for i, a := range agents {
		wg.Add(1)
		go func() { defer wg.Done(); exits[i], _ = a.Wait(e.ctx) }()
	}
	wg.Wait()
	runners := map[string]bool{}
	for i, x := range exits {
		if x == nil || x.Code != 0 {
			t.Fatalf("agent %d: %+v", i, x)
		}
		runners[agents[i].RunnerName()] = true
	}
	if len(runners) != n {
		t.Fatalf("%d distinct runner names for %d agents", len(runners), n)
	}
	jobRunners := map[string]bool{}
	for _, j := range e.GitHub.Jobs() {
		if j.Result != fakegithub.ResultSucceeded || !runners[j.RunnerName] || jobRunners[j.RunnerName] {
			t.Fatalf("job %d: %s on %q", j.Job.RunID, j.Result, j.RunnerName)
		}
		jobRunners[j.RunnerName] = true
	}
	e.noRunnersLeft()

	admits := e.Proxy.Exchanges(gateapi.PathAdmit)
	deregs := e.Proxy.Exchanges(gateapi.PathDeregister)
	recs := e.audit()
	accepted := harness.AuditFilter(recs, "admit", "accepted")
	names, keys := map[string]bool{}, map[string]bool{}
	for _, r := range accepted {
		if names[r.RunnerName] || keys[r.KeyDigest] {
			t.Fatalf("double admission of %s / %s", r.RunnerName, r.KeyDigest)
		}
		names[r.RunnerName], keys[r.KeyDigest] = true, true
	}
	if len(accepted) != n || e.GitHub.JITMints() != n {
		t.Fatalf("%d admissions, %d runners minted, %d agents", len(accepted), e.GitHub.JITMints(), n)
	}
	if got, want := len(harness.AuditFilter(recs, "admit", "")), reached(admits); got != want {
		t.Fatalf("%d admission records for %d admission requests", got, want)
	}
	// Every deregistration is one decision and one record, also one that
	// finds the runner already gone (the reconcile loop saw GitHub delete
	// the ephemeral runner first): it changes nothing, is answered
	// "already removed" and audited as a no-op.
	if got, want := len(harness.AuditFilter(recs, "deregister", "")), reached(deregs); got != want {
		t.Fatalf("%d deregistration records for %d deregistration decisions", got, want)
	}
	if got, want := len(harness.AuditFilter(recs, "deregister", "noop")), noops(t, deregs); got != want {
		t.Fatalf("%d no-op deregistration records for %d answers that removed nothing", got, want)
	}

	// Latency per agent: its challenge request to the answer to the
	// admission that used that nonce.
	issued := map[string]time.Time{}
	for _, x := range e.Proxy.Exchanges(gateapi.PathChallenge) {
		var ch gateapi.ChallengeResponse
		if x.Status == http.StatusOK && json.Unmarshal(x.Response, &ch) == nil {
			issued[string(ch.Nonce)] = x.Start
		}
	}
	var lat []time.Duration
	var first, last time.Time
	for _, x := range admits {
		if x.Status != http.StatusOK {
			continue
		}
		var req gateapi.AdmitRequest
		if err := json.Unmarshal(x.Request, &req); err != nil {
			t.Fatal(err)
		}
		start, ok := issued[string(req.Nonce)]
		if !ok {
			t.Fatalf("admission with a nonce the proxy never saw issued")
		}
		lat = append(lat, x.End.Sub(start))
		if first.IsZero() || start.Before(first) {
			first = start
		}
		if x.End.After(last) {
			last = x.End
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[int(math.Ceil(p*float64(len(lat))))-1] }
	return loadResult{agents: n, rate: float64(len(lat)) / last.Sub(first).Seconds(), p50: pct(0.5), p99: pct(0.99), max: lat[len(lat)-1]}
}

// reached counts the requests the gate answered (not those the proxy could
// not deliver).
func reached(xs []harness.Exchange) int {
	n := 0
	for _, x := range xs {
		if x.Status != 0 {
			n++
		}
	}
	return n
}

// noops counts deregistrations answered "nothing to do".
func noops(t testing.TB, xs []harness.Exchange) int {
	n := 0
	for _, x := range xs {
		var resp gateapi.DeregisterResponse
		if x.Status == http.StatusOK {
			if err := json.Unmarshal(x.Response, &resp); err != nil {
				t.Fatal(err)
			}
			if !resp.Removed {
				n++
			}
		}
	}
	return n
}

// TestLoadConcurrentAgents is the short load run of the default suite: six
// agents, six TPMs, one gate, all at once; it asserts the invariants of
// runLoad and logs the measurements (no timing assertion).
func TestLoadConcurrentAgents(t *testing.T) {
	r := runLoad(t, 6)
	t.Log(r)
}

// BenchmarkLoad runs ATTESTED_LOAD_AGENTS (default 24) agents at once
// against one gate and reports admissions/s and the p50 and p99 admission
// latency. Run it with: go test -run '^$' -bench BenchmarkLoad ./e2e/
func BenchmarkLoad(b *testing.B) {
	n := 24
	if s := os.Getenv("ATTESTED_LOAD_AGENTS"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("ATTESTED_LOAD_AGENTS=%q: want a positive number", s)
		}
		n = v
	}
	var rate, p50, p99 float64
	for i := 0; i < b.N; i++ {
		r := runLoad(b, n)
		b.Log(r)
		rate += r.rate
		p50 += float64(r.p50) / float64(time.Millisecond)
		p99 += float64(r.p99) / float64(time.Millisecond)
	}
	b.ReportMetric(rate/float64(b.N), "admissions/s")
	b.ReportMetric(p50/float64(b.N), "p50-ms")
	b.ReportMetric(p99/float64(b.N), "p99-ms")
	b.ReportMetric(0, "ns/op")
}
