package fakegithub

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bradleyfalzon/ghinstallation/v2"
	"github.com/golang-jwt/jwt/v4"
	"github.com/google/go-github/v62/github"
)

const (
	testAppID          = 4242
	testInstallationID = 777
)

// testAppKey is the App key of every test: AppKey, shared by the process.
func testAppKey(t testing.TB) (*rsa.PrivateKey, []byte) {
	t.Helper()
	k, pemKey, err := AppKey()
	if err != nil {
		t.Fatal(err)
	}
	return k, pemKey
}

// fixture is a running fake and a go-github client authenticated as its
// installation through ghinstallation.
type fixture struct {
	srv    *Server
	client *github.Client
	itr    *ghinstallation.Transport
}

func startFake(t testing.TB, mutate func(*Options)) *fixture {
	t.Helper()
	key, keyPEM := testAppKey(t)
	opts := Options{
		AppID:          testAppID,
		InstallationID: testInstallationID,
		AppPublicKey:   &key.PublicKey,
		Org:            "acme",
		Repos:          []string{"acme/widgets", "acme/gadgets"},
	}
	if mutate != nil {
		mutate(&opts)
	}
	srv, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	itr, err := ghinstallation.New(http.DefaultTransport, testAppID, testInstallationID, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	// ghinstallation joins BaseURL and "/app/installations/..." after
	// trimming a trailing slash, so both forms work.
	itr.BaseURL = srv.URL() + "/api/v3/"
	client, err := github.NewClient(&http.Client{Transport: itr}).WithEnterpriseURLs(srv.URL(), srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, client: client, itr: itr}
}

func statusOf(t *testing.T, err error) int {
	t.Helper()
	var er *github.ErrorResponse
	if !errors.As(err, &er) {
		t.Fatalf("error %v (%T) is not a GitHub error response", err, err)
	}
	return er.Response.StatusCode
}

func mintOrg(t testing.TB, f *fixture, name string, labels ...string) *github.JITRunnerConfig {
	t.Helper()
	cfg, _, err := f.client.Actions.GenerateOrgJITConfig(context.Background(), "acme", &github.GenerateJITConfigRequest{
		Name: name, RunnerGroupID: 1, Labels: labels,
	})
	if err != nil {
		t.Fatalf("GenerateOrgJITConfig(%s): %v", name, err)
	}
	return cfg
}

func TestInstallationTokenAndApp(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()

	tok, err := f.itr.Token(ctx)
	if err != nil {
		t.Fatalf("installation token: %v", err)
	}
	if !strings.HasPrefix(tok, "ghs_") || len(tok) != 40 {
		t.Errorf("token %q does not look like an installation token", tok)
	}
	exp, _, err := f.itr.Expiry()
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(exp); d < 59*time.Minute || d > 61*time.Minute {
		t.Errorf("token expires in %v, want about 1h", d)
	}

	// App-level calls with the App JWT.
	key, keyPEM := testAppKey(t)
	_ = key
	atr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, testAppID, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	atr.BaseURL = f.srv.URL()
	appClient, err := github.NewClient(&http.Client{Transport: atr}).WithEnterpriseURLs(f.srv.URL(), f.srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	app, _, err := appClient.Apps.Get(ctx, "")
	if err != nil {
		t.Fatalf("GET /app: %v", err)
	}
	if app.GetID() != testAppID {
		t.Errorf("app id %d", app.GetID())
	}
	inst, _, err := appClient.Apps.GetInstallation(ctx, testInstallationID)
	if err != nil {
		t.Fatalf("GET installation: %v", err)
	}
	if got := inst.GetAccount().GetLogin(); got != "acme" {
		t.Errorf("account %q, want acme", got)
	}
	if inst.GetTargetType() != "Organization" {
		t.Errorf("target type %q", inst.GetTargetType())
	}
	if inst.GetPermissions().GetOrganizationSelfHostedRunners() != "write" || inst.GetPermissions().GetAdministration() != "write" {
		t.Errorf("permissions %+v", inst.GetPermissions())
	}
	if _, _, err := appClient.Apps.GetInstallation(ctx, 1); statusOf(t, err) != http.StatusNotFound {
		t.Errorf("other installation: %v", err)
	}
	// The installation token is not an App JWT.
	if _, _, err := f.client.Apps.Get(ctx, ""); statusOf(t, err) != http.StatusUnauthorized {
		t.Errorf("GET /app with an installation token: %v", err)
	}
	if n := f.srv.CountCalls(http.MethodPost, "/app/installations/777/access_tokens", http.StatusCreated); n != 1 {
		t.Errorf("%d token exchanges, want 1", n)
	}
}

// signJWT signs App claims with key using method.
func signJWT(t *testing.T, key *rsa.PrivateKey, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodRS256, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAppJWTChecks(t *testing.T) {
	f := startFake(t, nil)
	key, _ := testAppKey(t)
	otherKey, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Unix()
	hs256, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": testAppID, "iat": now - 30, "exp": now + 60}).SignedString([]byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		token  string
		status int
	}{
		{"iss as string", signJWT(t, key, jwt.MapClaims{"iss": fmt.Sprint(testAppID), "iat": now - 30, "exp": now + 90}), http.StatusCreated},
		{"iss as number", signJWT(t, key, jwt.MapClaims{"iss": testAppID, "iat": now - 30, "exp": now + 90}), http.StatusCreated},
		{"other app", signJWT(t, key, jwt.MapClaims{"iss": testAppID + 1, "iat": now - 30, "exp": now + 90}), http.StatusUnauthorized},
		{"other key", signJWT(t, otherKey, jwt.MapClaims{"iss": testAppID, "iat": now - 30, "exp": now + 90}), http.StatusUnauthorized},
		{"expired", signJWT(t, key, jwt.MapClaims{"iss": testAppID, "iat": now - 700, "exp": now - 10}), http.StatusUnauthorized},
		{"exp too far", signJWT(t, key, jwt.MapClaims{"iss": testAppID, "iat": now, "exp": now + 3600}), http.StatusUnauthorized},
		{"iat in the future", signJWT(t, key, jwt.MapClaims{"iss": testAppID, "iat": now + 300, "exp": now + 400}), http.StatusUnauthorized},
		{"no exp", signJWT(t, key, jwt.MapClaims{"iss": testAppID, "iat": now}), http.StatusUnauthorized},
		{"iss not a number", signJWT(t, key, jwt.MapClaims{"iss": "app", "iat": now, "exp": now + 60}), http.StatusUnauthorized},
		{"HS256", hs256, http.StatusUnauthorized},
		{"garbage", "not.a.jwt", http.StatusUnauthorized},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, f.srv.URL()+"/app/installations/777/access_tokens", nil)
			req.Header.Set("Authorization", "Bearer "+tc.token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				b, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, b, tc.status)
			}
			if tc.status == http.StatusCreated {
				var tok github.InstallationToken
				if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.GetToken() == "" || tok.ExpiresAt == nil {
					t.Fatalf("token answer %+v, %v", tok, err)
				}
			}
		})
	}
}

