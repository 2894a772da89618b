package fakegithub

import (
	"crypto/rsa"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-github/v62/github"
)

// Maximum labels GitHub accepts on a JIT runner.
const maxLabels = 100

// scope is where a runner is registered: an organization or a repository.
type scope struct {
	org  string // as configured, "" for a repository scope
	repo string // "owner/name" as configured, "" for an organization scope
}

func (sc scope) key() string {
	if sc.org != "" {
		return "org:" + strings.ToLower(sc.org)
	}
	return "repo:" + strings.ToLower(sc.repo)
}

// admits reports whether a job of repository fullName may run on a runner
// of this scope.
func (sc scope) admits(fullName string) bool {
	if sc.org != "" {
		owner, _, _ := strings.Cut(fullName, "/")
		return strings.EqualFold(owner, sc.org)
	}
	return strings.EqualFold(fullName, sc.repo)
}

type runnerState struct {
	id         int64
	name       string
	labels     []string
	scope      scope
	groupID    int64
	workFolder string
	clientID   string
	publicKey  *rsa.PublicKey
	created    time.Time

	session   string
	lastSeen  time.Time
	job       *jobState
	connected bool // a session was opened at least once
}

func (s *Server) labelID(name string) int64 {
	k := strings.ToLower(name)
	if id, ok := s.labelIDs[k]; ok {
		return id
	}
	s.nextLabelID++
	s.labelIDs[k] = s.nextLabelID
	return s.nextLabelID
}

// apiRunner renders a runner as the REST API does. Caller holds s.mu.
func (s *Server) apiRunner(rs *runnerState) *github.Runner {
	status := "offline"
	if rs.session != "" {
		status = "online"
	}
	labels := make([]*github.RunnerLabels, 0, len(rs.labels))
	for _, l := range rs.labels {
		labels = append(labels, &github.RunnerLabels{ID: github.Int64(s.labelID(l)), Name: github.String(l), Type: github.String("custom")})
	}
	return &github.Runner{
		ID:     github.Int64(rs.id),
		Name:   github.String(rs.name),
		OS:     github.String("linux"),
		Status: github.String(status),
		Busy:   github.Bool(rs.job != nil),
		Labels: labels,
	}
}

// requestScope authenticates the installation token, resolves the org or
// repository of a runner endpoint, checks the token's permission, and
// writes 401 / 404 / 403 on failure. GitHub answers 404 for a scope the
// installation cannot see.
func (s *Server) requestScope(w http.ResponseWriter, r *http.Request, doc string) (scope, bool) {
	var sc scope
	tok := s.installationAuth(w, r)
	if tok == nil {
		return sc, false
	}
	var permName string
	if org := r.PathValue("org"); org != "" {
		if s.opts.Org == "" || !strings.EqualFold(org, s.opts.Org) {
			writeError(w, http.StatusNotFound, "Not Found", doc)
			return sc, false
		}
		sc.org = s.opts.Org
		permName = "organization_self_hosted_runners"
	} else {
		full := strings.ToLower(r.PathValue("owner") + "/" + r.PathValue("repo"))
		name, ok := s.repoNames[full]
		if !ok || (tok.repos != nil && !tok.repos[full]) {
			writeError(w, http.StatusNotFound, "Not Found", doc)
			return sc, false
		}
		sc.repo = name
		permName = "administration"
	}
	need := "read"
	if r.Method != http.MethodGet {
		need = "write"
	}
	if levelRank(permMap(&tok.perms)[permName]) < levelRank(need) {
		w.Header().Set("X-Accepted-GitHub-Permissions", permName+"="+need)
		writeError(w, http.StatusForbidden, "Resource not accessible by integration", doc)
		return sc, false
	}
	w.Header().Set("X-Accepted-GitHub-Permissions", permName+"="+need)
	return sc, true
}

