package fleet

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/attested-runner/attested-runner/internal/promtext"
	"github.com/attested-runner/attested-runner/jobgate"
)

// metrics are the fleet's Prometheus series, named after those of ARC's
// listener (gha_assigned_jobs, gha_running_jobs, gha_idle_runners,
// gha_job_startup_duration_seconds) with a pool label:
//
//	jobgate_fleet_assigned_jobs{pool}        queued and running jobs of the pool
//	jobgate_fleet_running_jobs{pool}         jobs running on the pool's VMs
//	jobgate_fleet_idle_runners{pool}         admitted VMs waiting for a job
//	jobgate_fleet_launching_vms{pool}        launched, not yet admitted
//	jobgate_fleet_failed_launches_total{pool,reason}
//	jobgate_fleet_job_startup_duration_seconds{pool}   queued -> started (histogram)
//	jobgate_fleet_launch_to_admitted_seconds{pool}     launch -> admitted (histogram)
//	jobgate_fleet_webhooks_total{event,result}
type metrics struct {
	mu       sync.Mutex
	failed   map[[2]string]uint64
	webhooks map[[2]string]uint64
	startup  map[string]*promtext.Histogram
	admit    map[string]*promtext.Histogram
	pools    []string
	inFlight map[string]int
}

var durationBounds = []float64{1, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600}

func newMetrics() *metrics {
	return &metrics{failed: map[[2]string]uint64{}, webhooks: map[[2]string]uint64{},
		startup: map[string]*promtext.Histogram{}, admit: map[string]*promtext.Histogram{}, inFlight: map[string]int{}}
}

func (m *metrics) pool(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pools = append(m.pools, name)
	m.startup[name] = promtext.NewHistogram(durationBounds...)
	m.admit[name] = promtext.NewHistogram(durationBounds...)
}

func (m *metrics) failedLaunch(pool, reason string) {
	m.mu.Lock()
	m.failed[[2]string{pool, reason}]++
	m.mu.Unlock()
}

func (m *metrics) webhook(event, result string) {
	m.mu.Lock()
	m.webhooks[[2]string{clip(event), result}]++
	m.mu.Unlock()
}

func (m *metrics) launching(pool string, d int) {
	m.mu.Lock()
	m.inFlight[pool] += d
	m.mu.Unlock()
}

func (m *metrics) jobStartup(pool string, d time.Duration) { m.observe(m.startup, pool, d) }
func (m *metrics) launchToAdmitted(pool string, d time.Duration) {
	m.observe(m.admit, pool, d)
}

func (m *metrics) observe(hs map[string]*promtext.Histogram, pool string, d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if h := hs[pool]; h != nil && d >= 0 {
		h.Observe(d.Seconds())
	}
}

// Status is the fleet at one moment: per pool, its VMs by state and its
// jobs by state.
type Status struct {
	Pools []PoolStatus `json:"pools"`
	// GitHubRequests made by the gate since it started: with the
	// installation token (minting, deleting, listing runners) and as the
	// App (tokens, webhook deliveries).
	GitHubRequests *RequestCount `json:"githubRequests,omitempty"`
}

// RequestCount counts GitHub requests.
type RequestCount struct {
	Installation int64 `json:"installation"`
	App          int64 `json:"app"`
}

// VMStatus is one live VM.
type VMStatus struct {
	Name   string    `json:"name"`
	State  string    `json:"state"`
	Runner string    `json:"runner,omitempty"`
	JobID  int64     `json:"jobId,omitempty"`
	Image  string    `json:"image"`
	Since  time.Time `json:"since"`
}

// PoolStatus is one pool's counts.
type PoolStatus struct {
	Name      string         `json:"name"`
	Provider  string         `json:"provider"`
	VMs       map[string]int `json:"vms"`
	Queued    int            `json:"queuedJobs"`
	Running   int            `json:"runningJobs"`
	MinIdle   int            `json:"minIdle"`
	MaxTotal  int            `json:"maxTotal"`
	Launching []string       `json:"launching,omitempty"`
	List      []VMStatus     `json:"list,omitempty"`
}

