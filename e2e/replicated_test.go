package e2e

// A replicated gate: two `jobgate serve` processes on one PostgreSQL
// database (a schema of the package's throwaway cluster, internal/pgtest),
// sharing the signing key, as behind a load balancer. What one gate spent
// or admitted, the other knows; the audit log stays one hash chain; a gate
// or the database going away costs availability, never an invariant.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/attest"
	"github.com/attested-runner/attested-runner/e2e/harness"
	"github.com/attested-runner/attested-runner/internal/pgtest"
	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/attested-runner/attested-runner/jobgate/gateapi"

	"github.com/attested-runner/attested-runner/attest/attesttest"
)

// replicaStoreTimeout is the gates' store timeout: with the database
// unreachable, an admission answers store_unavailable within it.
const replicaStoreTimeout = 2 * time.Second

// replicatedEnv is an env whose gate (A, e.Gate, behind e.Proxy) and a
// second gate (B) share one PostgreSQL database.
type replicatedEnv struct {
	*env
	B       *harness.Gate
	cluster *pgtest.Cluster
	// dsn reaches the gates' database directly (no password: the test
	// cluster trusts its socket); secret is the password the gates'
	// dsnFile carries, which no log may show.
	dsn, secret string
	machines    []*harness.Machine
}

// newReplicatedEnv starts the gates on a fresh database, with n enrolled
// machines. editB, if not nil, changes B's configuration (e.g. another
// path to the database) before it starts.
func newReplicatedEnv(t *testing.T, n int, editB func(r *replicatedEnv, c *jobgate.Config)) *replicatedEnv {
	t.Helper()
	attesttest.RequireSWTPM(t)
	cluster := pgtest.Shared(t) // skips, saying why, without PostgreSQL
	r := &replicatedEnv{cluster: cluster, dsn: pgtest.DB(t)}
	var pw [12]byte
	rand.Read(pw[:])
	r.secret = "pw-" + hex.EncodeToString(pw[:])
	dsnFile := r.writeDSN(t, r.dsn)
	store := &jobgate.StoreConfig{Postgres: &jobgate.PostgresConfig{DSNFile: dsnFile, Timeout: jobgate.Duration(replicaStoreTimeout)}}
	r.env, r.machines = newEnv(t, envOptions{machines: n, gate: harness.GateOptions{Store: store}})
	var edit func(*jobgate.Config)
	if editB != nil {
		edit = func(c *jobgate.Config) { editB(r, c) }
	}
	b, err := r.StartReplica(r.ctx, edit)
	if err != nil {
		t.Fatal(err)
	}
	r.B = b
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("gate B log (%s):\n%s", b.LogPath, tailFile(b.LogPath, 4000))
		}
	})
	return r
}

