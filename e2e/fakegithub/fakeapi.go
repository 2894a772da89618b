package fakegithub

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v4"
)

// The fake-only runner protocol (not GitHub). The real runner talks to the
// Actions service (broker / pipelines) with a protocol the fake does not
// reproduce; these endpoints stand in for it with the same shape of trust:
// the runner proves possession of the key in its JIT config to get an access
// token, holds one session at a time, takes a job, renews its lease and
// reports a result. See doc.go for the wire format.
const (
	clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
	// AccessTokenTTL is the lifetime of a runner access token.
	AccessTokenTTL = time.Hour
	// SessionHeader carries the session id on session-scoped calls.
	SessionHeader = "X-Runner-Session"
)

type accessToken struct {
	runnerID int64
	expires  time.Time
}

type jobState struct {
	rec        JobRecord
	requestID  int64
	leaseUntil time.Time
	runner     *runnerState
	jobID      int64 // the workflow job id of its webhooks
}

// AcquiredJob is the answer to acquire: the job and its lease.
type AcquiredJob struct {
	RequestID    int64 `json:"request_id,omitempty"`
	LeaseSeconds int   `json:"lease_seconds,omitempty"`
	Job          Job   `json:"job"`
	// MessageType is MessageAgentRefresh for an update message (then
	// TargetVersion is set and there is no job), else empty.
	MessageType   string `json:"message_type,omitempty"`
	TargetVersion string `json:"target_version,omitempty"`
}

// MessageAgentRefresh is the type of the message that tells a runner to
// update itself (AgentRefreshMessage.MessageType in actions/runner).
const MessageAgentRefresh = "AgentRefresh"

// QueueJob queues a job for the next runner whose labels and scope match it
// (an organization runner takes jobs of the organization's repositories, a
// repository runner only its repository's). Run ids are unique in the fake.
// A missing RepositoryID is filled from the configured repository.
func (s *Server) QueueJob(j Job) (JobRecord, error) {
	b, err := json.Marshal(j)
	if err != nil {
		return JobRecord{}, fmt.Errorf("%w: %v", ErrInvalidJob, err)
	}
	var c Job
	if err := json.Unmarshal(b, &c); err != nil {
		return JobRecord{}, fmt.Errorf("%w: %v", ErrInvalidJob, err)
	}
	if err := c.validate(); err != nil {
		return JobRecord{}, err
	}
	if c.RepositoryID == 0 {
		c.RepositoryID = s.repoIDs[strings.ToLower(c.Repository)]
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.jobs[c.RunID]; dup {
		return JobRecord{}, fmt.Errorf("%w: run id %d already queued", ErrInvalidJob, c.RunID)
	}
	js := &jobState{rec: JobRecord{Job: c, QueuedAt: s.now()}}
	s.jobs[c.RunID] = js
	s.queue = append(s.queue, js)
	s.jobEventLocked(js, "queued")
	return js.rec, nil
}

// JobResult returns what happened to the job of this run.
func (s *Server) JobResult(runID int64) (JobRecord, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLeasesLocked()
	js, ok := s.jobs[runID]
	if !ok {
		return JobRecord{}, false
	}
	return js.rec, true
}

// Jobs returns every job queued so far, in queue order.
func (s *Server) Jobs() []JobRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLeasesLocked()
	out := make([]JobRecord, 0, len(s.jobs))
	for _, js := range s.jobs {
		out = append(out, js.rec)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].QueuedAt.Equal(out[j].QueuedAt) {
			return out[i].Job.RunID < out[j].Job.RunID
		}
		return out[i].QueuedAt.Before(out[j].QueuedAt)
	})
	return out
}

