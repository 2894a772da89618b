package runner

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
)

// The encoded JIT configuration is standard base64 of a JSON object of
// file name -> standard base64 of the file (actions/runner
// Runner.Listener/Runner.cs writes each to <root>/<name>): ".runner" (the
// RunnerSettings of Runner.Common/ConfigurationStore.cs, camelCase JSON),
// ".credentials" and ".credentials_rsaparams" (the runner's private key).
// The agent reads only ".runner" and passes the credentials through
// untouched, never logging any of it.
const (
	jitFileRunner      = ".runner"
	maxJITConfigSize   = 64 << 10
	jitSettingsDisable = "disableUpdate"
)

// ErrJITConfigShape: the opened JIT configuration is not what GitHub mints.
// Never quotes the input (a secret).
var ErrJITConfigShape = errors.New("the runner configuration is not a JIT configuration")

// DisableSelfUpdate returns jit with DisableUpdate set in its .runner
// settings, keeping every other field and file as it was. A JIT runner
// sends DisableUpdate with every poll (Runner.Listener/MessageListener.cs);
// GitHub's REST JIT request has no such field, so the agent sets it here, in
// memory, before the runner starts. The caller clears both slices when done.
func DisableSelfUpdate(jit []byte) ([]byte, error) {
	if len(jit) == 0 || len(jit) > maxJITConfigSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrJITConfigShape, len(jit))
	}
	outer, err := base64.StdEncoding.Strict().DecodeString(string(bytes.TrimSpace(jit)))
	if err != nil {
		return nil, fmt.Errorf("%w: not base64", ErrJITConfigShape)
	}
	defer clear(outer)
	var files map[string]string
	if err := json.Unmarshal(outer, &files); err != nil {
		return nil, fmt.Errorf("%w: not a JSON object of files", ErrJITConfigShape)
	}
	raw, ok := files[jitFileRunner]
	if !ok {
		return nil, fmt.Errorf("%w: no %s file", ErrJITConfigShape, jitFileRunner)
	}
	settingsJSON, err := base64.StdEncoding.Strict().DecodeString(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not base64", ErrJITConfigShape, jitFileRunner)
	}
	// .NET writers may put a byte order mark first; keep it.
	bom := []byte("\xef\xbb\xbf")
	hadBOM := bytes.HasPrefix(settingsJSON, bom)
	dec := json.NewDecoder(bytes.NewReader(bytes.TrimPrefix(settingsJSON, bom)))
	dec.UseNumber()
	var settings map[string]any
	if err := dec.Decode(&settings); err != nil || settings == nil {
		return nil, fmt.Errorf("%w: %s is not a JSON object", ErrJITConfigShape, jitFileRunner)
	}
	if _, ok := settings["agentName"]; !ok {
		return nil, fmt.Errorf("%w: %s has no agentName", ErrJITConfigShape, jitFileRunner)
	}
	settings[jitSettingsDisable] = true
	out, err := json.Marshal(settings)
	if err != nil {
		return nil, err
	}
	if hadBOM {
		out = append(bom, out...)
	}
	files[jitFileRunner] = base64.StdEncoding.EncodeToString(out)
	enc, err := json.Marshal(files)
	if err != nil {
		return nil, err
	}
	defer clear(enc)
	return []byte(base64.StdEncoding.EncodeToString(enc)), nil
}
