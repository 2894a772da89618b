package fakegithub

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-github/v62/github"
)

// The App's webhook: GitHub POSTs workflow_job events (queued,
// in_progress, completed) to the App's webhook URL, signed with the
// webhook secret (X-Hub-Signature-256: sha256=HMAC-SHA256 of the body),
// and records every delivery, which the App can list and fetch
// (GET /app/hook/deliveries, GET /app/hook/deliveries/{id}) with its JWT.
// The fake does the same, in order, from one sender goroutine.

// WebhookDelivery is one delivery the fake made (or recorded as failed).
type WebhookDelivery struct {
	ID          int64
	GUID        string
	Event       string
	Action      string
	RunID       int64
	Payload     []byte
	DeliveredAt time.Time
	// StatusCode is the App's answer; 0 when the fake dropped the delivery
	// (DropWebhooks) or could not connect.
	StatusCode int
	// Copies is how many times it was sent (DuplicateWebhooks sends 2).
	Copies int
	// Done: the sender is finished with it (sent, failed or dropped).
	Done bool
}

// SetWebhook makes the fake deliver workflow_job events to url, signed with
// secret. An empty url stops deliveries (they are still recorded, failed).
func (s *Server) SetWebhook(url string, secret []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hookURL, s.hookSecret = url, append([]byte(nil), secret...)
	if s.hookQueue == nil {
		s.hookQueue = make(chan *WebhookDelivery, 4096)
		s.hookStop = make(chan struct{})
		go s.sendWebhooks(s.hookQueue, s.hookStop)
	}
}

// DropWebhooks makes the next n deliveries fail without reaching the App
// (GitHub records them with no response, as after a timeout).
func (s *Server) DropWebhooks(n int) {
	s.mu.Lock()
	s.hookDrop = n
	s.mu.Unlock()
}

// DuplicateWebhooks makes every delivery arrive twice with the same
// delivery id (as GitHub's retries and manual redeliveries do).
func (s *Server) DuplicateWebhooks(on bool) {
	s.mu.Lock()
	s.hookDup = on
	s.mu.Unlock()
}

// WebhookDeliveries returns every delivery so far, oldest first.
func (s *Server) WebhookDeliveries() []WebhookDelivery {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]WebhookDelivery, len(s.hookLog))
	for i, d := range s.hookLog {
		out[i] = *d
	}
	return out
}

// CancelJob cancels a queued job: it leaves the queue and GitHub sends
// workflow_job completed with conclusion cancelled. A job a runner already
// took is not cancelled (the fake has no cancellation message for
// runners).
func (s *Server) CancelJob(runID int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	js := s.jobs[runID]
	if js == nil {
		return fmt.Errorf("no job of run %d", runID)
	}
	for i, q := range s.queue {
		if q == js {
			s.queue = append(s.queue[:i], s.queue[i+1:]...)
			js.rec.Result, js.rec.CompletedAt = ResultCancelled, s.now()
			s.jobEventLocked(js, "completed")
			return nil
		}
	}
	return fmt.Errorf("job of run %d is not queued", runID)
}

