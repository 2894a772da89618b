package fakegithub

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

	"github.com/golang/snappy"
)

// GitHub's artifact attestation store, as the job-side action and
// verifiers use it:
//
//	POST /repos/{owner}/{repo}/attestations            job token, attestations: write
//	     {"bundle": <sigstore bundle>}                 -> 201 {"id": N}
//	GET  /repos/{owner}/{repo}/attestations/{subject_digest}[?per_page&after&predicate_type]
//	GET  /orgs/{org}/attestations/{subject_digest}[?per_page&after&predicate_type]
//	     -> 200 {"attestations": [{"bundle", "repository_id", "bundle_url", "initiator"}]} (+ Link rel="next")
//	GET  {bundle_url}                                  no auth (GitHub's is a pre-signed blob URL)
//	     -> 200 the bundle's JSON, snappy block-compressed, as gh attestation verify reads it
//
// The fake indexes a bundle under every sha256 subject of its DSSE
// in-toto statement, as GitHub does. It checks the bundle's shape, not its
// signature: verifying is the reader's job (GitHub says the same).

const docAttestations = "https://docs.github.com/rest/repos/repos#create-an-attestation"

// attestation is one stored bundle.
type attestation struct {
	id       int64
	repo     string // lower-case owner/name
	repoID   int64
	bundle   json.RawMessage
	subjects []string // sha256:HEX
	// predicateType is the statement's ("" for PutAttestation's, which
	// every predicate_type filter lets through).
	predicateType string
}

// jobToken is a workflow job's GITHUB_TOKEN: scoped to its repository.
type jobToken struct {
	repo              string // lower-case owner/name
	attestationsWrite bool
}

// JobToken issues a GITHUB_TOKEN for a job of repository (owner/name),
// with attestations: write when write is set (else read). It authenticates
// the attestation endpoints.
func (s *Server) JobToken(repository string, write bool) string {
	tok := "ghs_" + randomToken(36)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.jobTokens == nil {
		s.jobTokens = map[[32]byte]*jobToken{}
	}
	s.jobTokens[sha256.Sum256([]byte(tok))] = &jobToken{repo: strings.ToLower(repository), attestationsWrite: write}
	return tok
}

// Attestations returns the bundles stored for a repository (owner/name),
// oldest first.
func (s *Server) Attestations(repository string) []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []json.RawMessage
	for _, a := range s.attestations {
		if a.repo == strings.ToLower(repository) {
			out = append(out, a.bundle)
		}
	}
	return out
}

// PutAttestation stores a bundle as if a job of repository had uploaded
// it, without checking its shape (tests of hostile stores use it).
func (s *Server) PutAttestation(repository string, bundle json.RawMessage, subjectDigests ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.addAttestationLocked(strings.ToLower(repository), bundle, subjectDigests, "")
}

func (s *Server) addAttestationLocked(repo string, bundle json.RawMessage, subjects []string, predicateType string) int64 {
	s.nextAttestation++
	s.attestations = append(s.attestations, &attestation{id: s.nextAttestation, repo: repo, repoID: s.repoIDs[repo], bundle: bundle,
		subjects: subjects, predicateType: predicateType})
	return s.nextAttestation
}

func (s *Server) jobAuth(w http.ResponseWriter, r *http.Request) *jobToken {
	tok, ok := bearer(r)
	if !ok {
		if h := r.Header.Get("Authorization"); strings.HasPrefix(strings.ToLower(h), "token ") {
			tok, ok = h[len("token "):], true
		}
	}
	if !ok {
		writeError(w, http.StatusUnauthorized, "Requires authentication", docREST)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.jobTokens[sha256.Sum256([]byte(tok))]
	if t == nil {
		writeError(w, http.StatusUnauthorized, "Bad credentials", docREST)
		return nil
	}
	return t
}

var subjectDigestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func (s *Server) handleCreateAttestation(w http.ResponseWriter, r *http.Request) {
	t := s.jobAuth(w, r)
	if t == nil {
		return
	}
	repo := strings.ToLower(r.PathValue("owner") + "/" + r.PathValue("repo"))
	if t.repo != repo || !t.attestationsWrite {
		writeError(w, http.StatusForbidden, "Resource not accessible by integration", docAttestations)
		return
	}
	var req struct {
		Bundle json.RawMessage `json:"bundle"`
	}
	if !decodeRequest(w, r, []string{"bundle"}, []string{"bundle"}, &req, docAttestations) {
		return
	}
	subjects, predicateType, err := bundleStatement(req.Bundle)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\n"+err.Error(), docAttestations)
		return
	}
	s.mu.Lock()
	id := s.addAttestationLocked(repo, req.Bundle, subjects, predicateType)
	s.mu.Unlock()
	writeJSON(w, http.StatusCreated, map[string]int64{"id": id})
}