func TestTokenNarrowing(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	key, keyPEM := testAppKey(t)
	_ = key
	atr, err := ghinstallation.NewAppsTransport(http.DefaultTransport, testAppID, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	atr.BaseURL = f.srv.URL()
	appClient, _ := github.NewClient(&http.Client{Transport: atr}).WithEnterpriseURLs(f.srv.URL(), f.srv.URL())

	// Read-only administration: repository runners can be listed, not minted.
	tok, _, err := appClient.Apps.CreateInstallationToken(ctx, testInstallationID, &github.InstallationTokenOptions{
		Permissions: &github.InstallationPermissions{Administration: github.String("read")},
	})
	if err != nil {
		t.Fatal(err)
	}
	ro, _ := github.NewClient(nil).WithAuthToken(tok.GetToken()).WithEnterpriseURLs(f.srv.URL(), f.srv.URL())
	if _, _, err := ro.Actions.ListRunners(ctx, "acme", "widgets", nil); err != nil {
		t.Fatalf("list with administration:read: %v", err)
	}
	_, resp, err := ro.Actions.GenerateRepoJITConfig(ctx, "acme", "widgets", &github.GenerateJITConfigRequest{Name: "r", RunnerGroupID: 1, Labels: []string{"x"}})
	if statusOf(t, err) != http.StatusForbidden {
		t.Fatalf("mint with administration:read: %v", err)
	}
	var er *github.ErrorResponse
	errors.As(err, &er)
	if er.Message != "Resource not accessible by integration" || resp.Header.Get("X-Accepted-GitHub-Permissions") != "administration=write" {
		t.Errorf("403 %q, accepted permissions %q", er.Message, resp.Header.Get("X-Accepted-GitHub-Permissions"))
	}
	// No organization permission in this token at all.
	if _, _, err := ro.Actions.ListOrganizationRunners(ctx, "acme", nil); statusOf(t, err) != http.StatusForbidden {
		t.Errorf("org list without organization_self_hosted_runners: %v", err)
	}
	// More than the installation has.
	f.srv.SetPermissions(github.InstallationPermissions{Administration: github.String("read")})
	if _, _, err := appClient.Apps.CreateInstallationToken(ctx, testInstallationID, &github.InstallationTokenOptions{
		Permissions: &github.InstallationPermissions{Administration: github.String("write")},
	}); statusOf(t, err) != http.StatusUnprocessableEntity {
		t.Errorf("asking for write over read: %v", err)
	}
	// Repository narrowing: the other repository disappears (404).
	f.srv.SetPermissions(github.InstallationPermissions{Administration: github.String("write")})
	tok, _, err = appClient.Apps.CreateInstallationToken(ctx, testInstallationID, &github.InstallationTokenOptions{Repositories: []string{"widgets"}})
	if err != nil {
		t.Fatal(err)
	}
	one, _ := github.NewClient(nil).WithAuthToken(tok.GetToken()).WithEnterpriseURLs(f.srv.URL(), f.srv.URL())
	if _, _, err := one.Actions.ListRunners(ctx, "acme", "gadgets", nil); statusOf(t, err) != http.StatusNotFound {
		t.Errorf("list of a repository outside the token: %v", err)
	}
	if _, _, err := appClient.Apps.CreateInstallationToken(ctx, testInstallationID, &github.InstallationTokenOptions{Repositories: []string{"nope"}}); statusOf(t, err) != http.StatusUnprocessableEntity {
		t.Errorf("narrowing to an unknown repository: %v", err)
	}
	// An installation without the runner permission: 403.
	f2 := startFake(t, func(o *Options) {
		o.Permissions = &github.InstallationPermissions{Metadata: github.String("read")}
	})
	if _, _, err := f2.client.Actions.GenerateOrgJITConfig(ctx, "acme", &github.GenerateJITConfigRequest{Name: "x", RunnerGroupID: 1, Labels: []string{"x"}}); statusOf(t, err) != http.StatusForbidden {
		t.Errorf("org mint without permission: %v", err)
	}
}

func TestBadInstallationToken(t *testing.T) {
	f := startFake(t, nil)
	for _, tc := range []struct {
		header string
		msg    string
	}{
		{"", "Requires authentication"},
		{"token ghs_nope", "Bad credentials"},
		{"Basic abc", "Bad credentials"},
	} {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL()+"/orgs/acme/actions/runners", nil)
		if tc.header != "" {
			req.Header.Set("Authorization", tc.header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var er github.ErrorResponse
		json.NewDecoder(resp.Body).Decode(&er)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || er.Message != tc.msg {
			t.Errorf("Authorization %q: %d %q, want 401 %q", tc.header, resp.StatusCode, er.Message, tc.msg)
		}
	}
}

func TestMintListGetDelete(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()

	org := mintOrg(t, f, "org-runner-1", "self-hosted", "attested")
	r := org.GetRunner()
	if r.GetName() != "org-runner-1" || r.GetStatus() != "offline" || r.GetBusy() || r.GetOS() != "linux" {
		t.Errorf("runner %+v", r)
	}
	var labels []string
	for _, l := range r.Labels {
		if l.GetType() != "custom" || l.GetID() == 0 {
			t.Errorf("label %+v", l)
		}
		labels = append(labels, l.GetName())
	}
	if want := []string{"self-hosted", "attested"}; !slices.Equal(labels, want) {
		t.Errorf("labels %q, want %q", labels, want)
	}
	cfg, err := DecodeJITConfig(org.GetEncodedJITConfig())
	if err != nil {
		t.Fatalf("decode minted config: %v", err)
	}
	wantRunner := RunnerSettings{
		AgentID: r.GetID(), AgentName: "org-runner-1", PoolID: 1, PoolName: "Default",
		ServerURL: f.srv.URL() + "/_fake/", GitHubURL: f.srv.URL() + "/acme", WorkFolder: "_work",
		Ephemeral: true, // no DisableUpdate: GitHub's JIT request has no such field
	}
	if cfg.Runner != wantRunner {
		t.Errorf(".runner\n got %+v\nwant %+v", cfg.Runner, wantRunner)
	}
	if cfg.Credentials.Scheme != "OAuth" || cfg.Credentials.ClientID() == "" ||
		cfg.Credentials.AuthorizationURL() != f.srv.URL()+"/_fake/oauth2/token" ||
		cfg.Credentials.Data["requireFipsCryptography"] != "True" {
		t.Errorf(".credentials %+v", cfg.Credentials)
	}

	wf := "custom-work"
	repo, _, err := f.client.Actions.GenerateRepoJITConfig(ctx, "acme", "widgets", &github.GenerateJITConfigRequest{
		Name: "repo-runner-1", RunnerGroupID: 1, Labels: []string{"attested"}, WorkFolder: &wf,
	})
	if err != nil {
		t.Fatal(err)
	}
	rcfg, err := DecodeJITConfig(repo.GetEncodedJITConfig())
	if err != nil {
		t.Fatal(err)
	}
	if rcfg.Runner.GitHubURL != f.srv.URL()+"/acme/widgets" || rcfg.Runner.WorkFolder != "custom-work" {
		t.Errorf("repo .runner %+v", rcfg.Runner)
	}
	// The same name in another scope is another runner.
	if _, _, err := f.client.Actions.GenerateRepoJITConfig(ctx, "acme", "gadgets", &github.GenerateJITConfigRequest{
		Name: "repo-runner-1", RunnerGroupID: 1, Labels: []string{"x"},
	}); err != nil {
		t.Errorf("same name in another repository: %v", err)
	}

	// Org listing does not include repository runners.
	for i := 2; i <= 5; i++ {
		mintOrg(t, f, fmt.Sprintf("org-runner-%d", i), "attested")
	}
	var names []string
	opts := &github.ListRunnersOptions{ListOptions: github.ListOptions{PerPage: 2}}
	pages := 0
	for {
		page, resp, err := f.client.Actions.ListOrganizationRunners(ctx, "acme", opts)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		if page.TotalCount != 5 {
			t.Errorf("total_count %d, want 5", page.TotalCount)
		}
		if pages == 1 && resp.LastPage != 3 {
			t.Errorf("first page: last page %d, want 3", resp.LastPage)
		}
		for _, r := range page.Runners {
			names = append(names, r.GetName())
		}
		if resp.NextPage == 0 {
			break
		}
		opts.Page = resp.NextPage
	}
	if want := []string{"org-runner-1", "org-runner-2", "org-runner-3", "org-runner-4", "org-runner-5"}; !slices.Equal(names, want) || pages != 3 {
		t.Errorf("%d pages, names %q; want 3 pages, %q", pages, names, want)
	}
	byName, _, err := f.client.Actions.ListOrganizationRunners(ctx, "acme", &github.ListRunnersOptions{Name: github.String("org-runner-3")})
	if err != nil || byName.TotalCount != 1 || byName.Runners[0].GetName() != "org-runner-3" {
		t.Errorf("name filter: %+v, %v", byName, err)
	}

	got, _, err := f.client.Actions.GetOrganizationRunner(ctx, "acme", r.GetID())
	if err != nil || got.GetName() != "org-runner-1" {
		t.Fatalf("get: %+v, %v", got, err)
	}
	if _, _, err := f.client.Actions.GetRunner(ctx, "acme", "widgets", r.GetID()); statusOf(t, err) != http.StatusNotFound {
		t.Errorf("org runner fetched through a repository: %v", err)
	}
	if _, err := f.client.Actions.RemoveOrganizationRunner(ctx, "acme", r.GetID()); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := f.client.Actions.RemoveOrganizationRunner(ctx, "acme", r.GetID()); statusOf(t, err) != http.StatusNotFound {
		t.Errorf("second delete: %v", err)
	}
	if _, ok := f.srv.Runner("org-runner-1"); ok {
		t.Error("deleted runner still live")
	}
	// A deleted runner's name is free again.
	mintOrg(t, f, "org-runner-1", "attested")
	if _, err := f.client.Actions.RemoveRunner(ctx, "acme", "widgets", repo.GetRunner().GetID()); err != nil {
		t.Fatalf("repo delete: %v", err)
	}
	if f.srv.JITMints() != 8 || f.srv.RunnerDeletes() != 2 {
		t.Errorf("mints %d deletes %d, want 8 and 2", f.srv.JITMints(), f.srv.RunnerDeletes())
	}
	if n := len(f.srv.Runners()); n != 6 {
		t.Errorf("%d live runners, want 6", n)
	}
}

func TestScopeNotFound(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	req := &github.GenerateJITConfigRequest{Name: "r", RunnerGroupID: 1, Labels: []string{"x"}}
	if _, _, err := f.client.Actions.GenerateOrgJITConfig(ctx, "other", req); statusOf(t, err) != http.StatusNotFound {
		t.Errorf("other org: %v", err)
	}
	if _, _, err := f.client.Actions.GenerateRepoJITConfig(ctx, "acme", "secret", req); statusOf(t, err) != http.StatusNotFound {
		t.Errorf("other repo: %v", err)
	}
	if _, _, err := f.client.Actions.ListRunners(ctx, "evil", "widgets", nil); statusOf(t, err) != http.StatusNotFound {
		t.Errorf("other owner: %v", err)
	}
	// A user installation has no organization endpoints.
	u := startFake(t, func(o *Options) { o.Org = ""; o.Repos = []string{"alice/tool"} })
	if _, _, err := u.client.Actions.ListOrganizationRunners(ctx, "alice", nil); statusOf(t, err) != http.StatusNotFound {
		t.Errorf("user installation org list: %v", err)
	}
	if _, _, err := u.client.Actions.GenerateRepoJITConfig(ctx, "alice", "tool", req); err != nil {
		t.Errorf("user installation repo mint: %v", err)
	}
}

// rawPost posts body with the installation token.
func rawPost(t *testing.T, f *fixture, path string, body []byte) (int, string) {
	t.Helper()
	tok, err := f.itr.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL()+path, bytes.NewReader(body))
	req.Header.Set("Authorization", "token "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var er github.ErrorResponse
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &er)
	return resp.StatusCode, er.Message
}

func TestMintValidation(t *testing.T) {
	f := startFake(t, nil)
	mintOrg(t, f, "taken", "x")
	const path = "/orgs/acme/actions/runners/generate-jitconfig"
	tests := []struct {
		name   string
		body   string
		status int
		msg    string
	}{
		{"duplicate name", `{"name":"taken","runner_group_id":1,"labels":["x"]}`, 409, "Already exists - A runner with the name taken already exists."},
		{"duplicate name other case", `{"name":"TAKEN","runner_group_id":1,"labels":["x"]}`, 409, "Already exists - A runner with the name TAKEN already exists."},
		{"empty labels", `{"name":"a","runner_group_id":1,"labels":[]}`, 422, "Invalid request.\n\nFor 'properties/labels', [] should contain at least 1 item(s)."},
		{"empty name", `{"name":"","runner_group_id":1,"labels":["x"]}`, 422, "Invalid request.\n\nFor 'properties/name', \"\" is too short (minimum 1 characters)."},
		{"unknown key", `{"name":"a","runner_group_id":1,"labels":["x"],"ephemeral":true}`, 422, "Invalid request.\n\n\"ephemeral\" is not a permitted key."},
		{"missing group", `{"name":"a","labels":["x"]}`, 422, "Invalid request.\n\n\"runner_group_id\" wasn't supplied."},
		{"labels not an array", `{"name":"a","runner_group_id":1,"labels":"x"}`, 422, ""},
		{"unknown group", `{"name":"a","runner_group_id":2,"labels":["x"]}`, 404, "Not Found"},
		{"bad json", `{"name":`, 400, "Problems parsing JSON"},
		{"trailing data", `{"name":"a","runner_group_id":1,"labels":["x"]} {}`, 400, "Problems parsing JSON"},
		{"too large", `{"name":"` + strings.Repeat("a", MaxRequestBody) + `"}`, 413, "Request body too large"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			status, msg := rawPost(t, f, path, []byte(tc.body))
			if status != tc.status || (tc.msg != "" && msg != tc.msg) {
				t.Errorf("got %d %q, want %d %q", status, msg, tc.status, tc.msg)
			}
		})
	}
	if f.srv.JITMints() != 1 {
		t.Errorf("%d mints, want 1", f.srv.JITMints())
	}
}