// jobEventLocked records and queues a workflow_job delivery. Caller holds
// s.mu.
func (s *Server) jobEventLocked(js *jobState, action string) {
	if s.hookQueue == nil {
		return
	}
	if js.jobID == 0 {
		s.nextJobID++
		js.jobID = 9000000000 + s.nextJobID
	}
	wj := &github.WorkflowJob{
		ID: github.Int64(js.jobID), RunID: github.Int64(js.rec.Job.RunID), RunAttempt: github.Int64(int64(max(js.rec.Job.RunAttempt, 1))),
		HeadSHA: github.String(js.rec.Job.SHA), Name: github.String(js.rec.Job.Job), WorkflowName: github.String(js.rec.Job.Workflow),
		Labels: append([]string{}, js.rec.Job.Labels...), CreatedAt: &github.Timestamp{Time: js.rec.QueuedAt},
	}
	switch action {
	case "queued":
		wj.Status = github.String("queued")
	case "in_progress":
		wj.Status = github.String("in_progress")
		wj.StartedAt = &github.Timestamp{Time: js.rec.AcquiredAt}
	case "completed":
		wj.Status = github.String("completed")
		conclusion := map[string]string{ResultSucceeded: "success", ResultFailed: "failure", ResultCancelled: "cancelled"}[js.rec.Result]
		wj.Conclusion = github.String(conclusion)
		wj.CompletedAt = &github.Timestamp{Time: js.rec.CompletedAt}
		if !js.rec.AcquiredAt.IsZero() {
			wj.StartedAt = &github.Timestamp{Time: js.rec.AcquiredAt}
		}
	}
	if js.rec.RunnerName != "" && action != "queued" {
		wj.RunnerID, wj.RunnerName = github.Int64(js.rec.RunnerID), github.String(js.rec.RunnerName)
	}
	full := s.repoNames[strings.ToLower(js.rec.Job.Repository)]
	if full == "" {
		full = js.rec.Job.Repository
	}
	owner, name, _ := strings.Cut(full, "/")
	ev := &github.WorkflowJobEvent{
		Action: github.String(action), WorkflowJob: wj,
		Repo: &github.Repository{ID: github.Int64(js.rec.Job.RepositoryID), FullName: github.String(full), Name: github.String(name),
			Owner: &github.User{Login: github.String(owner)}},
		Installation: &github.Installation{ID: github.Int64(s.opts.InstallationID)},
	}
	if s.opts.Org != "" {
		ev.Org = &github.Organization{Login: github.String(s.opts.Org)}
	}
	payload, _ := json.Marshal(ev)
	s.nextDelivery++
	var guid [16]byte
	rand.Read(guid[:])
	d := &WebhookDelivery{ID: s.nextDelivery, GUID: uuid(guid), Event: "workflow_job", Action: action, RunID: js.rec.Job.RunID,
		Payload: payload, DeliveredAt: s.now()}
	s.hookLog = append(s.hookLog, d)
	select {
	case s.hookQueue <- d:
	default:
		// A full queue: GitHub would record a failed delivery.
	}
}

func uuid(b [16]byte) string {
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// sendWebhooks delivers queued webhooks one at a time, in order.
// It also expires lost jobs' leases every second, so that a runner that
// vanished mid-job yields its completed event without anyone asking.
func (s *Server) sendWebhooks(queue chan *WebhookDelivery, stop chan struct{}) {
	client := &http.Client{Timeout: 10 * time.Second}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
			s.mu.Lock()
			s.expireLeasesLocked()
			s.mu.Unlock()
		case d := <-queue:
			s.mu.Lock()
			url, secret, drop, dup := s.hookURL, s.hookSecret, s.hookDrop > 0, s.hookDup
			if drop {
				s.hookDrop--
			}
			s.mu.Unlock()
			status := 0
			if !drop && url != "" {
				copies := 1
				if dup {
					copies = 2
				}
				for range copies {
					status = deliver(client, url, secret, d)
				}
				s.mu.Lock()
				d.Copies = copies
				s.mu.Unlock()
			}
			s.mu.Lock()
			d.StatusCode, d.Done = status, true
			s.mu.Unlock()
		}
	}
}

// deliver POSTs one delivery as GitHub does and returns the status.
func deliver(client *http.Client, url string, secret []byte, d *WebhookDelivery) int {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(d.Payload))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "GitHub-Hookshot/fake")
	req.Header.Set(github.EventTypeHeader, d.Event)
	req.Header.Set(github.DeliveryIDHeader, d.GUID)
	req.Header.Set("X-GitHub-Hook-ID", "1")
	req.Header.Set("X-GitHub-Hook-Installation-Target-Type", "integration")
	req.Header.Set(github.SHA256SignatureHeader, "sha256="+hex.EncodeToString(mac(sha256.New, secret, d.Payload)))
	req.Header.Set(github.SHA1SignatureHeader, "sha1="+hex.EncodeToString(mac(sha1.New, secret, d.Payload)))
	resp, err := client.Do(req)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// SignWebhook is the X-Hub-Signature-256 value GitHub sends for a body.
func SignWebhook(secret, body []byte) string {
	return "sha256=" + hex.EncodeToString(mac(sha256.New, secret, body))
}

