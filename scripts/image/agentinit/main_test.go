package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLoadConfig(t *testing.T) {
	valid := `{"modules": ["/lib/modules/x/virtio_net.ko"], "network": {"interface": "eth0", "address": "10.0.2.15/24", "gateway": "10.0.2.2"},
	  "runnerDir": "/runner", "runnerUser": "1000:1000", "runnerDevices": ["/dev/ttyS1"], "agent": ["/usr/bin/attested-runner", "run"]}`
	tests := []struct {
		name, json, wantErr string
	}{
		{"valid", valid, ""},
		{"unknown field", strings.Replace(valid, `"runnerDir"`, `"runnerDirectory"`, 1), "unknown field"},
		{"relative agent", strings.Replace(valid, `"/usr/bin/attested-runner"`, `"attested-runner"`, 1), "absolute path"},
		{"no agent", strings.Replace(valid, `"agent": ["/usr/bin/attested-runner", "run"]`, `"agent": []`, 1), "absolute path"},
		{"no runner user", strings.Replace(valid, `"1000:1000"`, `""`, 1), "runnerUser"},
		{"not JSON", "modules: x", "invalid character"},
		{"too large", `{"agent": ["/a"], "runnerDir": "/r", "runnerUser": "1:1", "modules": ["` + strings.Repeat("x", maxConfig) + `"]}`, "over"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "init.json")
			if err := os.WriteFile(p, []byte(tc.json), 0o644); err != nil {
				t.Fatal(err)
			}
			c, err := loadConfig(p)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if c.Network == nil || c.Network.Gateway != "10.0.2.2" || len(c.Modules) != 1 || c.RunnerDevices[0] != "/dev/ttyS1" {
					t.Errorf("config %+v", c)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("loadConfig: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestParseUser(t *testing.T) {
	if uid, gid, err := parseUser("1000:1001"); err != nil || uid != 1000 || gid != 1001 {
		t.Fatalf("parseUser: %d %d %v", uid, gid, err)
	}
	// The runner user is never root, and only numeric ids work in an
	// initramfs without a user database lookup.
	for _, s := range []string{"0:0", "1000:0", "runner", "1000", "-1:5", "a:b", ""} {
		if _, _, err := parseUser(s); err == nil {
			t.Errorf("parseUser(%q) accepted", s)
		}
	}
}
