package fleet

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// validConfig is a fleet section with one qemu pool, as JSON fields.
func validConfig() map[string]any {
	return map[string]any{
		"webhookSecret": "webhook.secret",
		"pools": []any{map[string]any{
			"name":   "linux",
			"labels": []any{"attested", "linux"},
			"image":  map[string]any{"dir": "image", "provenance": "image/image.sigstore.json"},
			"qemu":   map[string]any{"stateDir": "/var/lib/jobgate/vms"},
		}},
	}
}

func poolOf(c map[string]any) map[string]any { return c["pools"].([]any)[0].(map[string]any) }

func TestParseConfig(t *testing.T) {
	raw, _ := json.Marshal(validConfig())
	c, err := ParseConfig(raw, "/etc/jobgate")
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pools[0]
	want := PoolConfig{
		Name: "linux", Labels: []string{"self-hosted", "attested", "linux"},
		Image:    ImageConfig{Dir: "/etc/jobgate/image", Boot: "qemu-direct", Provenance: "/etc/jobgate/image/image.sigstore.json"},
		MaxTotal: 4, LaunchesPerMinute: 6, ReserveRequests: 500,
		QEMU: p.QEMU,
	}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("pool (-want +got):\n%s", diff)
	}
	if c.WebhookSecret != "/etc/jobgate/webhook.secret" {
		t.Errorf("webhook secret %q", c.WebhookSecret)
	}

	// Values given are kept, not replaced by defaults.
	given := validConfig()
	pool := poolOf(given)
	pool["labels"] = []any{"Self-Hosted", "attested"}
	pool["minIdle"], pool["maxTotal"], pool["launchesPerMinute"], pool["reserveRequests"] = 2, 2, 1.5, 100
	pool["image"].(map[string]any)["boot"] = "uki"
	raw, _ = json.Marshal(given)
	c, err = ParseConfig(raw, "/etc/jobgate")
	if err != nil {
		t.Fatal(err)
	}
	p = c.Pools[0]
	if strings.Join(p.Labels, ",") != "Self-Hosted,attested" || p.MinIdle != 2 || p.MaxTotal != 2 || p.LaunchesPerMinute != 1.5 ||
		p.ReserveRequests != 100 || p.Image.Boot != "uki" {
		t.Errorf("pool %+v: values given were changed", p)
	}
}

