package fakesigstore

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigstore/sigstore-go/pkg/fulcio/certificate"
)

// Fulcio is a certificate authority speaking Fulcio's v2 API for one
// issuer.
type Fulcio struct {
	URL    string
	Root   *x509.Certificate
	key    *ecdsa.PrivateKey
	issuer *Issuer

	// ServerURL is the GitHub server the certificates name (default
	// https://github.com, as Fulcio's github-workflow issuer type does;
	// tests against the fake GitHub set its URL).
	ServerURL string

	mu sync.Mutex
	// CertifyKey, if set, is certified instead of the requested key (a
	// compromised or confused CA).
	CertifyKey crypto.PublicKey
	// Requests counts signingCert requests.
	Requests int
}

// NewFulcio serves a Fulcio trusting is, until the test ends.
func NewFulcio(t testing.TB, is *Issuer) *Fulcio {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fakesigstore fulcio", Organization: []string{"attested-runner tests"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true, MaxPathLen: 1,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	root, _ := x509.ParseCertificate(der)
	f := &Fulcio{Root: root, key: key, issuer: is}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/v2/signingCert", f.signingCert)
	srv := httptest.NewServer(mux)
	f.URL = srv.URL
	t.Cleanup(srv.Close)
	return f
}

type certRequest struct {
	PublicKeyRequest struct {
		PublicKey struct {
			Algorithm string `json:"algorithm"`
			Content   string `json:"content"`
		} `json:"publicKey"`
		ProofOfPossession string `json:"proofOfPossession"`
	} `json:"publicKeyRequest"`
}

func fail(w http.ResponseWriter, code int, format string, args ...any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"code": code, "message": fmt.Sprintf(format, args...)})
}

func (f *Fulcio) signingCert(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.Requests++
	override := f.CertifyKey
	f.mu.Unlock()
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		fail(w, http.StatusUnauthorized, "no bearer token")
		return
	}
	claims, err := f.issuer.verify(tok)
	if err != nil {
		fail(w, http.StatusUnauthorized, "The OIDC token could not be verified: %v", err)
		return
	}
	var req certRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, "request: %v", err)
		return
	}
	block, _ := pem.Decode([]byte(req.PublicKeyRequest.PublicKey.Content))
	if block == nil {
		fail(w, http.StatusBadRequest, "public key is not PEM")
		return
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		fail(w, http.StatusBadRequest, "public key: %v", err)
		return
	}
	ek, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		fail(w, http.StatusBadRequest, "want an ECDSA key")
		return
	}
	// Proof of possession: the key signed the token's subject.
	pop, err := base64.StdEncoding.DecodeString(req.PublicKeyRequest.ProofOfPossession)
	sub, _ := claims["sub"].(string)
	d := sha256.Sum256([]byte(sub))
	if err != nil || !ecdsa.VerifyASN1(ek, d[:], pop) {
		fail(w, http.StatusBadRequest, "The signature supplied in the request could not be verified")
		return
	}
	if override != nil {
		pub = override
	}
	leaf, err := f.issue(pub, claims)
	if err != nil {
		fail(w, http.StatusInternalServerError, "%v", err)
		return
	}
	chain := []string{
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf})),
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Root.Raw})),
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"signedCertificateEmbeddedSct": map[string]any{"chain": map[string]any{"certificates": chain}}})
}

// issue makes a leaf the way Fulcio's github-workflow issuer type does:
// the job workflow ref as the SAN URI and the GitHub Actions claims as the
// 1.3.6.1.4.1.57264.1.* extensions.
func (f *Fulcio) issue(pub crypto.PublicKey, c map[string]any) ([]byte, error) {
	s := func(k string) string { v, _ := c[k].(string); return v }
	server := "https://github.com"
	if f.ServerURL != "" {
		server = strings.TrimSuffix(f.ServerURL, "/")
	}
	ext := certificate.Extensions{
		Issuer:                              s("iss"),
		BuildSignerURI:                      server + "/" + s("job_workflow_ref"),
		BuildSignerDigest:                   s("job_workflow_sha"),
		RunnerEnvironment:                   s("runner_environment"),
		SourceRepositoryURI:                 server + "/" + s("repository"),
		SourceRepositoryDigest:              s("sha"),
		SourceRepositoryRef:                 s("ref"),
		SourceRepositoryIdentifier:          s("repository_id"),
		SourceRepositoryOwnerURI:            server + "/" + s("repository_owner"),
		SourceRepositoryOwnerIdentifier:     s("repository_owner_id"),
		BuildConfigURI:                      server + "/" + s("workflow_ref"),
		BuildConfigDigest:                   s("workflow_sha"),
		BuildTrigger:                        s("event_name"),
		RunInvocationURI:                    fmt.Sprintf("%s/%s/actions/runs/%s/attempts/%s", server, s("repository"), s("run_id"), s("run_attempt")),
		SourceRepositoryVisibilityAtSigning: s("repository_visibility"),
	}
	// Real Fulcio still writes the deprecated raw issuer extension too.
	//lint:ignore SA1019 written for the clients that read only it
	exts := []pkix.Extension{{Id: certificate.OIDIssuer, Value: []byte(ext.Issuer)}}
	for _, e := range []struct {
		oid asn1.ObjectIdentifier
		v   string
	}{
		{certificate.OIDIssuerV2, ext.Issuer}, {certificate.OIDBuildSignerURI, ext.BuildSignerURI}, {certificate.OIDBuildSignerDigest, ext.BuildSignerDigest},
		{certificate.OIDRunnerEnvironment, ext.RunnerEnvironment}, {certificate.OIDSourceRepositoryURI, ext.SourceRepositoryURI},
		{certificate.OIDSourceRepositoryDigest, ext.SourceRepositoryDigest}, {certificate.OIDSourceRepositoryRef, ext.SourceRepositoryRef},
		{certificate.OIDSourceRepositoryIdentifier, ext.SourceRepositoryIdentifier}, {certificate.OIDSourceRepositoryOwnerURI, ext.SourceRepositoryOwnerURI},
		{certificate.OIDSourceRepositoryOwnerIdentifier, ext.SourceRepositoryOwnerIdentifier}, {certificate.OIDBuildConfigURI, ext.BuildConfigURI},
		{certificate.OIDBuildConfigDigest, ext.BuildConfigDigest}, {certificate.OIDBuildTrigger, ext.BuildTrigger},
		{certificate.OIDRunInvocationURI, ext.RunInvocationURI}, {certificate.OIDSourceRepositoryVisibilityAtSigning, ext.SourceRepositoryVisibilityAtSigning},
	} {
		if e.v == "" {
			continue
		}
		v, err := asn1.MarshalWithParams(e.v, "utf8")
		if err != nil {
			return nil, err
		}
		exts = append(exts, pkix.Extension{Id: e.oid, Value: v})
	}
	san, err := url.Parse(ext.BuildSignerURI)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, NotBefore: now.Add(-time.Minute), NotAfter: now.Add(10 * time.Minute),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning},
		URIs: []*url.URL{san}, ExtraExtensions: exts,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, f.Root, pub, f.key)
}
