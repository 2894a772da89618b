package jobgate

import (
	"fmt"
	"io"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/attested-runner/attested-runner/internal/promtext"
)

// metrics is a minimal Prometheus text-format registry: the gate's few
// counters, one histogram and one gauge, without a client library.
type metrics struct {
	mu         sync.Mutex
	admissions map[[2]string]uint64 // (result, reason) -> count
	github     map[string]uint64    // status -> count
	outcomes   map[string]uint64    // environment outcome -> count
	verify     *promtext.Histogram
	live       atomic.Int64
}

func newMetrics() *metrics {
	return &metrics{
		admissions: map[[2]string]uint64{},
		github:     map[string]uint64{},
		outcomes:   map[string]uint64{},
		verify:     promtext.NewHistogram(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
	}
}

func (m *metrics) admission(result, reason string) {
	m.mu.Lock()
	m.admissions[[2]string{result, reason}]++
	m.mu.Unlock()
}

func (m *metrics) outcome(o string) {
	m.mu.Lock()
	m.outcomes[o]++
	m.mu.Unlock()
}

func (m *metrics) githubStatus(status int) {
	s := fmt.Sprint(status)
	if status == 0 {
		s = "error"
	}
	m.mu.Lock()
	m.github[s]++
	m.mu.Unlock()
}

func (m *metrics) observeVerify(d time.Duration) {
	m.mu.Lock()
	m.verify.Observe(d.Seconds())
	m.mu.Unlock()
}

// write renders the registry in the Prometheus text exposition format.
func (m *metrics) write(w io.Writer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprintln(w, "# HELP jobgate_admissions_total Admission decisions by result and reason.")
	fmt.Fprintln(w, "# TYPE jobgate_admissions_total counter")
	keys := make([][2]string, 0, len(m.admissions))
	for k := range m.admissions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i][0]+keys[i][1] < keys[j][0]+keys[j][1] })
	for _, k := range keys {
		fmt.Fprintf(w, "jobgate_admissions_total{result=%q,reason=%q} %d\n", k[0], k[1], m.admissions[k])
	}
	fmt.Fprintln(w, "# HELP jobgate_github_requests_total GitHub API responses by status (error: no response).")
	fmt.Fprintln(w, "# TYPE jobgate_github_requests_total counter")
	st := make([]string, 0, len(m.github))
	for s := range m.github {
		st = append(st, s)
	}
	sort.Strings(st)
	for _, s := range st {
		fmt.Fprintf(w, "jobgate_github_requests_total{status=%q} %d\n", s, m.github[s])
	}
	fmt.Fprintln(w, "# HELP jobgate_environment_outcomes_total How environments ended, as their agents reported at deregistration (image_out_of_date: rebuild the image with a current runner).")
	fmt.Fprintln(w, "# TYPE jobgate_environment_outcomes_total counter")
	oc := make([]string, 0, len(m.outcomes))
	for o := range m.outcomes {
		oc = append(oc, o)
	}
	sort.Strings(oc)
	for _, o := range oc {
		fmt.Fprintf(w, "jobgate_environment_outcomes_total{outcome=%q} %d\n", o, m.outcomes[o])
	}
	promtext.Header(w, "jobgate_verify_seconds", "histogram", "Evidence verification latency.")
	m.verify.Write(w, "jobgate_verify_seconds", "")
	fmt.Fprintln(w, "# HELP jobgate_live_runners Runners admitted and not yet removed.")
	fmt.Fprintln(w, "# TYPE jobgate_live_runners gauge")
	fmt.Fprintf(w, "jobgate_live_runners %d\n", m.live.Load())
}
