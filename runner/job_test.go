package runner

import (
	"context"

	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWorkspaceRel(t *testing.T) {
	ws := "/home/runner/_work/app/app"
	for in, want := range map[string]string{
		"dist/app.tgz":                        "dist/app.tgz",
		"./dist//app.tgz":                     "dist/app.tgz",
		"/home/runner/_work/app/app/a.bin":    "a.bin",
		"dist/../a.bin":                       "a.bin",
		"../other/secret":                     "",
		"/etc/shadow":                         "",
		"/home/runner/_work/app/app/../x.bin": "",
		"":                                    "",
	} {
		got, err := workspaceRel(ws, in)
		if want == "" {
			if err == nil {
				t.Errorf("%q: accepted as %q", in, got)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("%q: got %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestHookReportJob(t *testing.T) {
	env := map[string]string{
		"GITHUB_SERVER_URL": "https://github.com", "GITHUB_REPOSITORY": "o/r", "GITHUB_REF": "refs/heads/main",
		"GITHUB_SHA": strings.Repeat("a", 40), "GITHUB_WORKFLOW_REF": "o/r/.github/workflows/b.yml@refs/heads/main",
		"GITHUB_RUN_ID": "1", "GITHUB_RUN_ATTEMPT": "1", "GITHUB_JOB": "build", "RUNNER_NAME": "attested-abc",
		"ACTIONS_RUNNER_INPUT_JITCONFIG": "secret", "UNRELATED": "x",
	}
	rep := ReportFromEnv(func(k string) string { return env[k] })
	if _, ok := rep.Env["ACTIONS_RUNNER_INPUT_JITCONFIG"]; ok || rep.Env["UNRELATED"] != "" {
		t.Fatal("the report carries variables outside its list")
	}
	j := rep.Job()
	if err := j.Validate(); err != nil {
		t.Fatal(err)
	}
	delete(rep.Env, "GITHUB_SHA")
	if err := rep.Job().Validate(); err == nil || !strings.Contains(err.Error(), "sha") {
		t.Fatalf("missing sha: %v", err)
	}
	rep.Env["GITHUB_REF"] = "refs/heads/x\nGITHUB_SHA=evil"
	if err := rep.validate(); err == nil {
		t.Fatal("newline in a variable accepted")
	}
}

// TestSocketRefusesOtherUIDs: the socket serves only the runner user.
func TestSocketRefusesOtherUIDs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := listenSocket(path)
	if err != nil {
		t.Fatal(err)
	}
	called := false
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { called = true; writeSocketJSON(w, struct{}{}) })
	srv := serveSocket(context.Background(), ln, os.Getuid()+4242, h, func(string, ...any) {})
	defer srv.Close()
	err = (&Client{Socket: path}).Call(context.Background(), SocketPathAttest, &AttestRequest{Subjects: []string{"a"}}, nil)
	if err == nil || !strings.Contains(err.Error(), "may not use the agent socket") || called {
		t.Fatalf("another uid was served: %v (handler called %v)", err, called)
	}
	// Same uid: served.
	path2 := filepath.Join(t.TempDir(), "agent2.sock")
	ln2, err := listenSocket(path2)
	if err != nil {
		t.Fatal(err)
	}
	srv2 := serveSocket(context.Background(), ln2, os.Getuid(), h, func(string, ...any) {})
	defer srv2.Close()
	if err := (&Client{Socket: path2}).Call(context.Background(), SocketPathAttest, &AttestRequest{}, nil); err != nil || !called {
		t.Fatalf("the runner uid was refused: %v", err)
	}
	// Not a unix socket: no peer uid.
	if _, err := peerUID(&net.TCPConn{}); err == nil {
		t.Fatal("peer uid of a TCP conn")
	}
	var missing *Client = &Client{Socket: filepath.Join(t.TempDir(), "none.sock")}
	if err := missing.Call(context.Background(), SocketPathAttest, &AttestRequest{}, nil); err == nil || !strings.Contains(err.Error(), "attested runner") {
		t.Fatalf("missing socket: %v", err)
	}
}
