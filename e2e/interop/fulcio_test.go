//go:build cgo

package interop

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/attested-runner/attested-runner/internal/fakesigstore"
)

// tool finds an installed program: $NAME_BIN, PATH, then $GOBIN or
// ~/go/bin (where go install puts it).
func tool(t *testing.T, name string) string {
	t.Helper()
	if p := os.Getenv(strings.ToUpper(name) + "_BIN"); p != "" {
		return p
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	dirs := []string{os.Getenv("GOBIN")}
	if home, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(home, "go", "bin"))
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if p := filepath.Join(d, name); isExec(p) {
			return p
		}
	}
	t.Skipf("%s is not installed (make interop-tools, or set %s_BIN): this interop test did not run", name, strings.ToUpper(name))
	return ""
}

func isExec(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// realFulcio runs Fulcio with an ephemeral CA, no CT log, trusting is as
// a github-workflow issuer. It returns its URL and its CA root.
func realFulcio(t *testing.T, is *fakesigstore.Issuer) (string, *x509.Certificate) {
	t.Helper()
	bin := tool(t, "fulcio")
	dir := t.TempDir()
	cfg, _ := json.Marshal(map[string]any{"OIDCIssuers": map[string]any{
		is.URL: map[string]any{"IssuerURL": is.URL, "ClientID": fakesigstore.Audience, "Type": "github-workflow"},
	}})
	cfgPath := filepath.Join(dir, "config.json")
	if err := os.WriteFile(cfgPath, cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "serve", "--ca", "ephemeralca", "--config-path", cfgPath, "--ct-log-url", "",
		"--host", "127.0.0.1", "--port", port, "--grpc-host", "127.0.0.1", "--grpc-port", freePort(t), "--metrics-port", freePort(t))
	logf, _ := os.Create(filepath.Join(dir, "fulcio.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("fulcio log:\n%s", tail(b, 4000))
		}
	})
	url := "http://127.0.0.1:" + port
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/api/v2/trustBundle")
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return url, trustBundleRoot(t, body)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("fulcio did not come up: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// trustBundleRoot is the self-signed root of Fulcio's /api/v2/trustBundle.
func trustBundleRoot(t *testing.T, body []byte) *x509.Certificate {
	t.Helper()
	var tb struct {
		Chains []struct {
			Certificates []string `json:"certificates"`
		} `json:"chains"`
	}
	if err := json.Unmarshal(body, &tb); err != nil || len(tb.Chains) == 0 || len(tb.Chains[0].Certificates) == 0 {
		t.Fatalf("trust bundle %s: %v", body, err)
	}
	certs := tb.Chains[0].Certificates
	block, _ := pem.Decode([]byte(certs[len(certs)-1]))
	if block == nil {
		t.Fatal("trust bundle: no PEM")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