// bundleStatement reads the sha256 subjects and the predicate type of a
// DSSE bundle's in-toto statement.
func bundleStatement(b json.RawMessage) ([]string, string, error) {
	var doc struct {
		MediaType string `json:"mediaType"`
		DSSE      *struct {
			Payload     string `json:"payload"`
			PayloadType string `json:"payloadType"`
		} `json:"dsseEnvelope"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || !strings.HasPrefix(doc.MediaType, "application/vnd.dev.sigstore.bundle") {
		return nil, "", fmt.Errorf("bundle is not a sigstore bundle")
	}
	if doc.DSSE == nil || doc.DSSE.PayloadType != "application/vnd.in-toto+json" {
		return nil, "", fmt.Errorf("bundle holds no in-toto DSSE envelope")
	}
	payload, err := base64.StdEncoding.DecodeString(doc.DSSE.Payload)
	if err != nil {
		return nil, "", fmt.Errorf("DSSE payload is not base64")
	}
	var st struct {
		Subject []struct {
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
		PredicateType string `json:"predicateType"`
	}
	if err := json.Unmarshal(payload, &st); err != nil {
		return nil, "", fmt.Errorf("statement is not JSON")
	}
	var out []string
	for _, sub := range st.Subject {
		if d := "sha256:" + strings.ToLower(sub.Digest["sha256"]); subjectDigestRE.MatchString(d) {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return nil, "", fmt.Errorf("statement has no sha256 subject")
	}
	return out, st.PredicateType, nil
}

// handleListAttestations serves both the repository and the organization
// listing. Reading needs a job token of the same owner (the fake treats
// every repository as private).
func (s *Server) handleListAttestations(w http.ResponseWriter, r *http.Request) {
	t := s.jobAuth(w, r)
	if t == nil {
		return
	}
	owner, repo := r.PathValue("org"), ""
	if owner == "" {
		owner, repo = r.PathValue("owner"), strings.ToLower(r.PathValue("owner")+"/"+r.PathValue("repo"))
	}
	owner = strings.ToLower(owner)
	if o, _, _ := strings.Cut(t.repo, "/"); o != owner {
		writeError(w, http.StatusNotFound, "Not Found", docREST)
		return
	}
	digest := strings.ToLower(r.PathValue("subject_digest"))
	if !subjectDigestRE.MatchString(digest) {
		writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nsubject_digest must be sha256:HEX", docREST)
		return
	}
	perPage := 30
	if v := r.URL.Query().Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nper_page must be a positive integer", docREST)
			return
		}
		perPage = min(n, 100)
	}
	after := int64(0)
	if v := r.URL.Query().Get("after"); v != "" {
		b, err := hex.DecodeString(v)
		n, err2 := strconv.ParseInt(string(b), 10, 64)
		if err != nil || err2 != nil {
			writeError(w, http.StatusUnprocessableEntity, "Invalid request.\n\nafter is not a cursor", docREST)
			return
		}
		after = n
	}
	predicateType := r.URL.Query().Get("predicate_type")
	type item struct {
		Bundle       json.RawMessage `json:"bundle"`
		RepositoryID int64           `json:"repository_id"`
		BundleURL    string          `json:"bundle_url"`
		// Initiator is "user" for what the attestations API received
		// (gh attestation verify reads only those).
		Initiator string `json:"initiator"`
	}
	items := []item{}
	more := false
	var last int64
	s.mu.Lock()
	for _, a := range s.attestations {
		if a.id <= after || (repo != "" && a.repo != repo) || !strings.HasPrefix(a.repo, owner+"/") || !contains(a.subjects, digest) ||
			(predicateType != "" && a.predicateType != "" && a.predicateType != predicateType) {
			continue
		}
		if len(items) == perPage {
			more = true
			break
		}
		items = append(items, item{Bundle: a.bundle, RepositoryID: a.repoID,
			BundleURL: fmt.Sprintf("%s/_fake/attestations/%d/bundle", s.publicURL, a.id), Initiator: "user"})
		last = a.id
	}
	s.mu.Unlock()
	if more {
		base := requestBaseURL(r) + r.URL.EscapedPath()
		if orig, ok := r.Context().Value(originalPathKey{}).(string); ok {
			base = requestBaseURL(r) + orig
		}
		q := url.Values{"per_page": {strconv.Itoa(perPage)}, "after": {hex.EncodeToString([]byte(strconv.FormatInt(last, 10)))}}
		w.Header().Set("Link", fmt.Sprintf("<%s?%s>; rel=\"next\"", base, q.Encode()))
	}
	writeJSON(w, http.StatusOK, map[string]any{"attestations": items})
}

// handleAttestationBundle serves a bundle_url: the bundle's JSON in
// snappy's block format, which is what GitHub's blob storage returns and
// what gh attestation verify decompresses.
func (s *Server) handleAttestationBundle(w http.ResponseWriter, r *http.Request) {
	id, ok := parseID(r.PathValue("id"))
	var b json.RawMessage
	s.mu.Lock()
	for _, a := range s.attestations {
		if ok && a.id == id {
			b = a.bundle
		}
	}
	s.mu.Unlock()
	if b == nil {
		writeError(w, http.StatusNotFound, "Not Found", docREST)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
	w.Write(snappy.Encode(nil, b))
}