// expireLeasesLocked fails running jobs whose runner stopped renewing: the
// runner goes offline and idle (and can then be deleted), as GitHub does
// when it loses a runner. Caller holds s.mu.
func (s *Server) expireLeasesLocked() {
	now := s.now()
	for _, rs := range s.runners {
		js := rs.job
		if js == nil || now.Before(js.leaseUntil) {
			continue
		}
		js.rec.Result = ResultFailed
		js.rec.CompletedAt = now
		js.rec.Reason = fmt.Sprintf("The self-hosted runner: %s lost communication with the server.", rs.name)
		rs.job = nil
		rs.session = ""
		s.jobEventLocked(js, "completed")
	}
}

func oauthError(w http.ResponseWriter, status int, code, desc string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// handleOAuthToken exchanges a client assertion (an RS256 JWT signed with
// the runner key: iss = sub = clientId, aud = authorizationUrl) for an
// access token, the OAuth 2.0 client-credentials grant (RFC 7523) the real
// runner uses against its authorizationUrl.
func (s *Server) handleOAuthToken(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/x-www-form-urlencoded") {
		oauthError(w, http.StatusBadRequest, "invalid_request", "form body required")
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "malformed form body")
		return
	}
	if form.Get("grant_type") != "client_credentials" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "grant_type must be client_credentials")
		return
	}
	if form.Get("client_assertion_type") != clientAssertionType || form.Get("client_assertion") == "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", "a jwt-bearer client assertion is required")
		return
	}
	assertion := form.Get("client_assertion")
	unverified, _, err := jwt.NewParser().ParseUnverified(assertion, jwt.MapClaims{})
	if err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_client", "client assertion is not a JWT")
		return
	}
	clientID, _ := unverified.Claims.(jwt.MapClaims)["iss"].(string)

	s.mu.Lock()
	rs := s.runners[s.clientIDs[clientID]]
	var pub any
	if rs != nil {
		pub = rs.publicKey
	}
	s.mu.Unlock()
	if rs == nil {
		oauthError(w, http.StatusBadRequest, "invalid_client", "Registration was not found or is not active.")
		return
	}
	claims := jwt.MapClaims{}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation())
	if _, err := parser.ParseWithClaims(assertion, claims, func(*jwt.Token) (any, error) { return pub, nil }); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_client", "client assertion signature is not valid")
		return
	}
	now := s.now()
	exp, okExp := numericClaim(claims["exp"])
	sub, _ := claims["sub"].(string)
	audOK := false
	switch aud := claims["aud"].(type) {
	case string:
		audOK = aud == s.URL()+"/_fake/oauth2/token"
	case []any:
		for _, a := range aud {
			audOK = audOK || a == s.URL()+"/_fake/oauth2/token"
		}
	}
	switch {
	case sub != clientID:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "sub must equal iss")
	case !audOK:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "aud must be the authorization URL")
	case !okExp || !exp.After(now) || exp.Sub(now) > maxJWTLifetime+jwtClockSkew:
		oauthError(w, http.StatusBadRequest, "invalid_grant", "client assertion expired or too long-lived. Current server time is "+now.UTC().Format(time.RFC3339))
	default:
		tok := randomToken(40)
		s.mu.Lock()
		if s.runners[rs.id] == nil {
			s.mu.Unlock()
			oauthError(w, http.StatusBadRequest, "invalid_client", "Registration was not found or is not active.")
			return
		}
		s.accessTokens[sha256.Sum256([]byte(tok))] = &accessToken{runnerID: rs.id, expires: now.Add(AccessTokenTTL)}
		s.mu.Unlock()
		w.Header().Set("Cache-Control", "no-store")
		writeJSON(w, http.StatusOK, map[string]any{"access_token": tok, "token_type": "bearer", "expires_in": int(AccessTokenTTL / time.Second)})
	}
}

