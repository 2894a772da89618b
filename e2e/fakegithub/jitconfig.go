package fakegithub

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"sort"
)

// Limits on a JIT config. A real one (2048-bit runner key) is about 4 KiB
// encoded; these are far above that and far below anything that could hurt.
const (
	// MaxJITConfigSize bounds the encoded JIT config (the value of
	// ACTIONS_RUNNER_INPUT_JITCONFIG).
	MaxJITConfigSize = 64 << 10
	// MaxJITFileSize bounds one decoded config file inside it.
	MaxJITFileSize = 16 << 10
	// MinRunnerKeyBits is the smallest runner key DecodeJITConfig accepts.
	MinRunnerKeyBits = 1024
	// MaxRunnerKeyBits is the largest runner key DecodeJITConfig accepts.
	MaxRunnerKeyBits = 8192
)

// The three files a JIT config carries, named as the runner names them in its
// root directory (actions/runner Runner.Listener writes each value, base64
// decoded, to <root>/<key>).
const (
	FileRunner      = ".runner"
	FileCredentials = ".credentials"
	FileRSAParams   = ".credentials_rsaparams"
)

// ErrJITConfig marks every rejection by DecodeJITConfig and ParseJITConfigFiles.
var ErrJITConfig = errors.New("invalid JIT config")

// JITConfig is a decoded JIT runner configuration.
type JITConfig struct {
	Runner      RunnerSettings
	Credentials Credentials
	RSAParams   RSAParams
	// Files holds the raw bytes of each file, as the real listener writes
	// them into the runner directory.
	Files map[string][]byte
}

// RunnerSettings is the `.runner` file: the fields of actions/runner's
// RunnerSettings (Runner.Common/ConfigurationStore.cs), camelCase as the
// runner serializes them.
type RunnerSettings struct {
	AgentID              int64  `json:"agentId"`
	AgentName            string `json:"agentName"`
	PoolID               int64  `json:"poolId"`
	PoolName             string `json:"poolName"`
	ServerURL            string `json:"serverUrl"`
	GitHubURL            string `json:"gitHubUrl"`
	WorkFolder           string `json:"workFolder"`
	Ephemeral            bool   `json:"ephemeral,omitempty"`
	DisableUpdate        bool   `json:"disableUpdate,omitempty"`
	IsHostedServer       bool   `json:"isHostedServer,omitempty"`
	SkipSessionRecover   bool   `json:"skipSessionRecover,omitempty"`
	MonitorSocketAddress string `json:"monitorSocketAddress,omitempty"`
	UseV2Flow            bool   `json:"useV2Flow,omitempty"`
	UseRunnerAdminFlow   bool   `json:"useRunnerAdminFlow,omitempty"`
	ServerURLV2          string `json:"serverUrlV2,omitempty"`
}

// Credentials is the `.credentials` file. The runner stores Data as a
// string-to-string dictionary, so booleans are the strings "True"/"False".
type Credentials struct {
	Scheme string            `json:"scheme"`
	Data   map[string]string `json:"data"`
}

// ClientID is the OAuth client id of the runner registration.
func (c Credentials) ClientID() string { return c.Data["clientId"] }

// AuthorizationURL is where the runner exchanges its signed assertion for an
// access token.
func (c Credentials) AuthorizationURL() string { return c.Data["authorizationUrl"] }

// RSAParams is the `.credentials_rsaparams` file: the runner's RSA private key
// as .NET RSAParameters, each big-endian integer base64 encoded (encoding/json
// encodes []byte the same way Newtonsoft.Json does).
type RSAParams struct {
	D        []byte `json:"d"`
	DP       []byte `json:"dp"`
	DQ       []byte `json:"dq"`
	Exponent []byte `json:"exponent"`
	InverseQ []byte `json:"inverseQ"`
	Modulus  []byte `json:"modulus"`
	P        []byte `json:"p"`
	Q        []byte `json:"q"`
}

