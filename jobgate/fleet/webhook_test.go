package fleet

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/attested-runner/attested-runner/jobgate"
)

// TestWebhookBounds: the webhook's limits and its refusal of anything but
// a SHA-256 HMAC, each shown alone; at the bounds, accepted.
func TestWebhookBounds(t *testing.T) {
	w := newWorld(t, worldOpts{noRecovery: true})
	body := workflowJob("queued", 91, poolLabels...)

	rec := httptest.NewRecorder()
	w.fleet.WebhookHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/v1/github/webhook", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	w.fleet.WebhookHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/github/webhook", iotest.ErrReader(errors.New("connection reset"))))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("body read failing: %d", rec.Code)
	}

	// A correct HMAC, but SHA-1 (go-github would accept it under its own
	// prefix): refused, whatever the header.
	m := hmac.New(sha1.New, testSecret)
	m.Write(body)
	sha1Sig := "sha1=" + hex.EncodeToString(m.Sum(nil))
	// Built once: its created_at is marshalled with trailing zeros trimmed,
	// so two calls can differ in length.
	job92 := workflowJob("queued", 92, poolLabels...)
	atLimit := append(job92, bytes.Repeat([]byte(" "), maxWebhook-len(job92))...)
	for _, tc := range []struct {
		name, delivery, sig string
		body                []byte
		want                int
	}{
		{"SHA-1 HMAC of the body", "b-1", sha1Sig, body, http.StatusUnauthorized},
		{"delivery id over 64 bytes", strings.Repeat("d", 65), "", body, http.StatusBadRequest},
		{"payload without a job", "b-2", "", []byte(`{"action":"queued","repository":{"full_name":"octo-org/app"}}`), http.StatusBadRequest},
		{"delivery id of 64 bytes", strings.Repeat("d", 64), "", body, http.StatusAccepted},
		{"body of exactly the limit", "b-3", "", atLimit, http.StatusAccepted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := w.postWebhook("workflow_job", tc.delivery, tc.sig, tc.body); got != tc.want {
				t.Fatalf("status %d, want %d", got, tc.want)
			}
		})
	}
	if jobs, _ := w.store.Jobs(w.ctx); len(jobs) != 2 {
		t.Fatalf("jobs %+v, want 91 and 92", jobs)
	}
}

// TestWebhookLateDelivery: a delivery of an earlier state of a job that
// already completed is acknowledged and changes nothing.
func TestWebhookLateDelivery(t *testing.T) {
	w := newWorld(t, worldOpts{noRecovery: true})
	if got := w.postWebhook("workflow_job", "l-1", "", workflowJob("completed", 93, poolLabels...)); got != http.StatusAccepted {
		t.Fatalf("completed: %d", got)
	}
	if got := w.postWebhook("workflow_job", "l-2", "", workflowJob("queued", 93, poolLabels...)); got != http.StatusAccepted {
		t.Fatalf("late queued: %d", got)
	}
	if j := jobByID(t, w, 93); j.State != jobgate.JobCompleted {
		t.Fatalf("job after a late delivery: %+v", j)
	}
	w.fleet.Schedule(w.ctx)
	if n, _, _ := w.prov.counts(); n != 0 {
		t.Fatalf("%d launches for a completed job", n)
	}
}