// runnerAuth resolves the runner of a /_fake/runners/{id} call. An unknown
// runner is 404 (registration gone); a bad or foreign token is 401. It
// returns with s.mu held on success.
func (s *Server) runnerAuth(w http.ResponseWriter, r *http.Request) *runnerState {
	id, ok := parseID(r.PathValue("runner_id"))
	s.mu.Lock()
	s.expireLeasesLocked()
	rs := s.runners[id]
	if !ok || rs == nil {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "The runner no longer exists on the server.", "")
		return nil
	}
	tok, ok := bearer(r)
	at := s.accessTokens[sha256.Sum256([]byte(tok))]
	if !ok || at == nil || at.runnerID != rs.id || !s.now().Before(at.expires) {
		s.mu.Unlock()
		writeError(w, http.StatusUnauthorized, "Bad credentials", "")
		return nil
	}
	rs.lastSeen = s.now()
	return rs
}

func (s *Server) handleCreateSession(w http.ResponseWriter, r *http.Request) {
	rs := s.runnerAuth(w, r)
	if rs == nil {
		return
	}
	defer s.mu.Unlock()
	if rs.session != "" {
		writeError(w, http.StatusConflict, fmt.Sprintf("The actions runner %s already has an active session.", rs.name), "")
		return
	}
	rs.session = newUUID()
	rs.connected = true
	writeJSON(w, http.StatusCreated, map[string]any{"session_id": rs.session, "runner_id": rs.id, "runner_name": rs.name})
}

// checkSession writes 409 unless the call names the runner's session.
// Caller holds s.mu.
func checkSession(w http.ResponseWriter, r *http.Request, rs *runnerState) bool {
	if rs.session == "" || r.Header.Get(SessionHeader) != rs.session {
		writeError(w, http.StatusConflict, "The session is not the runner's active session.", "")
		return false
	}
	return true
}