// rsaParamsFromKey converts a key to its .NET parameters.
func rsaParamsFromKey(k *rsa.PrivateKey) RSAParams {
	k.Precompute()
	return RSAParams{
		D:        k.D.Bytes(),
		DP:       k.Precomputed.Dp.Bytes(),
		DQ:       k.Precomputed.Dq.Bytes(),
		Exponent: big.NewInt(int64(k.E)).Bytes(),
		InverseQ: k.Precomputed.Qinv.Bytes(),
		Modulus:  k.N.Bytes(),
		P:        k.Primes[0].Bytes(),
		Q:        k.Primes[1].Bytes(),
	}
}

// PrivateKey rebuilds and validates the RSA private key.
func (p RSAParams) PrivateKey() (*rsa.PrivateKey, error) {
	for name, v := range map[string][]byte{"d": p.D, "dp": p.DP, "dq": p.DQ, "exponent": p.Exponent,
		"inverseQ": p.InverseQ, "modulus": p.Modulus, "p": p.P, "q": p.Q} {
		if len(v) == 0 {
			return nil, fmt.Errorf("%w: %s: RSA parameter %q missing", ErrJITConfig, FileRSAParams, name)
		}
	}
	n := new(big.Int).SetBytes(p.Modulus)
	if bits := n.BitLen(); bits < MinRunnerKeyBits || bits > MaxRunnerKeyBits {
		return nil, fmt.Errorf("%w: %s: %d-bit modulus, want %d to %d bits", ErrJITConfig, FileRSAParams, bits, MinRunnerKeyBits, MaxRunnerKeyBits)
	}
	e := new(big.Int).SetBytes(p.Exponent)
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
		return nil, fmt.Errorf("%w: %s: RSA exponent out of range", ErrJITConfig, FileRSAParams)
	}
	k := &rsa.PrivateKey{
		PublicKey: rsa.PublicKey{N: n, E: int(e.Int64())},
		D:         new(big.Int).SetBytes(p.D),
		Primes:    []*big.Int{new(big.Int).SetBytes(p.P), new(big.Int).SetBytes(p.Q)},
	}
	if err := k.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrJITConfig, FileRSAParams, err)
	}
	k.Precompute()
	if k.Precomputed.Dp.Cmp(new(big.Int).SetBytes(p.DP)) != 0 ||
		k.Precomputed.Dq.Cmp(new(big.Int).SetBytes(p.DQ)) != 0 ||
		k.Precomputed.Qinv.Cmp(new(big.Int).SetBytes(p.InverseQ)) != 0 {
		return nil, fmt.Errorf("%w: %s: CRT parameters do not match the key", ErrJITConfig, FileRSAParams)
	}
	return k, nil
}

// DecodeJITConfig parses an encoded JIT config strictly: standard base64 (no
// whitespace) of a JSON object whose keys are exactly `.runner`,
// `.credentials` and `.credentials_rsaparams` and whose values are standard
// base64 of each file's JSON. Every file must decode with no unknown field,
// the required fields must be present (agent id and name, absolute server
// and GitHub URLs, OAuth scheme with client id and authorization URL) and the
// RSA key must be valid. Every error wraps ErrJITConfig and never quotes the
// input (it is a secret).
//
// The real runner (Runner.Listener/Runner.cs) is laxer: it writes every key
// of the object as a file under its root. The fake refuses unknown keys.
func DecodeJITConfig(encoded string) (*JITConfig, error) {
	if len(encoded) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrJITConfig)
	}
	if len(encoded) > MaxJITConfigSize {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrJITConfig, len(encoded), MaxJITConfigSize)
	}
	outer, err := decodeStdBase64(encoded)
	if err != nil {
		return nil, fmt.Errorf("%w: not base64: %v", ErrJITConfig, err)
	}
	var entries map[string]string
	if err := decodeJSONStrict(outer, &entries); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object of strings: %v", ErrJITConfig, err)
	}
	files := make(map[string][]byte, len(entries))
	for name, v := range entries {
		if len(v) > MaxJITConfigSize {
			return nil, fmt.Errorf("%w: %s too large", ErrJITConfig, name)
		}
		b, err := decodeStdBase64(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: not base64: %v", ErrJITConfig, safeName(name), err)
		}
		files[name] = b
	}
	return ParseJITConfigFiles(files)
}