func mac(h func() hash.Hash, key, body []byte) []byte {
	m := hmac.New(h, key)
	m.Write(body)
	return m.Sum(nil)
}

// hookDeliveryJSON is a delivery as GET /app/hook/deliveries lists it.
func (s *Server) hookDeliveryJSON(d *WebhookDelivery, full bool) *github.HookDelivery {
	status := "OK"
	if d.StatusCode == 0 {
		status = "timed out"
	} else if d.StatusCode >= 400 {
		status = "failed"
	}
	hd := &github.HookDelivery{
		ID: github.Int64(d.ID), GUID: github.String(d.GUID), DeliveredAt: &github.Timestamp{Time: d.DeliveredAt},
		Redelivery: github.Bool(false), Status: github.String(status),
		StatusCode: github.Int(d.StatusCode), Event: github.String(d.Event), Action: github.String(d.Action),
		InstallationID: github.Int64(s.opts.InstallationID),
	}
	if full {
		raw := json.RawMessage(d.Payload)
		hd.Request = &github.HookRequest{Headers: map[string]string{"X-GitHub-Event": d.Event, "X-GitHub-Delivery": d.GUID}, RawPayload: &raw}
		empty := json.RawMessage(`{}`)
		hd.Response = &github.HookResponse{Headers: map[string]string{}, RawPayload: &empty}
	}
	return hd
}

// handleListHookDeliveries serves GET /app/hook/deliveries: newest first,
// per_page (default 30, at most 100), cursor paging through the Link
// header.
func (s *Server) handleListHookDeliveries(w http.ResponseWriter, r *http.Request) {
	if !s.requireApp(w, r) {
		return
	}
	perPage := 30
	if v := r.URL.Query().Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusUnprocessableEntity, "Invalid per_page", docREST)
			return
		}
		perPage = min(n, 100)
	}
	before := int64(0)
	if c := r.URL.Query().Get("cursor"); c != "" {
		n, err := strconv.ParseInt(c, 10, 64)
		if err != nil || n <= 0 {
			writeError(w, http.StatusUnprocessableEntity, "Invalid cursor", docREST)
			return
		}
		before = n
	}
	s.mu.Lock()
	var out []*github.HookDelivery
	next := int64(0)
	for i := len(s.hookLog) - 1; i >= 0; i-- {
		d := s.hookLog[i]
		if before != 0 && d.ID >= before {
			continue
		}
		if len(out) == perPage {
			next = out[len(out)-1].GetID()
			break
		}
		out = append(out, s.hookDeliveryJSON(d, false))
	}
	s.mu.Unlock()
	if next != 0 {
		w.Header().Set("Link", fmt.Sprintf(`<%s/app/hook/deliveries?per_page=%d&cursor=%d>; rel="next"`, s.URL(), perPage, next))
	}
	if out == nil {
		out = []*github.HookDelivery{}
	}
	writeJSON(w, http.StatusOK, out)
}

// handleGetHookDelivery serves GET /app/hook/deliveries/{delivery_id}.
func (s *Server) handleGetHookDelivery(w http.ResponseWriter, r *http.Request) {
	if !s.requireApp(w, r) {
		return
	}
	id, err := strconv.ParseInt(r.PathValue("delivery_id"), 10, 64)
	if err != nil {
		writeError(w, http.StatusNotFound, "Not Found", docREST)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range s.hookLog {
		if d.ID == id {
			writeJSON(w, http.StatusOK, s.hookDeliveryJSON(d, true))
			return
		}
	}
	writeError(w, http.StatusNotFound, "Not Found", docREST)
}

// errNoWebhook is returned by SendRawWebhook without SetWebhook.
var errNoWebhook = errors.New("fakegithub: no webhook URL set")

// SendRawWebhook POSTs body as a delivery with the given headers (a test's
// forged or malformed webhook), bypassing the delivery log, and returns
// the App's status.
func (s *Server) SendRawWebhook(headers map[string]string, body []byte) (int, error) {
	s.mu.Lock()
	url := s.hookURL
	s.mu.Unlock()
	if url == "" {
		return 0, errNoWebhook
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}