func (s *Server) handleGenerateJIT(w http.ResponseWriter, r *http.Request) {
	doc := docRepoJIT
	if r.PathValue("org") != "" {
		doc = docOrgJIT
	}
	sc, ok := s.requestScope(w, r, doc)
	if !ok {
		return
	}
	var req github.GenerateJITConfigRequest
	if !decodeRequest(w, r, []string{"name", "runner_group_id", "labels", "work_folder"}, []string{"name", "runner_group_id", "labels"}, &req, doc) {
		return
	}
	switch {
	case strings.TrimSpace(req.Name) == "":
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nFor 'properties/name', \"\" is too short (minimum 1 characters).", doc)
		return
	case len(req.Labels) == 0:
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nFor 'properties/labels', [] should contain at least 1 item(s).", doc)
		return
	case len(req.Labels) > maxLabels:
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("Invalid request.\n\nFor 'properties/labels', the array should contain at most %d item(s).", maxLabels), doc)
		return
	}
	for _, l := range req.Labels {
		if strings.TrimSpace(l) == "" {
			writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nLabels must not be empty.", doc)
			return
		}
	}
	if _, ok := s.opts.RunnerGroups[req.RunnerGroupID]; !ok {
		writeError(w, http.StatusNotFound, "Not Found", doc)
		return
	}
	workFolder := "_work"
	if req.WorkFolder != nil && *req.WorkFolder != "" {
		workFolder = *req.WorkFolder
	}

	// The slow part (an RSA key) happens outside the lock; the name check
	// and the insert happen together under it.
	key, err := newRunnerKey(s.opts.RunnerKeyBits)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Server Error", doc)
		return
	}
	base := s.URL()
	if base == "" {
		base = requestBaseURL(r)
	}
	clientID := newUUID()

	s.mu.Lock()
	s.expireLeasesLocked()
	nameKey := sc.key() + "\x00" + strings.ToLower(req.Name)
	if _, taken := s.runnerNames[nameKey]; taken {
		s.mu.Unlock()
		writeError(w, http.StatusConflict, fmt.Sprintf("Already exists - A runner with the name %s already exists.", req.Name), doc)
		return
	}
	s.nextRunnerID++
	rs := &runnerState{
		id:         s.nextRunnerID,
		name:       req.Name,
		labels:     append([]string(nil), req.Labels...),
		scope:      sc,
		groupID:    req.RunnerGroupID,
		workFolder: workFolder,
		clientID:   clientID,
		publicKey:  &key.PublicKey,
		created:    s.now(),
	}
	s.runners[rs.id] = rs
	s.mints++ // counted when applied: a response lost to a fault still minted
	s.runnerNames[nameKey] = rs.id
	s.clientIDs[clientID] = rs.id
	apiRunner := s.apiRunner(rs)
	s.mu.Unlock()

	gitHubURL := base + "/" + sc.org
	if sc.repo != "" {
		gitHubURL = base + "/" + sc.repo
	}
	settings := RunnerSettings{
		AgentID:    rs.id,
		AgentName:  rs.name,
		PoolID:     req.RunnerGroupID,
		PoolName:   s.opts.RunnerGroups[req.RunnerGroupID],
		ServerURL:  base + "/_fake/",
		GitHubURL:  gitHubURL,
		WorkFolder: workFolder,
		// GitHub's JIT configuration has no DisableUpdate (the REST request
		// has no such field): a JIT runner updates itself unless whoever
		// starts it sets DisableUpdate in its .runner.
		Ephemeral: true,
	}
	creds := Credentials{Scheme: "OAuth", Data: map[string]string{
		"clientId":                clientID,
		"authorizationUrl":        base + "/_fake/oauth2/token",
		"requireFipsCryptography": "True",
	}}
	encoded, err := encodeJITConfig(settings, creds, key)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "Server Error", doc)
		return
	}
	writeJSON(w, http.StatusCreated, &github.JITRunnerConfig{Runner: apiRunner, EncodedJITConfig: github.String(encoded)})
}

func (s *Server) handleListRunners(w http.ResponseWriter, r *http.Request) {
	sc, ok := s.requestScope(w, r, docRunners)
	if !ok {
		return
	}
	q := r.URL.Query()
	perPage, page := 30, 1
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nFor 'per_page', the value must be a positive integer.", docRunners)
			return
		}
		perPage = min(n, 100)
	}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nFor 'page', the value must be a positive integer.", docRunners)
			return
		}
		page = n
	}
	nameFilter := q.Get("name")

	s.mu.Lock()
	s.expireLeasesLocked()
	var all []*github.Runner
	ids := make([]int64, 0, len(s.runners))
	for id, rs := range s.runners {
		if rs.scope.key() == sc.key() && (nameFilter == "" || strings.EqualFold(rs.name, nameFilter)) {
			ids = append(ids, id)
		}
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	for _, id := range ids {
		all = append(all, s.apiRunner(s.runners[id]))
	}
	s.mu.Unlock()

	total := len(all)
	lastPage := max(1, (total+perPage-1)/perPage)
	from := min((page-1)*perPage, total)
	to := min(from+perPage, total)
	pageRunners := all[from:to]
	if pageRunners == nil {
		pageRunners = []*github.Runner{}
	}
	if link := linkHeader(r, page, lastPage, perPage); link != "" {
		w.Header().Set("Link", link)
	}
	writeJSON(w, http.StatusOK, &github.Runners{TotalCount: total, Runners: pageRunners})
}