// ParseJITConfigFiles parses the three config files (as the runner writes
// them to its root directory), with the checks of DecodeJITConfig.
func ParseJITConfigFiles(files map[string][]byte) (*JITConfig, error) {
	want := []string{FileRunner, FileCredentials, FileRSAParams}
	for name := range files {
		if name != FileRunner && name != FileCredentials && name != FileRSAParams {
			return nil, fmt.Errorf("%w: unexpected file %q", ErrJITConfig, safeName(name))
		}
	}
	for _, name := range want {
		b, ok := files[name]
		if !ok {
			return nil, fmt.Errorf("%w: %s missing", ErrJITConfig, name)
		}
		if len(b) > MaxJITFileSize {
			return nil, fmt.Errorf("%w: %s is %d bytes, limit %d", ErrJITConfig, name, len(b), MaxJITFileSize)
		}
	}
	cfg := &JITConfig{Files: make(map[string][]byte, 3)}
	for _, name := range want {
		cfg.Files[name] = bytes.Clone(files[name])
	}
	if err := decodeJSONStrict(stripBOM(files[FileRunner]), &cfg.Runner); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrJITConfig, FileRunner, err)
	}
	if err := decodeJSONStrict(stripBOM(files[FileCredentials]), &cfg.Credentials); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrJITConfig, FileCredentials, err)
	}
	if err := decodeJSONStrict(stripBOM(files[FileRSAParams]), &cfg.RSAParams); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrJITConfig, FileRSAParams, err)
	}
	r := cfg.Runner
	switch {
	case r.AgentID <= 0:
		return nil, fmt.Errorf("%w: %s: agentId missing", ErrJITConfig, FileRunner)
	case r.AgentName == "":
		return nil, fmt.Errorf("%w: %s: agentName missing", ErrJITConfig, FileRunner)
	case !absoluteURL(r.ServerURL):
		return nil, fmt.Errorf("%w: %s: serverUrl is not an absolute URL", ErrJITConfig, FileRunner)
	case !absoluteURL(r.GitHubURL):
		return nil, fmt.Errorf("%w: %s: gitHubUrl is not an absolute URL", ErrJITConfig, FileRunner)
	}
	c := cfg.Credentials
	switch {
	case c.Scheme != "OAuth":
		return nil, fmt.Errorf("%w: %s: scheme %q, want OAuth", ErrJITConfig, FileCredentials, safeName(c.Scheme))
	case c.ClientID() == "":
		return nil, fmt.Errorf("%w: %s: clientId missing", ErrJITConfig, FileCredentials)
	case !absoluteURL(c.AuthorizationURL()):
		return nil, fmt.Errorf("%w: %s: authorizationUrl is not an absolute URL", ErrJITConfig, FileCredentials)
	}
	if _, err := cfg.RSAParams.PrivateKey(); err != nil {
		return nil, err
	}
	return cfg, nil
}

// encodeJITConfig builds the encoded config the way GitHub does.
func encodeJITConfig(runner RunnerSettings, creds Credentials, key *rsa.PrivateKey) (string, error) {
	files := map[string]any{
		FileRunner:      runner,
		FileCredentials: creds,
		FileRSAParams:   rsaParamsFromKey(key),
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	outer := make(map[string]string, len(files))
	for _, n := range names {
		b, err := json.MarshalIndent(files[n], "", "  ")
		if err != nil {
			return "", err
		}
		outer[n] = base64.StdEncoding.EncodeToString(b)
	}
	b, err := json.Marshal(outer)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// decodeStdBase64 decodes padded standard base64 and refuses the whitespace
// that encoding/base64 would otherwise skip.
func decodeStdBase64(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return nil, fmt.Errorf("byte %d is not in the base64 alphabet", i)
		}
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// decodeJSONStrict decodes exactly one JSON value with no unknown fields and
// nothing after it.
func decodeJSONStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

// stripBOM drops a UTF-8 byte order mark: .NET writers may emit one and the
// runner's readers skip it.
func stripBOM(b []byte) []byte { return bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) }

func absoluteURL(s string) bool {
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// safeName quotes at most 40 bytes of an outside string in an error.
func safeName(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// newRunnerKey makes a runner key of the given size.
func newRunnerKey(bits int) (*rsa.PrivateKey, error) {
	return rsa.GenerateKey(rand.Reader, bits)
}
