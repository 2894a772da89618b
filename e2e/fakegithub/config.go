package fakegithub

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/attested-runner/attested-runner/internal/fileio"
	"github.com/google/go-github/v62/github"
)

// MaxConfigSize bounds a Config file and the key file it names.
const MaxConfigSize = 1 << 20

// Config is the JSON form of Options, for running the fake as its own
// process (the demo). Unknown fields are rejected.
//
//	{
//	  "listen": "127.0.0.1:8081",
//	  "public_url": "http://127.0.0.1:8081",
//	  "app_id": 12345,
//	  "installation_id": 67890,
//	  "app_public_key_path": "app.pem",
//	  "org": "acme",
//	  "repos": ["acme/widgets"],
//	  "permissions": {"organization_self_hosted_runners": "write", "administration": "write"},
//	  "runner_groups": {"1": "Default"},
//	  "runner_key_bits": 2048,
//	  "job_lease_seconds": 30,
//	  "jobs": [ { "repository": "acme/widgets", ... } ]
//	}
type Config struct {
	Listen         string `json:"listen"`
	PublicURL      string `json:"public_url,omitempty"`
	AppID          int64  `json:"app_id"`
	AppSlug        string `json:"app_slug,omitempty"`
	InstallationID int64  `json:"installation_id"`
	// AppPublicKeyPath names a PEM file with the App's public key (PKIX or
	// PKCS #1) or its private key (PKCS #1 or PKCS #8; only the public half
	// is used). A relative path is relative to the config file.
	AppPublicKeyPath string                          `json:"app_public_key_path"`
	Org              string                          `json:"org,omitempty"`
	Repos            []string                        `json:"repos,omitempty"`
	Account          string                          `json:"account,omitempty"`
	TargetType       string                          `json:"target_type,omitempty"`
	Permissions      *github.InstallationPermissions `json:"permissions,omitempty"`
	RunnerGroups     map[int64]string                `json:"runner_groups,omitempty"`
	RunnerKeyBits    int                             `json:"runner_key_bits,omitempty"`
	JobLeaseSeconds  int                             `json:"job_lease_seconds,omitempty"`
	Jobs             []Job                           `json:"jobs,omitempty"`

	dir string
}

// LoadConfig reads a Config file (at most MaxConfigSize bytes).
func LoadConfig(path string) (*Config, error) {
	b, err := fileio.ReadFile(path, MaxConfigSize)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := decodeJSONStrict(b, &c); err != nil {
		return nil, fmt.Errorf("fakegithub config %s: %w", path, err)
	}
	c.dir = filepath.Dir(path)
	return &c, nil
}

// Options turns the config into Options, loading the App key.
func (c *Config) Options() (Options, error) {
	if c.AppPublicKeyPath == "" {
		return Options{}, errors.New("fakegithub config: app_public_key_path is required")
	}
	p := c.AppPublicKeyPath
	if !filepath.IsAbs(p) && c.dir != "" {
		p = filepath.Join(c.dir, p)
	}
	b, err := fileio.ReadFile(p, MaxConfigSize)
	if err != nil {
		return Options{}, err
	}
	pub, err := ParseAppPublicKey(b)
	if err != nil {
		return Options{}, fmt.Errorf("fakegithub config: %s: %w", p, err)
	}
	if c.JobLeaseSeconds < 0 {
		return Options{}, errors.New("fakegithub config: job_lease_seconds is negative")
	}
	return Options{
		AppID:          c.AppID,
		AppSlug:        c.AppSlug,
		AppPublicKey:   pub,
		InstallationID: c.InstallationID,
		Org:            c.Org,
		Repos:          c.Repos,
		Account:        c.Account,
		TargetType:     c.TargetType,
		Permissions:    c.Permissions,
		RunnerGroups:   c.RunnerGroups,
		RunnerKeyBits:  c.RunnerKeyBits,
		JobLease:       time.Duration(c.JobLeaseSeconds) * time.Second,
		PublicURL:      c.PublicURL,
		Jobs:           c.Jobs,
	}, nil
}

// ParseAppPublicKey reads an RSA public key from PEM: a PUBLIC KEY, an RSA
// PUBLIC KEY, or an (RSA) PRIVATE KEY as GitHub hands it to App owners.
func ParseAppPublicKey(pemBytes []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "RSA PRIVATE KEY":
		var k *rsa.PrivateKey
		k, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		if err == nil {
			key = &k.PublicKey
		}
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		if k, ok := key.(*rsa.PrivateKey); ok {
			key = &k.PublicKey
		}
	default:
		return nil, fmt.Errorf("PEM block %q is not an RSA key", block.Type)
	}
	if err != nil {
		return nil, err
	}
	pub, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return pub, nil
}