// linkHeader builds GitHub's pagination Link header (RFC 8288) on the URL
// the client asked for.
func linkHeader(r *http.Request, page, lastPage, perPage int) string {
	if lastPage <= 1 {
		return ""
	}
	base := requestBaseURL(r) + r.URL.EscapedPath()
	if orig, ok := r.Context().Value(originalPathKey{}).(string); ok {
		base = requestBaseURL(r) + orig
	}
	mk := func(p int, rel string) string {
		q := r.URL.Query()
		q.Set("per_page", strconv.Itoa(perPage))
		q.Set("page", strconv.Itoa(p))
		return fmt.Sprintf("<%s?%s>; rel=%q", base, q.Encode(), rel)
	}
	var parts []string
	if page > 1 {
		parts = append(parts, mk(page-1, "prev"))
	}
	if page < lastPage {
		parts = append(parts, mk(page+1, "next"), mk(lastPage, "last"))
	}
	if page > 1 {
		parts = append(parts, mk(1, "first"))
	}
	return strings.Join(parts, ", ")
}

// lookupRunner finds a runner of the request's scope. Caller holds s.mu.
func (s *Server) lookupRunner(sc scope, idText string) *runnerState {
	id, ok := parseID(idText)
	if !ok {
		return nil
	}
	rs := s.runners[id]
	if rs == nil || rs.scope.key() != sc.key() {
		return nil
	}
	return rs
}

func (s *Server) handleGetRunner(w http.ResponseWriter, r *http.Request) {
	sc, ok := s.requestScope(w, r, docRunners)
	if !ok {
		return
	}
	s.mu.Lock()
	s.expireLeasesLocked()
	rs := s.lookupRunner(sc, r.PathValue("runner_id"))
	var out *github.Runner
	if rs != nil {
		out = s.apiRunner(rs)
	}
	s.mu.Unlock()
	if out == nil {
		writeError(w, http.StatusNotFound, "Not Found", docRunners)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) handleDeleteRunner(w http.ResponseWriter, r *http.Request) {
	sc, ok := s.requestScope(w, r, docRunners)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLeasesLocked()
	rs := s.lookupRunner(sc, r.PathValue("runner_id"))
	if rs == nil {
		writeError(w, http.StatusNotFound, "Not Found", docRunners)
		return
	}
	if rs.job != nil {
		// GitHub refuses to delete a busy runner (the stray quote is
		// GitHub's).
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("Bad request - Runner %q is still running a job\"", rs.name), docRunners)
		return
	}
	s.removeRunnerLocked(rs)
	s.deletes++
	w.WriteHeader(http.StatusNoContent)
}

// removeRunnerLocked forgets a runner and its credentials. Caller holds s.mu.
func (s *Server) removeRunnerLocked(rs *runnerState) {
	delete(s.runners, rs.id)
	delete(s.runnerNames, rs.scope.key()+"\x00"+strings.ToLower(rs.name))
	delete(s.clientIDs, rs.clientID)
	for k, at := range s.accessTokens {
		if at.runnerID == rs.id {
			delete(s.accessTokens, k)
		}
	}
}

// RunnerInfo is a live runner as tests see it.
type RunnerInfo struct {
	ID      int64
	Name    string
	Labels  []string
	Org     string // set for an organization runner
	Repo    string // "owner/name", set for a repository runner
	GroupID int64
	// Online: a listener holds a session. Busy: it is running a job.
	Online bool
	Busy   bool
	// RunID is the run of the job it is running (0 when idle).
	RunID     int64
	CreatedAt time.Time
}

func (s *Server) runnerInfo(rs *runnerState) RunnerInfo {
	ri := RunnerInfo{ID: rs.id, Name: rs.name, Labels: append([]string(nil), rs.labels...), Org: rs.scope.org,
		Repo: rs.scope.repo, GroupID: rs.groupID, Online: rs.session != "", Busy: rs.job != nil, CreatedAt: rs.created}
	if rs.job != nil {
		ri.RunID = rs.job.rec.Job.RunID
	}
	return ri
}

// Runners returns the live runners (registered and not deleted), by id.
func (s *Server) Runners() []RunnerInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLeasesLocked()
	out := make([]RunnerInfo, 0, len(s.runners))
	for _, rs := range s.runners {
		out = append(out, s.runnerInfo(rs))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// Runner returns the live runner with this name (in any scope).
func (s *Server) Runner(name string) (RunnerInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLeasesLocked()
	for _, rs := range s.runners {
		if strings.EqualFold(rs.name, name) {
			return s.runnerInfo(rs), true
		}
	}
	return RunnerInfo{}, false
}