// Status reads the fleet's state from the store.
func (f *Fleet) Status(ctx context.Context) (*Status, error) {
	vms, err := f.store.VMs(ctx)
	if err != nil {
		return nil, err
	}
	jobs, err := f.store.Jobs(ctx)
	if err != nil {
		return nil, err
	}
	st := &Status{}
	for _, p := range f.pools {
		ps := PoolStatus{Name: p.cfg.Name, Provider: p.provider.Kind(), VMs: map[string]int{}, MinIdle: p.cfg.MinIdle, MaxTotal: p.cfg.MaxTotal}
		for _, vm := range vms {
			if vm.Pool == p.cfg.Name && vm.State != jobgate.VMDestroyed {
				ps.VMs[string(vm.State)]++
				if vm.State == jobgate.VMLaunching {
					ps.Launching = append(ps.Launching, vm.Name)
				}
				ps.List = append(ps.List, VMStatus{Name: vm.Name, State: string(vm.State), Runner: vm.RunnerName, JobID: vm.JobID,
					Image: vm.ImageID, Since: vm.UpdatedAt})
			}
		}
		for _, j := range jobs {
			if j.Pool != p.cfg.Name {
				continue
			}
			switch j.State {
			case jobgate.JobQueued:
				ps.Queued++
			case jobgate.JobInProgress:
				ps.Running++
			}
		}
		st.Pools = append(st.Pools, ps)
	}
	if f.requests != nil {
		inst, app := f.requests()
		st.GitHubRequests = &RequestCount{Installation: inst, App: app}
	}
	return st, nil
}

// MetricsHandler serves the fleet's metrics in the Prometheus text format.
func (f *Fleet) MetricsHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st, err := f.Status(r.Context())
		if err != nil {
			http.Error(w, "store unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		f.metrics.write(w, st)
	})
}

func (m *metrics) write(w io.Writer, st *Status) {
	gauge := func(name, help string, v func(PoolStatus) int) {
		promtext.Header(w, name, "gauge", help)
		for _, p := range st.Pools {
			fmt.Fprintf(w, "%s{pool=%q} %d\n", name, p.Name, v(p))
		}
	}
	gauge("jobgate_fleet_assigned_jobs", "Queued and running jobs whose labels the pool serves.", func(p PoolStatus) int { return p.Queued + p.Running })
	gauge("jobgate_fleet_running_jobs", "Jobs running on the pool's VMs.", func(p PoolStatus) int { return p.Running })
	gauge("jobgate_fleet_idle_runners", "Admitted VMs waiting for a job.", func(p PoolStatus) int { return p.VMs[string(jobgate.VMAdmitted)] })
	gauge("jobgate_fleet_launching_vms", "VMs launched and not yet admitted.", func(p PoolStatus) int { return p.VMs[string(jobgate.VMLaunching)] })
	m.mu.Lock()
	defer m.mu.Unlock()
	promtext.Counter2(w, "jobgate_fleet_failed_launches_total", "Launches that failed, by reason (image_refused: the image did not verify).", "pool", "reason", m.failed)
	promtext.Counter2(w, "jobgate_fleet_webhooks_total", "Webhook deliveries by event and result.", "event", "result", m.webhooks)
	if st.GitHubRequests != nil {
		promtext.Header(w, "jobgate_fleet_github_requests_total", "counter", "The gate's GitHub API requests by credential.")
		fmt.Fprintf(w, "jobgate_fleet_github_requests_total{auth=\"installation\"} %d\njobgate_fleet_github_requests_total{auth=\"app\"} %d\n",
			st.GitHubRequests.Installation, st.GitHubRequests.App)
	}
	hist := func(name, help string, hs map[string]*promtext.Histogram) {
		promtext.Header(w, name, "histogram", help)
		for _, pool := range m.pools {
			hs[pool].Write(w, name, fmt.Sprintf("pool=%q", pool))
		}
	}
	hist("jobgate_fleet_job_startup_duration_seconds", "Seconds from a job queued to it started on a pool VM.", m.startup)
	hist("jobgate_fleet_launch_to_admitted_seconds", "Seconds from a VM launched to its agent admitted.", m.admit)
}