func (s *Server) handleDeleteSession(w http.ResponseWriter, r *http.Request) {
	rs := s.runnerAuth(w, r)
	if rs == nil {
		return
	}
	defer s.mu.Unlock()
	if !checkSession(w, r, rs) {
		return
	}
	rs.session = ""
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) handleAcquire(w http.ResponseWriter, r *http.Request) {
	rs := s.runnerAuth(w, r)
	if rs == nil {
		return
	}
	defer s.mu.Unlock()
	if !checkSession(w, r, rs) {
		return
	}
	// The real service answers an outdated runner's poll with an update
	// message unless the runner says DisableUpdate, and refuses a
	// deprecated version outright (AccessDeniedException, error code 1).
	version := r.URL.Query().Get("runnerVersion")
	if s.minRunner != "" && versionLess(version, s.minRunner) {
		writeError(w, http.StatusForbidden, fmt.Sprintf("Runner version v%s is deprecated and cannot receive messages.", version), "")
		return
	}
	if rs.job == nil && s.latestRunner != "" && versionLess(version, s.latestRunner) &&
		(r.URL.Query().Get("disableUpdate") != "true" || s.ignoreDisableUpdate) {
		s.updateMessages++
		writeJSON(w, http.StatusOK, AcquiredJob{MessageType: MessageAgentRefresh, TargetVersion: s.latestRunner})
		return
	}
	leaseSecs := int((s.opts.JobLease + time.Second - 1) / time.Second)
	if rs.job != nil {
		writeJSON(w, http.StatusOK, AcquiredJob{RequestID: rs.job.requestID, LeaseSeconds: leaseSecs, Job: rs.job.rec.Job})
		return
	}
	for i, js := range s.queue {
		if !labelsMatch(js.rec.Job.Labels, rs.labels) || !rs.scope.admits(js.rec.Job.Repository) {
			continue
		}
		s.queue = append(s.queue[:i], s.queue[i+1:]...)
		s.nextRequest++
		js.requestID = s.nextRequest
		js.runner = rs
		js.leaseUntil = s.now().Add(s.opts.JobLease)
		js.rec.RunnerID, js.rec.RunnerName, js.rec.AcquiredAt = rs.id, rs.name, s.now()
		rs.job = js
		s.jobEventLocked(js, "in_progress")
		writeJSON(w, http.StatusOK, AcquiredJob{RequestID: js.requestID, LeaseSeconds: leaseSecs, Job: js.rec.Job})
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type requestBody struct {
	RequestID int64  `json:"request_id"`
	Result    string `json:"result,omitempty"`
}

// assignedRunner authenticates a call about job requestID: the runner's
// token, its active session, and the job still assigned to it (else 401 /
// 404 / 409). It returns with s.mu held on success.
func (s *Server) assignedRunner(w http.ResponseWriter, r *http.Request, requestID int64) *runnerState {
	rs := s.runnerAuth(w, r)
	if rs == nil {
		return nil
	}
	if !checkSession(w, r, rs) {
		s.mu.Unlock()
		return nil
	}
	if rs.job == nil || rs.job.requestID != requestID {
		s.mu.Unlock()
		writeError(w, http.StatusNotFound, "The job is no longer assigned to this runner.", "")
		return nil
	}
	return rs
}

func (s *Server) handleRenew(w http.ResponseWriter, r *http.Request) {
	var req requestBody
	if !decodeRequest(w, r, []string{"request_id"}, []string{"request_id"}, &req, "") {
		return
	}
	rs := s.assignedRunner(w, r, req.RequestID)
	if rs == nil {
		return
	}
	defer s.mu.Unlock()
	rs.job.leaseUntil = s.now().Add(s.opts.JobLease)
	writeJSON(w, http.StatusOK, map[string]any{"lease_seconds": int((s.opts.JobLease + time.Second - 1) / time.Second)})
}

func (s *Server) handleComplete(w http.ResponseWriter, r *http.Request) {
	var req requestBody
	if !decodeRequest(w, r, []string{"request_id", "result"}, []string{"request_id", "result"}, &req, "") {
		return
	}
	switch req.Result {
	case ResultSucceeded, ResultFailed, ResultCancelled:
	default:
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nresult must be succeeded, failed or cancelled.", "")
		return
	}
	rs := s.assignedRunner(w, r, req.RequestID)
	if rs == nil {
		return
	}
	defer s.mu.Unlock()
	rs.job.rec.Result = req.Result
	rs.job.rec.CompletedAt = s.now()
	s.jobEventLocked(rs.job, "completed")
	rs.job = nil
	// A JIT runner is ephemeral: the service removes it after its job.
	s.removeRunnerLocked(rs)
	w.WriteHeader(http.StatusNoContent)
}

// versionLess compares dotted numeric versions (2.336.0 < 2.340.1); a
// version that does not parse is older than any.
func versionLess(a, b string) bool {
	pa, oka := parseVersion(a)
	pb, okb := parseVersion(b)
	if !oka {
		return okb
	}
	if !okb {
		return false
	}
	for i := range max(len(pa), len(pb)) {
		var x, y int
		if i < len(pa) {
			x = pa[i]
		}
		if i < len(pb) {
			y = pb[i]
		}
		if x != y {
			return x < y
		}
	}
	return false
}

func parseVersion(v string) ([]int, bool) {
	if v == "" {
		return nil, false
	}
	var out []int
	for _, p := range strings.Split(v, ".") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return nil, false
		}
		out = append(out, n)
	}
	return out, true
}

// SetRunnerVersions sets the runner release the service offers (latest:
// older runners get an update message), the oldest it accepts (min: older
// polls are refused as deprecated), and whether it ignores a runner's
// DisableUpdate (whether GitHub honours DisableUpdate for a REST-minted JIT
// runner is not documented). Empty versions turn each off.
func (s *Server) SetRunnerVersions(latest, min string, ignoreDisableUpdate bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latestRunner, s.minRunner, s.ignoreDisableUpdate = latest, min, ignoreDisableUpdate
}

// UpdateMessages counts the update messages the fake sent to runners.
func (s *Server) UpdateMessages() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.updateMessages
}
