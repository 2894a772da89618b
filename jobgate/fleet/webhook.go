package fleet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/attested-runner/attested-runner/jobgate"
	"github.com/google/go-github/v62/github"
)

// maxWebhook bounds a webhook body: a workflow_job payload is a few KiB.
const maxWebhook = 1 << 20

// Webhook errors (the response's body names them).
var (
	ErrWebhookSignature = errors.New("webhook signature invalid")
	ErrWebhookMalformed = errors.New("webhook malformed")
)

// WebhookHandler serves the GitHub App's webhook (POST). It verifies
// X-Hub-Signature-256 (HMAC-SHA256, compared in constant time; the SHA-1
// header is not accepted), bounds the body, ignores a delivery id it has
// already processed and any event but workflow_job, and updates the
// fleet's demand.
func (f *Fleet) WebhookHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		status, msg := f.serveWebhook(r)
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(status)
		io.WriteString(w, msg+"\n")
	})
}

func (f *Fleet) serveWebhook(r *http.Request) (int, string) {
	ctx := r.Context()
	body, err := io.ReadAll(io.LimitReader(r.Body, maxWebhook+1))
	if err != nil {
		return http.StatusBadRequest, "reading the body: " + err.Error()
	}
	if len(body) > maxWebhook {
		f.metrics.webhook("", "too_large")
		return http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", maxWebhook)
	}
	delivery := r.Header.Get(github.DeliveryIDHeader)
	event := r.Header.Get(github.EventTypeHeader)
	sig := r.Header.Get(github.SHA256SignatureHeader)
	payload, err := f.checkSignature(r.Header.Get("Content-Type"), body, sig)
	if err != nil {
		f.metrics.webhook(event, "bad_signature")
		f.gate.AuditRecord(ctx, &jobgate.AuditRecord{Action: "webhook", Result: "rejected", Reason: "bad_signature",
			Remote: remoteHost(r), Detail: fmt.Sprintf("event %q delivery %q: %v", clip(event), clip(delivery), err)})
		f.log.Warn("fleet: webhook refused", "reason", "bad_signature", "event", clip(event), "remote", remoteHost(r))
		return http.StatusUnauthorized, err.Error()
	}
	if delivery == "" || len(delivery) > 64 {
		f.metrics.webhook(event, "malformed")
		return http.StatusBadRequest, fmt.Sprintf("%v: missing or oversized %s", ErrWebhookMalformed, github.DeliveryIDHeader)
	}
	return f.process(ctx, delivery, event, payload)
}

// checkSignature verifies the body's HMAC-SHA256 with the webhook secret
// (go-github's ValidatePayloadFromBody, which compares with hmac.Equal).
func (f *Fleet) checkSignature(contentType string, body []byte, sig string) ([]byte, error) {
	if !strings.HasPrefix(sig, "sha256=") {
		return nil, fmt.Errorf("%w: no sha256= %s", ErrWebhookSignature, github.SHA256SignatureHeader)
	}
	payload, err := github.ValidatePayloadFromBody(contentType, strings.NewReader(string(body)), sig, f.secret)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrWebhookSignature, err)
	}
	return payload, nil
}

// process acts on one authenticated delivery, once per delivery id.
func (f *Fleet) process(ctx context.Context, delivery, event string, payload []byte) (int, string) {
	if seen, err := f.seen(ctx, delivery); err != nil {
		return http.StatusServiceUnavailable, "store: " + err.Error()
	} else if seen {
		f.metrics.webhook(event, "duplicate")
		return http.StatusOK, "duplicate delivery " + delivery + ": ignored"
	}
	if event != "workflow_job" {
		f.metrics.webhook(event, "ignored")
		f.markSeen(ctx, delivery)
		return http.StatusOK, "event " + clip(event) + ": nothing to do"
	}
	parsed, err := github.ParseWebHook(event, payload)
	ev, ok := parsed.(*github.WorkflowJobEvent)
	if err != nil || !ok || ev.WorkflowJob == nil || ev.WorkflowJob.ID == nil {
		f.metrics.webhook(event, "malformed")
		return http.StatusBadRequest, fmt.Sprintf("%v: workflow_job payload", ErrWebhookMalformed)
	}
	if err := f.onWorkflowJob(ctx, ev); err != nil {
		f.metrics.webhook(event, "failed")
		return http.StatusServiceUnavailable, err.Error()
	}
	// Only once it was acted on: a failure above is retried by the next
	// delivery attempt or the reconcile's recovery.
	f.markSeen(ctx, delivery)
	f.metrics.webhook(event, "accepted")
	return http.StatusAccepted, "accepted"
}

// seen reports whether a delivery id was already processed.
func (f *Fleet) seen(ctx context.Context, delivery string) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.seenIDs == nil {
		f.seenIDs = map[string]bool{}
	}
	if f.seenIDs[delivery] {
		return true, nil
	}
	// The store remembers across restarts and replicas: a record is
	// written only after processing (markSeen), so look without writing.
	return f.store.DeliverySeen(ctx, delivery)
}

