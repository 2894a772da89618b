package fakegithub

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/http"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v4"
	"github.com/google/go-github/v62/github"
)

// GitHub's rules for App JWTs: exp at most 10 minutes ahead; iat may be a
// little in the future to allow for clock drift.
const (
	maxJWTLifetime = 10 * time.Minute
	jwtClockSkew   = 60 * time.Second
	// InstallationTokenTTL is how long an installation token lives.
	InstallationTokenTTL = time.Hour
)

type installToken struct {
	installationID int64
	perms          github.InstallationPermissions
	repos          map[string]bool // lower-case owner/name; nil = all of the installation's
	expires        time.Time
}

var errJWT = errors.New("app jwt rejected")

// verifyAppJWT checks an App JWT: RS256 signature by the App key, iss equal
// to the App id (string or number: ghinstallation sends a string, others a
// number), exp in the future but at most 10 minutes ahead, iat not in the
// future beyond clock skew.
func (s *Server) verifyAppJWT(r *http.Request) (string, error) {
	raw, ok := bearer(r)
	if !ok {
		return "A JSON web token could not be decoded", errJWT
	}
	claims := jwt.MapClaims{}
	parser := jwt.NewParser(jwt.WithValidMethods([]string{"RS256"}), jwt.WithoutClaimsValidation())
	if _, err := parser.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return s.opts.AppPublicKey, nil }); err != nil {
		return "A JSON web token could not be decoded", errJWT
	}
	now := s.now()
	exp, okExp := numericClaim(claims["exp"])
	iat, okIat := numericClaim(claims["iat"])
	switch {
	case !okExp || !exp.After(now):
		return "'Expiration time' claim ('exp') must be a numeric value representing the future time at which the assertion expires.", errJWT
	case exp.Sub(now) > maxJWTLifetime+jwtClockSkew:
		return "'Expiration time' claim ('exp') is too far in the future.", errJWT
	case !okIat || iat.After(now.Add(jwtClockSkew)):
		return "'Issued at' claim ('iat') must be an Integer representing the time that the assertion was issued.", errJWT
	}
	var iss int64
	switch v := claims["iss"].(type) {
	case string:
		if _, err := fmt.Sscan(v, &iss); err != nil || fmt.Sprint(iss) != v {
			return "'Issuer' claim ('iss') must be an Integer", errJWT
		}
	case float64:
		if v != math.Trunc(v) || v < 1 || v > 1<<53 {
			return "'Issuer' claim ('iss') must be an Integer", errJWT
		}
		iss = int64(v)
	default:
		return "'Issuer' claim ('iss') must be an Integer", errJWT
	}
	if iss != s.opts.AppID {
		return "Integration not found", errJWT
	}
	return "", nil
}

func numericClaim(v any) (time.Time, bool) {
	f, ok := v.(float64)
	if !ok || f != math.Trunc(f) || f < 0 || f > 1<<40 {
		return time.Time{}, false
	}
	return time.Unix(int64(f), 0), true
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
		return "", false
	}
	return tok, true
}

// requireApp writes 401 unless the request carries a valid App JWT.
func (s *Server) requireApp(w http.ResponseWriter, r *http.Request) bool {
	if msg, err := s.verifyAppJWT(r); err != nil {
		writeError(w, http.StatusUnauthorized, msg, docJWTAuthApp)
		return false
	}
	return true
}

func (s *Server) handleGetApp(w http.ResponseWriter, r *http.Request) {
	if !s.requireApp(w, r) {
		return
	}
	s.mu.Lock()
	perms := s.perms
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, &github.App{
		ID:          github.Int64(s.opts.AppID),
		Slug:        github.String(s.opts.AppSlug),
		NodeID:      github.String(fmt.Sprintf("A_fake%d", s.opts.AppID)),
		Name:        github.String(s.opts.AppSlug),
		Owner:       &github.User{Login: github.String(s.opts.Account), Type: github.String(s.opts.TargetType)},
		HTMLURL:     github.String(s.URL() + "/apps/" + s.opts.AppSlug),
		Permissions: &perms,
		Events:      []string{},
	})
}

func (s *Server) installation() *github.Installation {
	s.mu.Lock()
	perms := s.perms
	s.mu.Unlock()
	sel := "all"
	if s.opts.Org == "" || len(s.opts.Repos) > 0 {
		sel = "selected"
	}
	base := s.URL()
	return &github.Installation{
		ID:                  github.Int64(s.opts.InstallationID),
		AppID:               github.Int64(s.opts.AppID),
		AppSlug:             github.String(s.opts.AppSlug),
		TargetID:            github.Int64(9000001),
		Account:             &github.User{Login: github.String(s.opts.Account), ID: github.Int64(9000001), Type: github.String(s.opts.TargetType)},
		AccessTokensURL:     github.String(fmt.Sprintf("%s/api/v3/app/installations/%d/access_tokens", base, s.opts.InstallationID)),
		RepositoriesURL:     github.String(base + "/api/v3/installation/repositories"),
		TargetType:          github.String(s.opts.TargetType),
		RepositorySelection: github.String(sel),
		Permissions:         &perms,
		Events:              []string{},
	}
}

