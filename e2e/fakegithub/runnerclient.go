package fakegithub

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v4"
)

// MaxRunnerResponse bounds a response body the runner client reads.
const MaxRunnerResponse = 4 << 20

// Errors of the runner protocol, for errors.Is.
var (
	// ErrRegistrationGone: the runner was deleted (or never existed): the
	// token exchange answers invalid_client, or a call answers 404.
	ErrRegistrationGone = errors.New("the runner registration no longer exists")
	// ErrSessionConflict: another session holds this runner.
	ErrSessionConflict = errors.New("a session for this runner already exists")
	// ErrJobLost: the job is no longer assigned to this runner (its lease
	// ran out or it was completed).
	ErrJobLost = errors.New("the job is no longer assigned to this runner")
	// ErrVersionDeprecated: the service refuses this runner version (the
	// real service's AccessDeniedException with error code 1).
	ErrVersionDeprecated = errors.New("runner version deprecated")
)

// StatusError is an answer the protocol does not expect.
type StatusError struct {
	Op      string
	Status  int
	Message string
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%s: HTTP %d: %s", e.Op, e.Status, e.Message)
}

// Retryable reports whether the same call may succeed later (5xx, 429).
func (e *StatusError) Retryable() bool {
	return e.Status >= 500 || e.Status == http.StatusTooManyRequests
}

// RunnerClient speaks the fake's runner protocol (/_fake/) with the
// credentials of a JIT config, as the fake listener does. Safe for
// concurrent use.
type RunnerClient struct {
	cfg  *JITConfig
	key  *rsa.PrivateKey
	hc   *http.Client
	base *url.URL
	now  func() time.Time

	mu       sync.Mutex
	token    string
	tokenExp time.Time
	session  string
}

// NewRunnerClient makes a client for the runner of cfg; hc nil means a
// client with a 30 s timeout.
func NewRunnerClient(cfg *JITConfig, hc *http.Client) (*RunnerClient, error) {
	key, err := cfg.RSAParams.PrivateKey()
	if err != nil {
		return nil, err
	}
	base, err := url.Parse(cfg.Runner.ServerURL)
	if err != nil {
		return nil, fmt.Errorf("%w: serverUrl: %v", ErrJITConfig, err)
	}
	if !strings.HasSuffix(base.Path, "/") {
		base.Path += "/"
	}
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	return &RunnerClient{cfg: cfg, key: key, hc: hc, base: base, now: time.Now}, nil
}

// RunnerID is the runner's id (agentId).
func (c *RunnerClient) RunnerID() int64 { return c.cfg.Runner.AgentID }

// Session is the open session id ("" when none).
func (c *RunnerClient) Session() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.session
}

// Connect gets an access token and opens the runner's session.
func (c *RunnerClient) Connect(ctx context.Context) error {
	var out struct {
		SessionID string `json:"session_id"`
	}
	status, msg, err := c.call(ctx, http.MethodPost, "session", nil, &out)
	if err != nil {
		return err
	}
	switch status {
	case http.StatusCreated:
		if out.SessionID == "" {
			return &StatusError{Op: "create session", Status: status, Message: "no session id"}
		}
		c.mu.Lock()
		c.session = out.SessionID
		c.mu.Unlock()
		return nil
	case http.StatusConflict:
		return fmt.Errorf("%w: %s", ErrSessionConflict, msg)
	default:
		return &StatusError{Op: "create session", Status: status, Message: msg}
	}
}

// Acquire asks for the next matching job; nil with no error means none.
func (c *RunnerClient) Acquire(ctx context.Context, p PollParams) (*AcquiredJob, error) {
	var out AcquiredJob
	op := "acquire?" + url.Values{"runnerVersion": {p.RunnerVersion}, "disableUpdate": {strconv.FormatBool(p.DisableUpdate)}}.Encode()
	status, msg, err := c.call(ctx, http.MethodPost, op, nil, &out)
	if err != nil {
		return nil, err
	}
	switch status {
	case http.StatusOK:
		if out.MessageType == MessageAgentRefresh {
			if out.TargetVersion == "" {
				return nil, &StatusError{Op: "acquire", Status: status, Message: "refresh message without a target version"}
			}
			return &out, nil
		}
		if out.RequestID <= 0 {
			return nil, &StatusError{Op: "acquire", Status: status, Message: "no request id"}
		}
		return &out, nil
	case http.StatusNoContent:
		return nil, nil
	case http.StatusConflict:
		return nil, fmt.Errorf("%w: %s", ErrSessionConflict, msg)
	case http.StatusForbidden:
		return nil, fmt.Errorf("%w: %s", ErrVersionDeprecated, msg)
	default:
		return nil, &StatusError{Op: "acquire", Status: status, Message: msg}
	}
}

// PollParams are what a runner sends with every poll, as the real runner's
// GetAgentMessageAsync does (Runner.Listener/MessageListener.cs): its
// version and its .runner DisableUpdate setting.
type PollParams struct {
	RunnerVersion string
	DisableUpdate bool
}

// Renew extends the lease of a running job.
func (c *RunnerClient) Renew(ctx context.Context, requestID int64) error {
	status, msg, err := c.call(ctx, http.MethodPost, "renew", requestBody{RequestID: requestID}, nil)
	if err != nil {
		return err
	}
	return c.jobStatus("renew", status, msg)
}

// Complete reports a job's result (ResultSucceeded, ResultFailed or
// ResultCancelled). The fake then removes the runner: it is single use.
func (c *RunnerClient) Complete(ctx context.Context, requestID int64, result string) error {
	status, msg, err := c.call(ctx, http.MethodPost, "complete", requestBody{RequestID: requestID, Result: result}, nil)
	if err != nil {
		return err
	}
	if status == http.StatusNoContent {
		c.mu.Lock()
		c.session = ""
		c.mu.Unlock()
	}
	return c.jobStatus("complete", status, msg)
}