func (f *Fleet) markSeen(ctx context.Context, delivery string) {
	f.mu.Lock()
	if f.seenIDs == nil {
		f.seenIDs = map[string]bool{}
	}
	f.seenIDs[delivery] = true
	if len(f.seenIDs) > 10000 {
		clear(f.seenIDs)
	}
	f.mu.Unlock()
	if _, err := f.store.FirstDelivery(context.WithoutCancel(ctx), delivery, f.now()); err != nil {
		f.log.Warn("fleet: recording a delivery", "delivery", delivery, "err", err)
	}
}

// onWorkflowJob records what a workflow_job webhook says.
func (f *Fleet) onWorkflowJob(ctx context.Context, ev *github.WorkflowJobEvent) error {
	wj := ev.WorkflowJob
	var state jobgate.JobState
	switch ev.GetAction() {
	case "queued":
		state = jobgate.JobQueued
	case "in_progress":
		state = jobgate.JobInProgress
	case "completed":
		state = jobgate.JobCompleted
	default:
		return nil // "waiting" (environments), or actions GitHub adds later
	}
	now := f.now().UTC()
	j := &jobgate.QueuedJob{
		ID: wj.GetID(), RunID: wj.GetRunID(), Repository: ev.GetRepo().GetFullName(), Labels: wj.Labels,
		State: state, RunnerName: wj.GetRunnerName(), Conclusion: wj.GetConclusion(),
		QueuedAt: wj.GetCreatedAt().Time.UTC(), StartedAt: wj.GetStartedAt().Time.UTC(), UpdatedAt: now,
	}
	if j.QueuedAt.IsZero() {
		j.QueuedAt = now
	}
	for _, p := range f.pools {
		if p.cfg.matches(wj.Labels) {
			j.Pool = p.cfg.Name
			break
		}
	}
	if err := f.store.PutJob(ctx, j); err != nil {
		if errors.Is(err, jobgate.ErrStateBackward) {
			return nil // a late delivery of an earlier state
		}
		return err
	}
	if state == jobgate.JobInProgress && j.RunnerName != "" {
		f.jobStarted(ctx, j)
	}
	if state == jobgate.JobCompleted && j.RunnerName != "" {
		// GitHub freed the runner: a removal waiting on it goes ahead at
		// the next reconcile.
		f.mu.Lock()
		delete(f.busyUntil, j.RunnerName)
		f.mu.Unlock()
	}
	if j.Pool != "" {
		f.log.Info("fleet: workflow job", "job", j.ID, "state", state, "pool", j.Pool, "runner", j.RunnerName)
		f.Kick()
	}
	return nil
}

// jobStarted marks the VM whose runner took the job busy.
func (f *Fleet) jobStarted(ctx context.Context, j *jobgate.QueuedJob) {
	vms, err := f.store.VMs(ctx)
	if err != nil {
		return
	}
	for _, vm := range vms {
		if vm.RunnerName != j.RunnerName || vm.State != jobgate.VMAdmitted {
			continue
		}
		now := f.now().UTC()
		vm.State, vm.JobID, vm.BusyAt, vm.UpdatedAt = jobgate.VMBusy, j.ID, now, now
		if err := f.store.PutVM(ctx, &vm, nil); err == nil && !j.StartedAt.IsZero() {
			f.metrics.jobStartup(vm.Pool, j.StartedAt.Sub(j.QueuedAt))
		}
		return
	}
}

func remoteHost(r *http.Request) string {
	if i := strings.LastIndexByte(r.RemoteAddr, ':'); i > 0 {
		return r.RemoteAddr[:i]
	}
	return r.RemoteAddr
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// recoverWindow: older deliveries are not recovered (their jobs are long
// started or cancelled; a queued one is still found by the next job's
// demand).
const recoverWindow = time.Hour

// recoverDeliveries processes the App's recent deliveries the gate never
// acted on (a lost webhook): one list request per reconcile, one more per
// missed delivery.
func (f *Fleet) recoverDeliveries(ctx context.Context) {
	if f.recovery == nil || (f.cfg.RecoverDeliveries != nil && !*f.cfg.RecoverDeliveries) {
		return
	}
	now := f.now()
	if !f.lastRecovery.IsZero() && now.Sub(f.lastRecovery) < f.cfg.RecoverInterval.Or(5*time.Minute) {
		return
	}
	f.lastRecovery = now
	ds, err := f.recovery.RecentDeliveries(ctx, f.now().Add(-recoverWindow))
	if err != nil {
		f.log.Warn("fleet: listing webhook deliveries", "err", err)
		return
	}
	for _, d := range ds {
		if d.Event != "workflow_job" || d.GUID == "" {
			continue
		}
		if seen, err := f.seen(ctx, d.GUID); err != nil || seen {
			continue
		}
		full, err := f.recovery.Delivery(ctx, d.ID)
		if err != nil || len(full.Payload) == 0 {
			f.log.Warn("fleet: fetching a missed delivery", "delivery", d.GUID, "err", err)
			continue
		}
		status, msg := f.process(ctx, d.GUID, d.Event, full.Payload)
		f.log.Info("fleet: recovered a missed webhook", "delivery", d.GUID, "action", d.Action, "status", status, "result", msg)
		f.gate.AuditRecord(ctx, &jobgate.AuditRecord{Action: "webhook", Result: "recovered",
			Detail: fmt.Sprintf("delivery %s (%s %s) was never received; processed from the App's delivery log: %s", d.GUID, d.Event, d.Action, msg)})
	}
}
