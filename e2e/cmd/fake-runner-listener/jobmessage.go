package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// The job message as Runner.Worker/Worker.cs RunAsync traces it before the
// job starts:
//
//	Trace.Info($"Job message:{Environment.NewLine} {StringUtil.ConvertToJson(jobMessage)}");
//
// Runner.Sdk/Util/StringUtil.cs ConvertToJson is Newtonsoft with
// Formatting.Indented (two spaces) and the VssJsonMediaTypeFormatter
// settings (Sdk/WebApi/WebApi/VssJsonMediaTypeFormatter.cs): camelCase
// property names, enums as camelCase strings. So the trace is one INFO
// record whose JSON runs on continuation lines, the first one " {", and
// every string in it is JSON-escaped: a pull request body with newlines
// stays on one line. The fake fills the fields a job of its own has
// (Sdk/DTPipelines/Pipelines/AgentJobRequestMessage.cs), not the service's
// resources or tokens.
type jobMessage struct {
	MessageType    string                   `json:"messageType"`
	Plan           map[string]string        `json:"plan"`
	Timeline       map[string]string        `json:"timeline"`
	JobID          string                   `json:"jobId"`
	JobDisplayName string                   `json:"jobDisplayName"`
	JobName        string                   `json:"jobName"`
	RequestID      int64                    `json:"requestId"`
	LockedUntil    string                   `json:"lockedUntil"`
	ContextData    map[string]any           `json:"contextData"`
	FileTable      []string                 `json:"fileTable"`
	Steps          []jobStep                `json:"steps"`
	Variables      map[string]variableValue `json:"variables"`
}

// jobStep is a Pipelines.ActionStep (Sdk/DTPipelines/Pipelines/Step.cs,
// JobStep.cs, ActionStep.cs, ActionStepDefinitionReference.cs).
type jobStep struct {
	Type        string            `json:"type"` // StepType.Action
	Reference   map[string]string `json:"reference"`
	ContextName string            `json:"contextName,omitempty"`
	Inputs      *mappingToken     `json:"inputs,omitempty"`
	Condition   string            `json:"condition"`
	ID          string            `json:"id"`
	Name        string            `json:"name"`
	DisplayName string            `json:"displayName"`
}

// mappingToken is a TemplateToken mapping as TemplateTokenJsonConverter
// writes it ("type": 2, "map": KeyValuePair items); its string tokens have
// no file position here, so they are plain strings.
type mappingToken struct {
	Type int          `json:"type"`
	Map  []mappingKey `json:"map,omitempty"`
}

type mappingKey struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

type variableValue struct {
	Value string `json:"value"`
}

