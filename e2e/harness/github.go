package harness

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"os"
	"path/filepath"
	"time"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
)

// GitHubOptions configure the fake GitHub. Zero values take the defaults.
type GitHubOptions struct {
	// Org is the organization the App is installed on (default octo-org).
	Org string
	// Repos are its repositories (default octo-org/app).
	Repos []string
	// JobLease: how long a running job survives without its runner
	// renewing it (default 3 s): the time after which a killed runner's job
	// fails and its runner goes offline.
	JobLease time.Duration
}

// GitHub is the fake GitHub, served in this process on loopback, and the
// App identity the gate is configured with.
type GitHub struct {
	*fakegithub.Server
	AppID, InstallationID int64
	Org                   string
	Repos                 []string
	// AppKeyPath is the App's RSA private key (PEM, mode 0600).
	AppKeyPath string
}

// StartGitHub starts a fake GitHub and writes its App key into dir.
func StartGitHub(dir string, o GitHubOptions) (*GitHub, error) {
	if o.Org == "" {
		o.Org = "octo-org"
	}
	if len(o.Repos) == 0 {
		o.Repos = []string{o.Org + "/app"}
	}
	if o.JobLease == 0 {
		o.JobLease = 3 * time.Second
	}
	key, _, err := fakegithub.AppKey()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	gh := &GitHub{AppID: 4242, InstallationID: 4343, Org: o.Org, Repos: o.Repos, AppKeyPath: filepath.Join(dir, "github-app-key.pem")}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	if err := fileio.WriteFileAtomic(gh.AppKeyPath, pemKey, 0o600); err != nil {
		return nil, err
	}
	gh.Server, err = fakegithub.Start(fakegithub.Options{
		AppID: gh.AppID, AppPublicKey: &key.PublicKey, InstallationID: gh.InstallationID,
		Org: o.Org, Repos: o.Repos, JobLease: o.JobLease,
	})
	if err != nil {
		return nil, fmt.Errorf("fake GitHub: %w", err)
	}
	return gh, nil
}

// RunnerNames lists the names of the runners GitHub has now.
func (g *GitHub) RunnerNames() []string {
	var out []string
	for _, r := range g.Runners() {
		out = append(out, r.Name)
	}
	return out
}