// writeDSN writes a dsnFile (mode 0600) for dsn, with the password added.
func (r *replicatedEnv) writeDSN(t *testing.T, dsn string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), fmt.Sprintf("dsn-%d", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(dsn+" password="+r.secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// request prepares an admission request from machine collector c for the
// gate at url: its nonce and evidence over it.
func (r *replicatedEnv) request(c *attest.TPMCollector, url string) *gateapi.AdmitRequest {
	r.t.Helper()
	ch, err := (&gateapi.Client{BaseURL: url}).Challenge(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	ev, err := c.Collect(attest.AdmissionChallenge(ch.Nonce))
	if err != nil {
		r.t.Fatal(err)
	}
	evJSON, err := ev.Encode()
	if err != nil {
		r.t.Fatal(err)
	}
	return &gateapi.AdmitRequest{Nonce: ch.Nonce, Evidence: evJSON}
}

// collector is machine m's TPM with a fresh environment key.
func (r *replicatedEnv) collector(m *harness.Machine) *attest.TPMCollector {
	r.t.Helper()
	c, closeTPM, err := m.Collector(r.AgentDigest)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(closeTPM)
	return c
}

// admitted is one admission's outcome: the HTTP status and the gate's
// error (status 0 and err: no answer at all).
type admitted struct {
	status int
	gerr   gateapi.Error
	err    error
}

// admit posts req to the gate at url within ctx.
func admit(ctx context.Context, url string, req *gateapi.AdmitRequest) admitted {
	body, _ := json.Marshal(req)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, url+gateapi.PathAdmit, bytes.NewReader(body))
	if err != nil {
		return admitted{err: err}
	}
	hreq.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		return admitted{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	out := admitted{status: resp.StatusCode}
	if resp.StatusCode != http.StatusOK {
		if err := json.Unmarshal(b, &out.gerr); err != nil {
			out.err = fmt.Errorf("gate answered %d with %q", resp.StatusCode, b)
		}
	}
	return out
}

// requireAdmit posts req to url and asserts the outcome: status, and for a
// refusal its code.
func (r *replicatedEnv) requireAdmit(url string, req *gateapi.AdmitRequest, status int, code string) {
	r.t.Helper()
	got := admit(r.ctx, url, req)
	if got.err != nil || got.status != status || got.gerr.Code != code {
		r.t.Fatalf("admission at %s: %d %+v %v, want %d %q", url, got.status, got.gerr, got.err, status, code)
	}
}

// requireUnavailable posts req to url with the database unreachable: the
// gate answers 503 store_unavailable before the caller's deadline (the
// store's timeout plus a margin) runs out, so it did not hang.
func (r *replicatedEnv) requireUnavailable(url string, req *gateapi.AdmitRequest) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(r.ctx, replicaStoreTimeout+5*time.Second)
	defer cancel()
	got := admit(ctx, url, req)
	if ctx.Err() != nil {
		r.t.Fatalf("admission at %s with the database unreachable: no answer within the store's timeout (%s) plus a margin: %v", url, replicaStoreTimeout, got.err)
	}
	if got.err != nil || got.status != http.StatusServiceUnavailable || got.gerr.Code != "store_unavailable" {
		r.t.Fatalf("admission at %s with the database unreachable: %d %+v %v, want 503 store_unavailable", url, got.status, got.gerr, got.err)
	}
}

// sharedAudit stops the gates given, reads the audit log with each one's
// configuration and checks that it is one chain: each verifies (`jobgate
// audit verify`) and all show the same records, hash for hash.
func (r *replicatedEnv) sharedAudit(gates ...*harness.Gate) []jobgate.AuditRecord {
	r.t.Helper()
	// The traffic is over: stop the gates, so that no reconcile appends a
	// record between one gate's audit show and its audit verify.
	for _, g := range gates {
		if err := g.Stop(); err != nil {
			r.t.Fatal(err)
		}
	}
	var first []jobgate.AuditRecord
	for i, g := range gates {
		recs, err := g.AuditLog(r.ctx)
		if err != nil {
			r.t.Fatal(err)
		}
		report, err := g.VerifyAudit(r.ctx)
		if err != nil {
			r.t.Fatalf("audit log chain through gate %d: %v", i, err)
		}
		if want := fmt.Sprintf("audit log OK: %d records", len(recs)); !strings.HasPrefix(report, want) {
			r.t.Fatalf("gate %d: audit verify says %q, audit show has %d records", i, report, len(recs))
		}
		if i == 0 {
			first = recs
			continue
		}
		if len(recs) != len(first) {
			r.t.Fatalf("gate %d shows %d audit records, gate 0 %d:\n%s\n---\n%s", i, len(recs), len(first), auditText(recs), auditText(first))
		}
		for j := range recs {
			if recs[j].Seq != first[j].Seq || recs[j].Hash != first[j].Hash {
				r.t.Fatalf("gate %d's record %d is #%d %s, gate 0's #%d %s: two chains", i, j, recs[j].Seq, recs[j].Hash, first[j].Seq, first[j].Hash)
			}
		}
	}
	return first
}

// requireNoSecret asserts the DSN's password appears in no gate's log.
func (r *replicatedEnv) requireNoSecret() {
	r.t.Helper()
	for _, g := range append([]*harness.Gate{r.Gate}, r.Replicas...) {
		b, err := os.ReadFile(g.LogPath)
		if err != nil {
			r.t.Fatal(err)
		}
		if bytes.Contains(b, []byte(r.secret)) {
			r.t.Fatalf("the database password is in %s", g.LogPath)
		}
	}
}

// store opens the gates' database as an observer would.
func (r *replicatedEnv) store() *jobgate.PostgresStore {
	r.t.Helper()
	s, err := jobgate.OpenPostgresStore(r.ctx, jobgate.PostgresOptions{DSN: r.dsn, Timeout: 10 * time.Second})
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { s.Close() })
	return s
}

// keyRecords returns the audit records of one environment key.
func keyRecords(recs []jobgate.AuditRecord, c *attest.TPMCollector) []jobgate.AuditRecord {
	key := attest.KeyDigest(c.EnvKey())
	var out []jobgate.AuditRecord
	for _, rec := range recs {
		if rec.KeyDigest == key {
			out = append(out, rec)
		}
	}
	return out
}

// evidenceRecords returns the audit records about one request's evidence
// (a refusal before the evidence is read, such as nonce_used, names no
// key).
func evidenceRecords(recs []jobgate.AuditRecord, req *gateapi.AdmitRequest) []jobgate.AuditRecord {
	d := attest.Digest(req.Evidence)
	var out []jobgate.AuditRecord
	for _, rec := range recs {
		if rec.EvidenceDigest == d {
			out = append(out, rec)
		}
	}
	return out
}

// TestReplicatedGatesAdmitThroughBoth: one agent boots against gate A, one
// against gate B; both are admitted, run their jobs and deregister; the
// audit log both gates show is one chain; the database password is in no
// log.
func TestReplicatedGatesAdmitThroughBoth(t *testing.T) {
	r := newReplicatedEnv(t, 2, nil)
	a1 := r.startAgent(harness.AgentOptions{Machine: r.machines[0]})
	a2 := r.startAgent(harness.AgentOptions{Machine: r.machines[1], GateURL: r.B.URL})
	r.queue(301, echoJob()...)
	r.queue(302, echoJob()...)
	for _, a := range []*harness.Agent{a1, a2} {
		if x := r.wait(a); x.Code != 0 {
			t.Fatalf("agent %s exit %+v", a.Name, x)
		}
	}
	if n := r.GitHub.JITMints(); n != 2 {
		t.Fatalf("%d runners minted, want 2", n)
	}
	recs := r.sharedAudit(r.Gate, r.B)
	acc := harness.AuditFilter(recs, "admit", "accepted")
	if len(acc) != 2 || acc[0].KeyDigest == acc[1].KeyDigest {
		t.Fatalf("accepted admissions:\n%s", auditText(recs))
	}
	r.requireNoSecret()
}

// TestReplicatedSameKeyAdmittedOnce: the same environment key, with a
// valid nonce from each gate, presented to both gates at the same moment:
// exactly one admits it, the other answers key_already_admitted, and one
// runner is minted (three rounds, one machine each).
func TestReplicatedSameKeyAdmittedOnce(t *testing.T) {
	const rounds = 3
	r := newReplicatedEnv(t, rounds, nil)
	var cs []*attest.TPMCollector
	for _, m := range r.machines {
		c := r.collector(m)
		cs = append(cs, c)
		reqs := []*gateapi.AdmitRequest{r.request(c, r.Gate.URL), r.request(c, r.B.URL)}
		urls := []string{r.Gate.URL, r.B.URL}
		got := make([]admitted, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				got[i] = admit(r.ctx, urls[i], reqs[i])
			}()
		}
		close(start)
		wg.Wait()
		ok, dup := 0, 0
		for _, g := range got {
			switch {
			case g.err == nil && g.status == http.StatusOK:
				ok++
			case g.err == nil && g.status == http.StatusConflict && g.gerr.Code == "key_already_admitted":
				dup++
			default:
				t.Fatalf("machine %s: %d %+v %v", m.Name, g.status, g.gerr, g.err)
			}
		}
		if ok != 1 || dup != 1 {
			t.Fatalf("machine %s: %d admitted, %d key_already_admitted", m.Name, ok, dup)
		}
	}
	if n := r.GitHub.JITMints(); n != rounds {
		t.Fatalf("%d runners minted for %d keys", n, rounds)
	}
	recs := r.sharedAudit(r.Gate, r.B)
	for _, c := range cs {
		kr := keyRecords(recs, c)
		if len(kr) != 2 || len(harness.AuditFilter(kr, "admit", "accepted")) != 1 ||
			len(harness.AuditFilter(kr, "admit", "rejected")) != 1 || harness.AuditFilter(kr, "admit", "rejected")[0].Reason != "key_already_admitted" {
			t.Fatalf("records of one key:\n%s", auditText(kr))
		}
	}
}