// jobMessageTrace is the message of the "Job message:" trace record.
func (w *worker) jobMessageTrace(requestID int64) string {
	j := w.job
	github := dictionary{
		{"event", contextData(j.EventPayload)},
		{"event_name", j.EventName},
		{"repository", j.Repository},
		{"ref", j.Ref},
		{"sha", j.SHA},
		{"run_id", strconv.FormatInt(j.RunID, 10)},
		{"run_attempt", strconv.Itoa(j.RunAttempt)},
		{"job", j.Job},
		{"actor", j.Actor},
		{"workflow_ref", j.WorkflowRef},
		{"server_url", serverURL(w.cfg.Runner.GitHubURL)},
	}
	m := jobMessage{
		MessageType: "PipelineAgentJobRequest",
		Plan:        map[string]string{"scopeIdentifier": zeroGUID, "planType": "actions", "planId": newUUID()},
		Timeline:    map[string]string{"id": w.timelineID},
		JobID:       w.timelineID, JobDisplayName: j.Job, JobName: "__default", RequestID: requestID,
		LockedUntil: w.now().UTC().Add(10 * time.Minute).Format("2006-01-02T15:04:05.0000000Z"),
		ContextData: map[string]any{"github": github.data()},
		FileTable:   []string{strings.TrimPrefix(j.WorkflowRef[:max(0, strings.LastIndex(j.WorkflowRef, "@"))], j.Repository+"/")},
		Variables:   map[string]variableValue{"system.github.job": {Value: j.Job}, "system.github.run_id": {Value: strconv.FormatInt(j.RunID, 10)}},
	}
	for _, a := range j.Actions {
		m.Steps = append(m.Steps, jobStep{
			Type:      "action",
			Reference: map[string]string{"type": "repository", "name": a.Repository, "ref": a.Ref, "repositoryType": "GitHub"},
			Condition: "success()", ID: newUUID(), Name: "__" + strings.NewReplacer("/", "_", "-", "_").Replace(a.Repository),
			DisplayName: "Run " + a.Repository + "@" + a.Ref,
		})
	}
	for i, st := range j.Steps {
		s := jobStep{Type: "action", Condition: "success()", ID: newUUID(), Name: fmt.Sprintf("__step_%d", i), DisplayName: st.Name}
		if st.Run != "" {
			s.Reference = map[string]string{"type": "script"}
			s.Inputs = &mappingToken{Type: 2, Map: []mappingKey{{Key: "script", Value: st.Run}}}
			s.Name = "__run"
			if s.DisplayName == "" {
				s.DisplayName = "Run " + firstLine(st.Run)
			}
		} else {
			s.Reference = map[string]string{"type": "repository", "repositoryType": "self", "path": st.Uses}
			s.Inputs = &mappingToken{Type: 2}
			for _, k := range sortedKeys(st.With) {
				s.Inputs.Map = append(s.Inputs.Map, mappingKey{Key: k, Value: st.With[k]})
			}
			if s.DisplayName == "" {
				s.DisplayName = "Run " + st.Uses
			}
		}
		s.ContextName = s.Name
		m.Steps = append(m.Steps, s)
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // Newtonsoft leaves <, > and & alone
	enc.SetIndent("", "  ")
	if err := enc.Encode(m); err != nil {
		return "Job message: (not serializable: " + err.Error() + ")"
	}
	return "Job message:\n " + strings.TrimSuffix(b.String(), "\n")
}

const zeroGUID = "00000000-0000-0000-0000-000000000000"

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// dictionary is a DictionaryContextData, in insertion order.
type dictionary []struct {
	k string
	v any
}

// PipelineContextDataJsonConverter (Sdk/DTPipelines/Pipelines/ContextData/
// PipelineContextDataJsonConverter.cs): a string, boolean or number is a
// plain JSON value; an array is {"t": 1, "a": [...]} and a dictionary
// {"t": 2, "d": [{"k": ..., "v": ...}]}, "a" and "d" left out when empty.
type contextArray struct {
	T int   `json:"t"`
	A []any `json:"a,omitempty"`
}

type contextDict struct {
	T int           `json:"t"`
	D []contextPair `json:"d,omitempty"`
}

type contextPair struct {
	K string `json:"k"`
	V any    `json:"v"`
}

func (d dictionary) data() contextDict {
	out := contextDict{T: 2}
	for _, kv := range d {
		out.D = append(out.D, contextPair{K: kv.k, V: kv.v})
	}
	return out
}

// contextData converts an event payload to context data, keeping the
// order of its keys (the runner's DictionaryContextData does). Invalid
// JSON becomes an empty dictionary.
func contextData(payload []byte) any {
	if len(payload) == 0 {
		return contextDict{T: 2}
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	v, err := decodeContext(dec)
	if err != nil {
		return contextDict{T: 2}
	}
	return v
}

func decodeContext(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			d := contextDict{T: 2}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := decodeContext(dec)
				if err != nil {
					return nil, err
				}
				d.D = append(d.D, contextPair{K: k.(string), V: v})
			}
			_, err := dec.Token()
			return d, err
		case '[':
			a := contextArray{T: 1}
			for dec.More() {
				v, err := decodeContext(dec)
				if err != nil {
					return nil, err
				}
				a.A = append(a.A, v)
			}
			_, err := dec.Token()
			return a, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	case json.Number:
		// NumberContextData holds a double; Newtonsoft writes 7 as 7.0.
		f, err := t.Float64()
		if err != nil || math.IsInf(f, 0) {
			return t, nil
		}
		s := strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.ContainsAny(s, ".eE") {
			s += ".0"
		}
		return json.Number(s), nil
	case nil, bool, string:
		return t, nil
	}
	return nil, io.ErrUnexpectedEOF
}
