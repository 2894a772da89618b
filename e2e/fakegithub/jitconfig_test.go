package fakegithub

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// mintedConfig returns a real encoded config from a running fake.
func mintedConfig(t testing.TB) string {
	t.Helper()
	f := startFake(t, nil)
	return mintOrg(t, f, "fuzz-seed", "x").GetEncodedJITConfig()
}

// reencode decodes an encoded config into its files, lets edit change them
// (raw JSON per file) and encodes it again.
func reencode(t *testing.T, encoded string, edit func(files map[string]string)) string {
	t.Helper()
	outer, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		t.Fatal(err)
	}
	var entries map[string]string
	if err := json.Unmarshal(outer, &entries); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for k, v := range entries {
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			t.Fatal(err)
		}
		files[k] = string(b)
	}
	edit(files)
	for k, v := range files {
		entries[k] = base64.StdEncoding.EncodeToString([]byte(v))
	}
	for k := range entries {
		if _, ok := files[k]; !ok {
			delete(entries, k)
		}
	}
	b, _ := json.Marshal(entries)
	return base64.StdEncoding.EncodeToString(b)
}

// editJSON changes one field of a file's JSON object (nil deletes it).
func editJSON(t *testing.T, files map[string]string, file, field string, value any) {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(files[file]), &m); err != nil {
		t.Fatal(err)
	}
	if value == nil {
		delete(m, field)
	} else {
		m[field] = value
	}
	b, _ := json.Marshal(m)
	files[file] = string(b)
}

func TestDecodeJITConfigRoundTrip(t *testing.T) {
	enc := mintedConfig(t)
	cfg, err := DecodeJITConfig(enc)
	if err != nil {
		t.Fatal(err)
	}
	key, err := cfg.RSAParams.PrivateKey()
	if err != nil {
		t.Fatal(err)
	}
	if key.N.BitLen() != 1024 || key.E != 65537 {
		t.Errorf("key %d bits, e=%d", key.N.BitLen(), key.E)
	}
	if len(cfg.Files) != 3 || !strings.Contains(string(cfg.Files[FileRunner]), `"agentName": "fuzz-seed"`) {
		t.Errorf("files %v", cfg.Files[FileRunner])
	}
	// ParseJITConfigFiles reads the files the listener writes.
	again, err := ParseJITConfigFiles(cfg.Files)
	if err != nil || again.Runner != cfg.Runner {
		t.Errorf("ParseJITConfigFiles: %+v, %v", again, err)
	}
	// A UTF-8 BOM, as .NET writes, is accepted.
	bom := reencode(t, enc, func(f map[string]string) { f[FileRunner] = "\xef\xbb\xbf" + f[FileRunner] })
	if _, err := DecodeJITConfig(bom); err != nil {
		t.Errorf("BOM: %v", err)
	}
}

func TestDecodeJITConfigRejects(t *testing.T) {
	enc := mintedConfig(t)
	otherKey := mintedConfig(t)
	var otherParams string
	reencode(t, otherKey, func(f map[string]string) { otherParams = f[FileRSAParams] })

	tests := []struct {
		name string
		in   string
	}{
		{"empty", ""},
		{"too large", strings.Repeat("A", MaxJITConfigSize+4)},
		{"not base64", "!!!!"},
		{"newline inside", enc[:20] + "\n" + enc[20:]},
		{"url-safe alphabet", strings.NewReplacer("+", "-", "/", "_").Replace(enc) + "-_"},
		{"not JSON", base64.StdEncoding.EncodeToString([]byte("hello"))},
		{"JSON array", base64.StdEncoding.EncodeToString([]byte(`["a"]`))},
		{"values not strings", base64.StdEncoding.EncodeToString([]byte(`{".runner": 1}`))},
		{"missing .credentials", reencode(t, enc, func(f map[string]string) { delete(f, FileCredentials) })},
		{"extra file", reencode(t, enc, func(f map[string]string) { f["../../etc/passwd"] = "x" })},
		{"inner not base64", base64.StdEncoding.EncodeToString([]byte(`{".runner":"%%%",".credentials":"",".credentials_rsaparams":""}`))},
		{"unknown .runner field", reencode(t, enc, func(f map[string]string) { editJSON(t, f, FileRunner, "bogus", 1) })},
		{"no agentId", reencode(t, enc, func(f map[string]string) { editJSON(t, f, FileRunner, "agentId", nil) })},
		{"no agentName", reencode(t, enc, func(f map[string]string) { editJSON(t, f, FileRunner, "agentName", "") })},
		{"relative serverUrl", reencode(t, enc, func(f map[string]string) { editJSON(t, f, FileRunner, "serverUrl", "/x") })},
		{"scheme not OAuth", reencode(t, enc, func(f map[string]string) { editJSON(t, f, FileCredentials, "scheme", "Basic") })},
		{"no clientId", reencode(t, enc, func(f map[string]string) {
			editJSON(t, f, FileCredentials, "data", map[string]string{"authorizationUrl": "http://x/"})
		})},
		{"trailing JSON", reencode(t, enc, func(f map[string]string) { f[FileCredentials] += "{}" })},
		{"missing prime", reencode(t, enc, func(f map[string]string) { editJSON(t, f, FileRSAParams, "q", nil) })},
		{"modulus of another key", reencode(t, enc, func(f map[string]string) {
			var m map[string]any
			json.Unmarshal([]byte(otherParams), &m)
			editJSON(t, f, FileRSAParams, "modulus", m["modulus"])
		})},
		{"CRT parameter of another key", reencode(t, enc, func(f map[string]string) {
			var m map[string]any
			json.Unmarshal([]byte(otherParams), &m)
			editJSON(t, f, FileRSAParams, "inverseQ", m["inverseQ"])
		})},
		{"tiny key", reencode(t, enc, func(f map[string]string) {
			editJSON(t, f, FileRSAParams, "modulus", base64.StdEncoding.EncodeToString([]byte{0xc5}))
		})},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeJITConfig(tc.in)
			if !errors.Is(err, ErrJITConfig) {
				t.Fatalf("got %v, want ErrJITConfig", err)
			}
			// Errors never quote the secret.
			if len(tc.in) > 60 && strings.Contains(err.Error(), tc.in[len(tc.in)-40:]) {
				t.Errorf("error quotes the input: %v", err)
			}
		})
	}
}

func FuzzDecodeJITConfig(f *testing.F) {
	// A real config from the fake, plus a few near misses.
	seed := mintedConfig(f)
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add("e30=")
	f.Add(base64.StdEncoding.EncodeToString([]byte(`{".runner":"e30=",".credentials":"e30=",".credentials_rsaparams":"e30="}`)))
	f.Fuzz(func(t *testing.T, s string) {
		cfg, err := DecodeJITConfig(s)
		if err != nil {
			if !errors.Is(err, ErrJITConfig) {
				t.Fatalf("error %v does not wrap ErrJITConfig", err)
			}
			return
		}
		if cfg.Runner.AgentID <= 0 || cfg.Credentials.ClientID() == "" {
			t.Fatalf("accepted an incomplete config: %+v", cfg.Runner)
		}
		if _, err := cfg.RSAParams.PrivateKey(); err != nil {
			t.Fatalf("accepted a config with a bad key: %v", err)
		}
	})
}