func (s *Server) handleGetInstallation(w http.ResponseWriter, r *http.Request) {
	if !s.requireApp(w, r) {
		return
	}
	if id, ok := parseID(r.PathValue("installation_id")); !ok || id != s.opts.InstallationID {
		writeError(w, http.StatusNotFound, "Not Found", docREST)
		return
	}
	writeJSON(w, http.StatusOK, s.installation())
}

func (s *Server) handleAccessToken(w http.ResponseWriter, r *http.Request) {
	if !s.requireApp(w, r) {
		return
	}
	if id, ok := parseID(r.PathValue("installation_id")); !ok || id != s.opts.InstallationID {
		writeError(w, http.StatusNotFound, "Not Found", docAppToken)
		return
	}
	var req github.InstallationTokenOptions
	if !decodeRequest(w, r, []string{"repository_ids", "repositories", "permissions"}, nil, &req, docAppToken) {
		return
	}
	s.mu.Lock()
	granted := s.perms
	s.mu.Unlock()
	perms := granted
	if req.Permissions != nil {
		want, have := permMap(req.Permissions), permMap(&granted)
		for name, level := range want {
			if levelRank(level) == 0 || levelRank(level) > levelRank(have[name]) {
				writeError(w, http.StatusUnprocessableEntity, "The permissions requested are not granted to this installation.", docAppToken)
				return
			}
		}
		perms = *req.Permissions
	}
	var repos map[string]bool
	if len(req.Repositories) > 0 || len(req.RepositoryIDs) > 0 {
		repos = map[string]bool{}
		owner := s.opts.Account
		for _, name := range req.Repositories {
			full := strings.ToLower(owner + "/" + name)
			if _, ok := s.repoIDs[full]; !ok {
				writeError(w, http.StatusUnprocessableEntity, "There is at least one repository that does not exist or is not accessible to the parent installation.", docAppToken)
				return
			}
			repos[full] = true
		}
		for _, id := range req.RepositoryIDs {
			found := false
			for full, rid := range s.repoIDs {
				if rid == id {
					repos[full], found = true, true
				}
			}
			if !found {
				writeError(w, http.StatusUnprocessableEntity, "There is at least one repository that does not exist or is not accessible to the parent installation.", docAppToken)
				return
			}
		}
	}
	tok := "ghs_" + randomToken(36)
	expires := s.now().Add(InstallationTokenTTL).Truncate(time.Second)
	s.mu.Lock()
	s.tokens[sha256.Sum256([]byte(tok))] = &installToken{installationID: s.opts.InstallationID, perms: perms, repos: repos, expires: expires}
	s.mu.Unlock()
	out := &github.InstallationToken{
		Token:       github.String(tok),
		ExpiresAt:   &github.Timestamp{Time: expires.UTC()},
		Permissions: &perms,
	}
	for full := range repos {
		out.Repositories = append(out.Repositories, &github.Repository{ID: github.Int64(s.repoIDs[full]), FullName: github.String(s.repoNames[full])})
	}
	writeJSON(w, http.StatusCreated, out)
}

// installationAuth authenticates an installation token (Authorization:
// "token X" or "Bearer X"); it writes 401 and returns nil on failure.
func (s *Server) installationAuth(w http.ResponseWriter, r *http.Request) *installToken {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if h == "" {
		writeError(w, http.StatusUnauthorized, "Requires authentication", docREST)
		return nil
	}
	if !ok || !(strings.EqualFold(scheme, "token") || strings.EqualFold(scheme, "Bearer")) {
		writeError(w, http.StatusUnauthorized, "Bad credentials", docREST)
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t := s.tokens[sha256.Sum256([]byte(tok))]
	if t == nil || !s.now().Before(t.expires) {
		writeError(w, http.StatusUnauthorized, "Bad credentials", docREST)
		return nil
	}
	s.countRate(w, t.installationID)
	return t
}

// permMap flattens permissions to name -> level using their JSON names.
func permMap(p *github.InstallationPermissions) map[string]string {
	m := map[string]string{}
	if p == nil {
		return m
	}
	b, err := json.Marshal(p)
	if err != nil {
		return m
	}
	_ = json.Unmarshal(b, &m)
	return m
}

func levelRank(level string) int {
	switch level {
	case "read":
		return 1
	case "write":
		return 2
	case "admin":
		return 3
	}
	return 0
}

// randomToken returns n characters of [A-Za-z0-9] from crypto/rand.
func randomToken(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	max := big.NewInt(int64(len(alphabet)))
	for i := range b {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err) // crypto/rand does not fail on supported platforms
		}
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

// newUUID returns a random RFC 4122 version 4 UUID.
func newUUID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