// TestReplicatedGateKilledMidAdmission: gate A is killed (SIGKILL) while
// GitHub mints the runner of an admission: after the nonce was spent and
// the key reserved, before the answer. The agent gets no answer (no
// admission); gate B refuses the same request (nonce_used) and the same
// key with a fresh nonce (key_already_admitted); the reservation is in the
// database; jobs keep starting through B; A starts again on the same
// database and both gates show one audit chain.
func TestReplicatedGateKilledMidAdmission(t *testing.T) {
	r := newReplicatedEnv(t, 2, nil)
	c := r.collector(r.machines[0])
	req := r.request(c, r.Gate.URL)
	var once sync.Once
	r.GitHub.SetRequestHook(func(method, path string) {
		if method == http.MethodPost && strings.HasSuffix(path, "/actions/runners/generate-jitconfig") {
			once.Do(r.Gate.Kill)
		}
	})
	got := admit(r.ctx, r.Gate.URL, req)
	r.GitHub.SetRequestHook(nil)
	if got.err == nil {
		t.Fatalf("the killed gate answered %d %+v", got.status, got.gerr)
	}
	if r.Gate.Running() {
		t.Fatal("gate A was not killed mid-admission")
	}
	t.Logf("killed mid-admission, the agent sees: %v", got.err)

	r.requireAdmit(r.B.URL, req, http.StatusForbidden, "nonce_used")
	r.requireAdmit(r.B.URL, r.request(c, r.B.URL), http.StatusConflict, "key_already_admitted")
	runners, err := r.store().Runners(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var reserved []jobgate.Runner
	for _, rn := range runners {
		if rn.KeyDigest == attest.KeyDigest(c.EnvKey()) {
			reserved = append(reserved, rn)
		}
	}
	if len(reserved) != 1 || reserved[0].State != jobgate.StatePending {
		t.Fatalf("the dead gate's reservation: %+v", reserved)
	}

	// Jobs keep starting through B.
	a := r.startAgent(harness.AgentOptions{Machine: r.machines[1], GateURL: r.B.URL})
	r.queue(401, echoJob()...)
	if x := r.wait(a); x.Code != 0 {
		t.Fatalf("agent through gate B: exit %+v", x)
	}

	if err := r.Gate.Start(r.ctx); err != nil {
		t.Fatal(err)
	}
	recs := r.sharedAudit(r.Gate, r.B)
	kr := keyRecords(recs, c)
	if len(kr) != 1 {
		t.Fatalf("records of the key admitted when the gate died:\n%s", auditText(kr))
	}
	r.requireAudit(kr, "admit", "rejected", "key_already_admitted")
	if er := evidenceRecords(recs, req); len(er) != 1 {
		t.Fatalf("records of the request the gate died on:\n%s", auditText(er))
	}
	r.requireAudit(evidenceRecords(recs, req), "admit", "rejected", "nonce_used")
	if acc := harness.AuditFilter(recs, "admit", "accepted"); len(acc) != 1 {
		t.Fatalf("accepted admissions:\n%s", auditText(recs))
	}
	r.requireNoSecret()
}

// TestReplicatedDatabaseRestartedMidFlow: the database stops dead
// (immediate shutdown) between admissions. While it is down both gates
// answer store_unavailable within their store timeout (no hang, nothing
// admitted); once it is back the same request is admitted (its nonce was
// not spent by the failed attempt), replaying it is refused (nonce_used),
// the key admitted before the restart is still taken, and the chain is
// whole.
func TestReplicatedDatabaseRestartedMidFlow(t *testing.T) {
	r := newReplicatedEnv(t, 2, nil)
	c1, c2 := r.collector(r.machines[0]), r.collector(r.machines[1])
	r.requireAdmit(r.Gate.URL, r.request(c1, r.Gate.URL), http.StatusOK, "")

	if err := r.cluster.StopImmediate(); err != nil {
		t.Fatal(err)
	}
	restarted := false
	defer func() {
		if !restarted {
			r.cluster.StartAgain(context.Background())
		}
	}()
	req := r.request(c2, r.B.URL) // challenges need no database
	r.requireUnavailable(r.B.URL, req)
	r.requireUnavailable(r.Gate.URL, req)
	if n := r.GitHub.JITMints(); n != 1 {
		t.Fatalf("%d runners minted with the database down", n)
	}
	if err := r.cluster.StartAgain(r.ctx); err != nil {
		t.Fatal(err)
	}
	restarted = true

	r.requireAdmit(r.Gate.URL, req, http.StatusOK, "")
	r.requireAdmit(r.B.URL, req, http.StatusForbidden, "nonce_used")
	r.requireAdmit(r.B.URL, r.request(c1, r.B.URL), http.StatusConflict, "key_already_admitted")
	if n := r.GitHub.JITMints(); n != 2 {
		t.Fatalf("%d runners minted, want 2", n)
	}
	recs := r.sharedAudit(r.Gate, r.B)
	r.requireAudit(keyRecords(recs, c1), "admit", "accepted", "")
	r.requireAudit(keyRecords(recs, c1), "admit", "rejected", "key_already_admitted")
	r.requireAudit(keyRecords(recs, c2), "admit", "accepted", "")
	r.requireAudit(evidenceRecords(recs, req), "admit", "rejected", "nonce_used")
	r.requireNoSecret()
}

// TestReplicatedDatabaseCut: gate B reaches the database through a
// network that is partitioned (nothing passes, nothing closes), then whose
// connections are reset. While it is cut B answers store_unavailable within
// its store timeout and A, on its own path, keeps admitting; afterwards B
// admits the request it could not (the nonce was not spent), and the chain
// is one.
func TestReplicatedDatabaseCut(t *testing.T) {
	var proxy *pgtest.Proxy
	r := newReplicatedEnv(t, 3, func(r *replicatedEnv, c *jobgate.Config) {
		var err error
		if proxy, err = r.cluster.Proxy(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { proxy.Close() })
		pg := *c.Store.Postgres
		pg.DSNFile = r.writeDSN(t, proxy.DSN(r.dsn))
		c.Store = &jobgate.StoreConfig{Postgres: &pg}
	})
	c1, c2, c3 := r.collector(r.machines[0]), r.collector(r.machines[1]), r.collector(r.machines[2])
	r.requireAdmit(r.B.URL, r.request(c1, r.B.URL), http.StatusOK, "")

	proxy.Blackhole()
	req := r.request(c2, r.B.URL)
	r.requireUnavailable(r.B.URL, req)
	r.requireAdmit(r.Gate.URL, r.request(c3, r.Gate.URL), http.StatusOK, "")
	proxy.Cut()
	proxy.Restore()

	r.requireAdmit(r.B.URL, req, http.StatusOK, "")
	r.requireAdmit(r.Gate.URL, req, http.StatusForbidden, "nonce_used")
	if n := r.GitHub.JITMints(); n != 3 {
		t.Fatalf("%d runners minted, want 3", n)
	}
	recs := r.sharedAudit(r.Gate, r.B)
	for _, c := range []*attest.TPMCollector{c1, c2, c3} {
		r.requireAudit(keyRecords(recs, c), "admit", "accepted", "")
	}
	r.requireAudit(evidenceRecords(recs, req), "admit", "rejected", "nonce_used")
	r.requireNoSecret()
}

// TestGateDatabaseUnreachableAtStart: a gate whose database cannot be
// reached exits at start (within its store timeout, not after the
// harness's readiness wait) with an error naming the store, and neither
// that error nor anything else it logs carries the DSN's password.
func TestGateDatabaseUnreachableAtStart(t *testing.T) {
	e, _ := newEnv(t, envOptions{noGate: true})
	secret := "pw-unreachable-0123456789"
	dsnFile := filepath.Join(t.TempDir(), "dsn")
	// Port 1 on loopback: connection refused.
	dsn := "host=127.0.0.1 port=1 user=jobgate dbname=jobgate password=" + secret
	if err := os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	store := &jobgate.StoreConfig{Postgres: &jobgate.PostgresConfig{DSNFile: dsnFile, Timeout: jobgate.Duration(replicaStoreTimeout)}}
	_, err := e.StartGate(e.ctx, harness.GateOptions{Store: store}, e.M)
	if err == nil {
		t.Fatal("the gate started without its database")
	}
	if !strings.Contains(err.Error(), "jobgate exited at start") || !strings.Contains(err.Error(), "postgres store") {
		t.Fatalf("want the gate to exit at start naming its store: %v", err)
	}
	log, rerr := os.ReadFile(filepath.Join(e.Dir, "gate", "gate.log"))
	if rerr != nil {
		t.Fatal(rerr)
	}
	if strings.Contains(err.Error(), secret) || bytes.Contains(log, []byte(secret)) {
		t.Fatalf("the database password is in the gate's output:\n%s", log)
	}
	t.Logf("the gate says: %s", strings.TrimSpace(string(log)))
}