func TestParseConfigRejections(t *testing.T) {
	for _, tc := range []struct {
		name    string
		edit    func(c, pool map[string]any)
		raw     []byte // instead of the edited config
		wantErr string
	}{
		{name: "over its size limit", raw: []byte(`{"webhookSecret":"` + strings.Repeat("a", maxConfig) + `"}`), wantErr: "configuration over"},
		{name: "unknown field", edit: func(c, _ map[string]any) { c["admin"] = true }, wantErr: "unknown field"},
		{name: "trailing data", raw: []byte(`{"webhookSecret":"s","pools":[]} {}`), wantErr: "trailing data"},
		{name: "no webhook secret", edit: func(c, _ map[string]any) { delete(c, "webhookSecret") }, wantErr: "webhookSecret"},
		{name: "metrics on every address", edit: func(c, _ map[string]any) { c["metricsListen"] = "0.0.0.0:9100" }, wantErr: "metricsListen"},
		{name: "metrics on a host name", edit: func(c, _ map[string]any) { c["metricsListen"] = "metrics.example:9100" }, wantErr: "metricsListen"},
		{name: "metrics address without port", edit: func(c, _ map[string]any) { c["metricsListen"] = "127.0.0.1" }, wantErr: "metricsListen"},
		{name: "no pools", edit: func(c, _ map[string]any) { c["pools"] = []any{} }, wantErr: "at least one pool"},
		{name: "pool name with capitals", edit: func(_, p map[string]any) { p["name"] = "Linux" }, wantErr: "want lower-case"},
		{name: "pool name of 32", edit: func(_, p map[string]any) { p["name"] = "l" + strings.Repeat("x", 31) }, wantErr: "want lower-case"},
		{name: "no labels", edit: func(_, p map[string]any) { p["labels"] = []any{} }, wantErr: "labels: at least one"},
		{name: "no provenance", edit: func(_, p map[string]any) { delete(p["image"].(map[string]any), "provenance") }, wantErr: "image.provenance"},
		{name: "no provider", edit: func(_, p map[string]any) { delete(p, "qemu") }, wantErr: "exactly one provider"},
		{name: "two providers", edit: func(_, p map[string]any) { p["gce"] = map[string]any{"project": "p"} }, wantErr: "exactly one provider"},
		{name: "negative minIdle", edit: func(_, p map[string]any) { p["minIdle"] = -1 }, wantErr: "negative"},
		{name: "negative maxTotal", edit: func(_, p map[string]any) { p["maxTotal"] = -1 }, wantErr: "negative"},
		{name: "negative launch rate", edit: func(_, p map[string]any) { p["launchesPerMinute"] = -0.5 }, wantErr: "negative"},
		{name: "negative reserve", edit: func(_, p map[string]any) { p["reserveRequests"] = -1 }, wantErr: "negative"},
		{name: "minIdle over maxTotal", edit: func(_, p map[string]any) { p["minIdle"], p["maxTotal"] = 3, 2 }, wantErr: "exceeds maxTotal"},
		{name: "minIdle over the default maxTotal", edit: func(_, p map[string]any) { p["minIdle"] = 5 }, wantErr: "exceeds maxTotal"},
		{name: "unknown boot", edit: func(_, p map[string]any) { p["image"].(map[string]any)["boot"] = "bios" }, wantErr: "image.boot"},
		{name: "no image dir", edit: func(_, p map[string]any) { delete(p["image"].(map[string]any), "dir") }, wantErr: "image.dir"},
		{name: "gce without the UKI", edit: func(_, p map[string]any) {
			delete(p, "qemu")
			p["gce"] = map[string]any{"project": "p", "zone": "europe-west4-a", "image": "projects/p/global/images/i"}
		}, wantErr: "image.boot must be uki"},
		{name: "empty label", edit: func(_, p map[string]any) { p["labels"] = []any{"attested", ""} }, wantErr: `label "`},
		{name: "label with a comma", edit: func(_, p map[string]any) { p["labels"] = []any{"attested,gpu"} }, wantErr: `label "`},
		{name: "label of 101", edit: func(_, p map[string]any) { p["labels"] = []any{strings.Repeat("l", 101)} }, wantErr: `label "`},
		{name: "provider config invalid", edit: func(_, p map[string]any) { p["qemu"].(map[string]any)["accel"] = "xen" }, wantErr: "qemu.accel"},
		{name: "pool twice", edit: func(c, p map[string]any) { c["pools"] = []any{p, p} }, wantErr: "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := tc.raw
			if raw == nil {
				c := validConfig()
				tc.edit(c, poolOf(c))
				raw, _ = json.Marshal(c)
			}
			if _, err := ParseConfig(raw, "/etc/jobgate"); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseConfig: %v, want %q", err, tc.wantErr)
			}
		})
	}
	// At the bounds: accepted.
	for name, edit := range map[string]func(c, pool map[string]any){
		"metrics on loopback":       func(c, _ map[string]any) { c["metricsListen"] = "127.0.0.1:9100" },
		"metrics on IPv6 loopback":  func(c, _ map[string]any) { c["metricsListen"] = "[::1]:9100" },
		"metrics on localhost":      func(c, _ map[string]any) { c["metricsListen"] = "localhost:9100" },
		"pool name of 31":           func(_, p map[string]any) { p["name"] = "l" + strings.Repeat("x", 30) },
		"label of 100":              func(_, p map[string]any) { p["labels"] = []any{strings.Repeat("l", 100)} },
		"minIdle equal to maxTotal": func(_, p map[string]any) { p["minIdle"], p["maxTotal"] = 2, 2 },
	} {
		t.Run(name, func(t *testing.T) {
			c := validConfig()
			edit(c, poolOf(c))
			raw, _ := json.Marshal(c)
			if _, err := ParseConfig(raw, "/etc/jobgate"); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestPoolMatches: a job goes to a pool only if the pool's runners have
// every one of its labels (compared as GitHub does, ignoring case); a job
// without labels matches no pool.
func TestPoolMatches(t *testing.T) {
	p := &PoolConfig{Labels: []string{"self-hosted", "attested", "linux"}}
	for _, tc := range []struct {
		labels []string
		want   bool
	}{
		{[]string{"self-hosted", "attested", "linux"}, true},
		{[]string{"Attested"}, true},
		{[]string{"attested", "gpu"}, false},
		{[]string{"gpu"}, false},
		{nil, false},
	} {
		if got := p.matches(tc.labels); got != tc.want {
			t.Errorf("matches(%v) = %v, want %v", tc.labels, got, tc.want)
		}
	}
}
