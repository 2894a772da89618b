package runner

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRunnerUserReach(t *testing.T) {
	const nobody = 65534
	root := t.TempDir()
	for _, d := range []string{filepath.Dir(root), root} { // t.TempDir's parent is 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(rel string, mode os.FileMode) string {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(p, mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	open := mk("open", 0o755)
	closed := mk("closed", 0o700)
	agent := filepath.Join(open, "attested-runner")
	if err := os.WriteFile(agent, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	good := Config{
		RunnerUID: nobody, RunnerGID: nobody, AgentPath: agent,
		StateDir: filepath.Join(open, "state", "not-yet-created"), SocketPath: filepath.Join(open, "sock", "agent.sock"),
		RunnerDir: mk("open/runner", 0o755),
	}
	if err := good.checkRunnerUserReach(); err != nil {
		t.Fatalf("reachable layout refused: %v", err)
	}

	privateAgent := filepath.Join(open, "private-agent")
	if err := os.WriteFile(privateAgent, nil, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		edit func(*Config)
		want string
	}{
		"state dir below a private directory":    {func(c *Config) { c.StateDir = filepath.Join(closed, "state") }, "state directory"},
		"agent binary below a private directory": {func(c *Config) { c.AgentPath = filepath.Join(closed, "attested-runner") }, "agent binary"},
		"agent binary not executable by others":  {func(c *Config) { c.AgentPath = privateAgent }, "agent binary"},
		"socket directory private":               {func(c *Config) { c.SocketPath = filepath.Join(closed, "agent.sock") }, "socket"},
		"runner directory private":               {func(c *Config) { c.RunnerDir = closed }, "runner directory"},
	} {
		t.Run(name, func(t *testing.T) {
			c := good
			tc.edit(&c)
			err := c.checkRunnerUserReach()
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), closed) && !strings.Contains(err.Error(), privateAgent) {
				t.Fatalf("error %q does not name %q and the blocking path", err, tc.want)
			}
		})
	}

	// The owner's bits apply to the owner: its own 0700 directory is fine.
	if err := reachableBy(filepath.Join(closed, "state"), 0o1, os.Getuid(), os.Getgid()); err != nil {
		t.Fatalf("owner's own private directory refused: %v", err)
	}
}