func (c *RunnerClient) jobStatus(op string, status int, msg string) error {
	switch status {
	case http.StatusOK, http.StatusNoContent:
		return nil
	case http.StatusConflict:
		return fmt.Errorf("%w: %s", ErrSessionConflict, msg)
	default:
		return &StatusError{Op: op, Status: status, Message: msg}
	}
}

// Disconnect closes the session (the real listener deletes its session on a
// clean shutdown so that the runner can connect again).
func (c *RunnerClient) Disconnect(ctx context.Context) error {
	if c.Session() == "" {
		return nil
	}
	status, msg, err := c.call(ctx, http.MethodDelete, "session", nil, nil)
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.session = ""
	c.mu.Unlock()
	if status != http.StatusNoContent {
		return &StatusError{Op: "delete session", Status: status, Message: msg}
	}
	return nil
}

// call makes one runner call with a valid access token; it refreshes the
// token once on 401. A 404 from the runner endpoints is ErrRegistrationGone.
func (c *RunnerClient) call(ctx context.Context, method, op string, in, out any) (int, string, error) {
	for attempt := 0; ; attempt++ {
		tok, err := c.accessToken(ctx, attempt > 0)
		if err != nil {
			return 0, "", err
		}
		var body io.Reader
		if in != nil {
			b, err := json.Marshal(in)
			if err != nil {
				return 0, "", err
			}
			body = bytes.NewReader(b)
		}
		path, query, _ := strings.Cut(op, "?")
		u := c.base.JoinPath("runners", fmt.Sprint(c.cfg.Runner.AgentID), path)
		u.RawQuery = query
		req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
		if err != nil {
			return 0, "", err
		}
		req.Header.Set("Authorization", "Bearer "+tok)
		if in != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		if s := c.Session(); s != "" {
			req.Header.Set(SessionHeader, s)
		}
		resp, err := c.hc.Do(req)
		if err != nil {
			return 0, "", err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, MaxRunnerResponse+1))
		resp.Body.Close()
		if err != nil {
			return 0, "", err
		}
		if len(b) > MaxRunnerResponse {
			return 0, "", fmt.Errorf("%s: response over %d bytes", op, MaxRunnerResponse)
		}
		switch {
		case resp.StatusCode == http.StatusUnauthorized && attempt == 0:
			continue
		case resp.StatusCode == http.StatusNotFound && (path == "session" || path == "acquire"):
			return 0, "", fmt.Errorf("%w: %s", ErrRegistrationGone, errorMessage(b))
		case resp.StatusCode == http.StatusNotFound:
			return 0, "", fmt.Errorf("%w: %s", ErrJobLost, errorMessage(b))
		case resp.StatusCode == http.StatusOK && out != nil:
			if err := json.Unmarshal(b, out); err != nil {
				return 0, "", fmt.Errorf("%s: bad answer: %v", op, err)
			}
		case resp.StatusCode == http.StatusCreated && out != nil:
			if err := json.Unmarshal(b, out); err != nil {
				return 0, "", fmt.Errorf("%s: bad answer: %v", op, err)
			}
		}
		return resp.StatusCode, errorMessage(b), nil
	}
}

func errorMessage(b []byte) string {
	var e struct {
		Message string `json:"message"`
		Error   string `json:"error"`
		Desc    string `json:"error_description"`
	}
	if json.Unmarshal(b, &e) == nil {
		switch {
		case e.Message != "":
			return e.Message
		case e.Error != "":
			return strings.TrimSpace(e.Error + ": " + e.Desc)
		}
	}
	return safeName(strings.TrimSpace(string(b)))
}

// accessToken returns a cached token, or exchanges a fresh client assertion
// signed with the runner key for one.
func (c *RunnerClient) accessToken(ctx context.Context, force bool) (string, error) {
	c.mu.Lock()
	if !force && c.token != "" && c.now().Add(time.Minute).Before(c.tokenExp) {
		t := c.token
		c.mu.Unlock()
		return t, nil
	}
	c.mu.Unlock()

	now := c.now()
	authURL := c.cfg.Credentials.AuthorizationURL()
	clientID := c.cfg.Credentials.ClientID()
	assertion, err := jwt.NewWithClaims(jwt.SigningMethodRS256, jwt.RegisteredClaims{
		Issuer:    clientID,
		Subject:   clientID,
		Audience:  jwt.ClaimStrings{authURL},
		ID:        newUUID(),
		IssuedAt:  jwt.NewNumericDate(now.Add(-30 * time.Second).Truncate(time.Second)),
		NotBefore: jwt.NewNumericDate(now.Add(-30 * time.Second).Truncate(time.Second)),
		ExpiresAt: jwt.NewNumericDate(now.Add(5 * time.Minute).Truncate(time.Second)),
	}).SignedString(c.key)
	if err != nil {
		return "", err
	}
	form := url.Values{
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {clientAssertionType},
		"client_assertion":      {assertion},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, authURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return "", err
	}
	var out struct {
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
		Error       string `json:"error"`
	}
	_ = json.Unmarshal(b, &out)
	switch {
	case resp.StatusCode == http.StatusOK && out.AccessToken != "":
		c.mu.Lock()
		c.token, c.tokenExp = out.AccessToken, now.Add(time.Duration(out.ExpiresIn)*time.Second)
		c.mu.Unlock()
		return out.AccessToken, nil
	case out.Error == "invalid_client":
		return "", fmt.Errorf("%w: %s", ErrRegistrationGone, errorMessage(b))
	default:
		return "", &StatusError{Op: "get access token", Status: resp.StatusCode, Message: errorMessage(b)}
	}
}
