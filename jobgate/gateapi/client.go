package gateapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// MaxResponseSize bounds a gate response (an admission with its certificate
// is a few KiB).
const MaxResponseSize = 1 << 20

// Client talks to a gate.
type Client struct {
	// BaseURL of the gate, e.g. https://gate.example.com.
	BaseURL string
	// HTTP is the client to use; it carries the gate's CA or pinned key.
	HTTP *http.Client
}

// RejectedError is a definitive refusal by the gate (4xx): retrying the same
// request cannot succeed.
type RejectedError struct {
	Status int
	Err    Error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("gate refused (%d %s): %s", e.Status, e.Err.Code, e.Err.Message)
}

// Challenge asks for a nonce.
func (c *Client) Challenge(ctx context.Context) (*ChallengeResponse, error) {
	var out ChallengeResponse
	if err := c.do(ctx, PathChallenge, struct{}{}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// ChallengeActivation asks for a nonce and a credential for an AK under
// an EK (credential activation).
func (c *Client) ChallengeActivation(ctx context.Context, a *Activation) (*ChallengeResponse, error) {
	var out ChallengeResponse
	if err := c.do(ctx, PathChallenge, &ChallengeRequest{Activation: a}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Admit presents evidence.
func (c *Client) Admit(ctx context.Context, req *AdmitRequest) (*AdmitResponse, error) {
	var out AdmitResponse
	if err := c.do(ctx, PathAdmit, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Deregister asks the gate to remove a runner.
func (c *Client) Deregister(ctx context.Context, req *DeregisterRequest) (*DeregisterResponse, error) {
	var out DeregisterResponse
	if err := c.do(ctx, PathDeregister, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

func (c *Client) do(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.BaseURL, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseSize+1))
	if err != nil {
		return err
	}
	if len(b) > MaxResponseSize {
		return fmt.Errorf("gate response over %d bytes", MaxResponseSize)
	}
	if resp.StatusCode/100 != 2 {
		var e Error
		if json.Unmarshal(b, &e) != nil || e.Code == "" {
			e = Error{Code: "http_" + fmt.Sprint(resp.StatusCode), Message: strings.TrimSpace(string(b))}
		}
		if resp.StatusCode/100 == 4 && resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusRequestTimeout {
			return &RejectedError{Status: resp.StatusCode, Err: e}
		}
		return fmt.Errorf("gate error (%d %s): %s", resp.StatusCode, e.Code, e.Message)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("gate response: %w", err)
	}
	return nil
}

// Retry calls f until it succeeds, returns a RejectedError, ctx ends or
// attempts run out, sleeping with exponential backoff and full jitter between
// attempts (base, doubling, capped at max).
func Retry(ctx context.Context, attempts int, base, max time.Duration, f func(attempt int) error) error {
	var err error
	for i := range attempts {
		if err = f(i); err == nil {
			return nil
		}
		var rej *RejectedError
		if errors.As(err, &rej) || i == attempts-1 {
			return err
		}
		d := base << i
		if d > max || d <= 0 {
			d = max
		}
		d = time.Duration(rand.Int64N(int64(d) + 1))
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
	return err
}