func TestConcurrentMints(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok, conflicts := map[string]int{}, 0
	for i := 0; i < 24; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			name := fmt.Sprintf("r-%d", i%6)
			_, _, err := f.client.Actions.GenerateOrgJITConfig(ctx, "acme", &github.GenerateJITConfigRequest{Name: name, RunnerGroupID: 1, Labels: []string{"x"}})
			mu.Lock()
			defer mu.Unlock()
			var er *github.ErrorResponse
			switch {
			case err == nil:
				ok[name]++
			case errors.As(err, &er) && er.Response.StatusCode == http.StatusConflict:
				conflicts++
			default:
				t.Errorf("mint %s: %v", name, err)
			}
		}(i)
		if i%4 == 0 {
			go func() { f.srv.Runners(); f.srv.Calls() }()
		}
	}
	wg.Wait()
	for name, n := range ok {
		if n != 1 {
			t.Errorf("%s minted %d times", name, n)
		}
	}
	if len(ok) != 6 || conflicts != 18 || len(f.srv.Runners()) != 6 {
		t.Errorf("%d names minted, %d conflicts, %d runners; want 6, 18, 6", len(ok), conflicts, len(f.srv.Runners()))
	}
}

func TestFaults(t *testing.T) {
	f := startFake(t, nil)
	ctx := context.Background()
	// Warm the installation token so that faults hit the mint only.
	if _, err := f.itr.Token(ctx); err != nil {
		t.Fatal(err)
	}
	const mintPath = "/orgs/acme/actions/runners/generate-jitconfig"

	t.Run("502 twice then success", func(t *testing.T) {
		f.srv.FailNext(http.MethodPost, mintPath, 2, http.StatusBadGateway, 0)
		var statuses []int
		for attempt := 0; attempt < 5; attempt++ {
			_, resp, err := f.client.Actions.GenerateOrgJITConfig(ctx, "acme", &github.GenerateJITConfigRequest{Name: "retry", RunnerGroupID: 1, Labels: []string{"x"}})
			statuses = append(statuses, resp.StatusCode)
			if err == nil {
				break
			}
		}
		if want := []int{502, 502, 201}; !slices.Equal(statuses, want) {
			t.Errorf("statuses %v, want %v", statuses, want)
		}
	})

	t.Run("secondary rate limit", func(t *testing.T) {
		// A client of its own: go-github then refuses requests until
		// Retry-After has passed.
		c := github.NewClient(&http.Client{Transport: f.itr})
		c, _ = c.WithEnterpriseURLs(f.srv.URL(), f.srv.URL())
		f.srv.FailNext("", "/orgs/acme/actions/runners", 1, http.StatusForbidden, 1500*time.Millisecond)
		_, resp, err := c.Actions.ListOrganizationRunners(ctx, "acme", nil)
		var ae *github.AbuseRateLimitError
		if !errors.As(err, &ae) || ae.RetryAfter == nil || *ae.RetryAfter != 2*time.Second {
			t.Fatalf("got %v, want a secondary rate limit with Retry-After 2s", err)
		}
		if resp.Header.Get("Retry-After") != "2" {
			t.Errorf("Retry-After %q", resp.Header.Get("Retry-After"))
		}
	})

	t.Run("primary rate limit", func(t *testing.T) {
		// A fresh client: go-github remembers rate limits per client.
		tok, _ := f.itr.Token(ctx)
		c, _ := github.NewClient(nil).WithAuthToken(tok).WithEnterpriseURLs(f.srv.URL(), f.srv.URL())
		f.srv.Inject(Fault{Method: http.MethodGet, PathPrefix: "/orgs/acme/actions/runners", Count: 1, Status: http.StatusForbidden, RateLimitReset: time.Second})
		_, _, err := c.Actions.ListOrganizationRunners(ctx, "acme", nil)
		var rl *github.RateLimitError
		if !errors.As(err, &rl) || rl.Rate.Remaining != 0 || rl.Rate.Reset.Time.Before(time.Now()) {
			t.Fatalf("got %v, want a primary rate limit", err)
		}
		if !strings.HasPrefix(rl.Message, "API rate limit exceeded for installation ID 777.") {
			t.Errorf("message %q", rl.Message)
		}
	})

	t.Run("429 with Retry-After", func(t *testing.T) {
		f.srv.FailNext(http.MethodGet, "/orgs/acme/actions/runners/", 1, http.StatusTooManyRequests, time.Second)
		tok, _ := f.itr.Token(ctx)
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL()+"/api/v3/orgs/acme/actions/runners/1", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "1" {
			t.Errorf("%d Retry-After %q", resp.StatusCode, resp.Header.Get("Retry-After"))
		}
	})

	t.Run("failed after taking effect", func(t *testing.T) {
		f.srv.FailNextAfterApply(http.MethodPost, mintPath, 1, http.StatusBadGateway)
		_, _, err := f.client.Actions.GenerateOrgJITConfig(ctx, "acme", &github.GenerateJITConfigRequest{Name: "ghost", RunnerGroupID: 1, Labels: []string{"x"}})
		if statusOf(t, err) != http.StatusBadGateway {
			t.Fatalf("got %v, want 502", err)
		}
		if _, ok := f.srv.Runner("ghost"); !ok {
			t.Fatal("the failed mint did not create the runner")
		}
		// A naive retry under the same name now conflicts: the caller must
		// look the runner up (and delete it) rather than mint twice.
		_, _, err = f.client.Actions.GenerateOrgJITConfig(ctx, "acme", &github.GenerateJITConfigRequest{Name: "ghost", RunnerGroupID: 1, Labels: []string{"x"}})
		if statusOf(t, err) != http.StatusConflict {
			t.Errorf("retry: %v, want 409", err)
		}
	})

	t.Run("down", func(t *testing.T) {
		f.srv.Down(true)
		_, _, err := f.client.Actions.ListOrganizationRunners(ctx, "acme", nil)
		var er *github.ErrorResponse
		if err == nil || errors.As(err, &er) {
			t.Fatalf("got %v, want a connection error", err)
		}
		f.srv.Down(false)
		if _, _, err := f.client.Actions.ListOrganizationRunners(ctx, "acme", nil); err != nil {
			t.Fatalf("after Down(false): %v", err)
		}
	})

	t.Run("latency", func(t *testing.T) {
		f.srv.SetLatency(300 * time.Millisecond)
		defer f.srv.SetLatency(0)
		cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		if _, _, err := f.client.Actions.ListOrganizationRunners(cctx, "acme", nil); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("got %v, want a deadline", err)
		}
	})

	calls := f.srv.Calls()
	if len(calls) == 0 || calls[len(calls)-1].Method != http.MethodGet {
		t.Errorf("calls not recorded: %v", calls)
	}
	if n := f.srv.CountCalls(http.MethodPost, mintPath, http.StatusBadGateway); n != 3 {
		t.Errorf("%d recorded 502 mints, want 3", n)
	}
	if n, all := f.srv.CountCalls("", "/", 0), len(f.srv.Calls()); n != all {
		t.Errorf("CountCalls(any) %d, want all %d", n, all)
	}
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	_, keyPEM := testAppKey(t)
	if err := os.WriteFile(filepath.Join(dir, "app.pem"), keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := `{
	  "listen": "127.0.0.1:0",
	  "app_id": 4242, "installation_id": 777, "app_public_key_path": "app.pem",
	  "org": "acme", "repos": ["acme/widgets"],
	  "permissions": {"organization_self_hosted_runners": "write"},
	  "runner_groups": {"1": "Default", "3": "attested"},
	  "job_lease_seconds": 5,
	  "jobs": [{"repository": "acme/widgets", "ref": "refs/heads/main", "sha": "` + strings.Repeat("a", 40) + `",
	            "run_id": 1, "job": "build", "labels": ["attested"], "steps": [{"run": "true"}]}]
	}`
	path := filepath.Join(dir, "fake.json")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	opts, err := c.Options()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if rec, ok := srv.JobResult(1); !ok || rec.Job.RepositoryID == 0 || rec.Job.RunAttempt != 1 {
		t.Errorf("initial job %+v %v", rec, ok)
	}
	if opts.RunnerGroups[3] != "attested" || opts.JobLease != 5*time.Second {
		t.Errorf("options %+v", opts)
	}

	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"app_id": 1, "bogus": true}`), 0o600)
	if _, err := LoadConfig(bad); err == nil {
		t.Error("unknown config field accepted")
	}
}

func TestAPIv3PrefixAndUnknownPath(t *testing.T) {
	f := startFake(t, nil)
	tok, err := f.itr.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/orgs/acme/actions/runners", "/api/v3/orgs/acme/actions/runners"} {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL()+p, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("X-RateLimit-Limit") != "5000" {
			t.Errorf("%s: %d, rate limit header %q", p, resp.StatusCode, resp.Header.Get("X-RateLimit-Limit"))
		}
	}
	resp, err := http.Post(f.srv.URL()+"/orgs/acme/actions/runners", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var er github.ErrorResponse
	json.NewDecoder(resp.Body).Decode(&er)
	resp.Body.Close()
	if resp.StatusCode != 404 || er.Message != "Not Found" {
		t.Errorf("POST to a GET path: %d %q", resp.StatusCode, er.Message)
	}
}
