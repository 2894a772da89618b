package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/attested-runner/attested-runner/e2e/fakegithub"
	"github.com/attested-runner/attested-runner/internal/fileio"
	"go.yaml.in/yaml/v3"
)

// maxActionFile bounds an action.yml.
const maxActionFile = 1 << 20

// actionFile is the part of action.yml metadata the fake understands;
// unknown keys are an error (a typo should not pass silently).
type actionFile struct {
	Name        string                  `yaml:"name"`
	Author      string                  `yaml:"author"`
	Description string                  `yaml:"description"`
	Inputs      map[string]actionInput  `yaml:"inputs"`
	Outputs     map[string]actionOutput `yaml:"outputs"`
	Runs        actionRuns              `yaml:"runs"`
	Branding    map[string]string       `yaml:"branding"`
}

type actionInput struct {
	Description        string `yaml:"description"`
	Required           bool   `yaml:"required"`
	Default            string `yaml:"default"`
	DeprecationMessage string `yaml:"deprecationMessage"`
}

type actionOutput struct {
	Description string `yaml:"description"`
	Value       string `yaml:"value"`
}

type actionRuns struct {
	Using string          `yaml:"using"`
	Steps []compositeStep `yaml:"steps"`
	// Node and Docker actions; present only to refuse them clearly.
	Main  string `yaml:"main"`
	Image string `yaml:"image"`
}

type compositeStep struct {
	ID               string            `yaml:"id"`
	Name             string            `yaml:"name"`
	Run              string            `yaml:"run"`
	Shell            string            `yaml:"shell"`
	Env              map[string]string `yaml:"env"`
	WorkingDirectory string            `yaml:"working-directory"`
	If               string            `yaml:"if"`
	Uses             string            `yaml:"uses"`
	With             map[string]string `yaml:"with"`
	ContinueOnError  bool              `yaml:"continue-on-error"`
}

// errUnsupported marks an action feature the fake does not run.
var errUnsupported = errors.New("not supported by the fake Runner.Listener")

// loadAction reads dir/action.yml (or action.yaml).
func loadAction(dir string) (*actionFile, error) {
	var b []byte
	var err error
	for _, name := range []string{"action.yml", "action.yaml"} {
		b, err = fileio.ReadFile(filepath.Join(dir, name), maxActionFile)
		if err == nil {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("can't find 'action.yml' or 'action.yaml' under '%s'", dir)
	}
	return parseAction(b, dir)
}

// parseAction parses and checks action.yml metadata (at most maxActionFile
// bytes) of the action in dir.
func parseAction(b []byte, dir string) (*actionFile, error) {
	if len(b) > maxActionFile {
		return nil, fmt.Errorf("%s/action.yml is larger than %d bytes", dir, maxActionFile)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var a actionFile
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("%s/action.yml: %w", dir, err)
	}
	switch {
	case a.Runs.Using != "composite":
		return nil, fmt.Errorf("%s: runs.using %q: only composite actions are %w", dir, a.Runs.Using, errUnsupported)
	case len(a.Runs.Steps) == 0:
		return nil, fmt.Errorf("%s: a composite action needs runs.steps", dir)
	}
	for i, st := range a.Runs.Steps {
		switch {
		case st.Uses != "":
			return nil, fmt.Errorf("%s: step %d: uses inside a composite action is %w", dir, i, errUnsupported)
		case st.Run == "":
			return nil, fmt.Errorf("%s: step %d has no run", dir, i)
		case st.Shell == "":
			// Composite run steps must name their shell (the real runner
			// refuses the action too).
			return nil, fmt.Errorf("%s: step %d: 'shell' is required for a run step in a composite action", dir, i)
		case st.Shell != "bash":
			return nil, fmt.Errorf("%s: step %d: shell %q is %w (only bash)", dir, i, st.Shell, errUnsupported)
		case st.If != "":
			return nil, fmt.Errorf("%s: step %d: if: is %w", dir, i, errUnsupported)
		case st.ContinueOnError:
			return nil, fmt.Errorf("%s: step %d: continue-on-error is %w", dir, i, errUnsupported)
		}
	}
	return &a, nil
}

// exprPattern finds ${{ ... }} expressions.
var exprPattern = regexp.MustCompile(`\$\{\{(.*?)\}\}`)

// evalContext is what a composite step's expressions may name.
type evalContext struct {
	inputs     map[string]string
	actionPath string
	runnerTemp string
	token      string
	steps      map[string]map[string]string
}

var (
	reInput      = regexp.MustCompile(`^inputs\.([A-Za-z_][A-Za-z0-9_-]*)$`)
	reStepOutput = regexp.MustCompile(`^steps\.([A-Za-z_][A-Za-z0-9_-]*)\.outputs\.([A-Za-z_][A-Za-z0-9_-]*)$`)
)

// expand evaluates the supported expressions in s; any other expression is
// an error naming it.
func (c *evalContext) expand(s string) (string, error) {
	var firstErr error
	out := exprPattern.ReplaceAllStringFunc(s, func(m string) string {
		expr := strings.TrimSpace(m[3 : len(m)-2])
		switch {
		case expr == "github.action_path":
			return c.actionPath
		case expr == "runner.temp":
			return c.runnerTemp
		case expr == "github.token":
			return c.token
		}
		if g := reInput.FindStringSubmatch(expr); g != nil {
			return c.inputs[strings.ToLower(g[1])]
		}
		if g := reStepOutput.FindStringSubmatch(expr); g != nil {
			return c.steps[g[1]][g[2]]
		}
		if firstErr == nil {
			firstErr = fmt.Errorf("the expression '${{ %s }}' is %w (only inputs.NAME, github.action_path, github.token, runner.temp, steps.ID.outputs.NAME)", expr, errUnsupported)
		}
		return m
	})
	if strings.Contains(out, "${{") && firstErr == nil {
		firstErr = fmt.Errorf("unterminated expression in %q: %w", safeLine(s), errUnsupported)
	}
	return out, firstErr
}

// usesStep runs a local composite action.
func (w *worker) usesStep(ctx context.Context, name string, st fakegithub.Step) bool {
	sl := w.newStepLog(name)
	defer sl.End()
	w.usesSteps++
	action := "__self"
	if w.usesSteps > 1 {
		action = fmt.Sprintf("__self_%d", w.usesSteps)
	}
	dir, err := w.resolveLocalAction(st.Uses)
	if err != nil {
		sl.Output("##[error]" + err.Error())
		return false
	}
	a, err := loadAction(dir)
	if err != nil {
		sl.Output("##[error]" + err.Error())
		return false
	}
	inputs := map[string]string{}
	var valid []string
	// Defaults are expressions too (github.token is the usual one).
	dec := &evalContext{token: w.job.Token}
	for k, in := range a.Inputs {
		d, err := dec.expand(in.Default)
		if err != nil {
			sl.Output("##[error]input " + k + ": " + err.Error())
			return false
		}
		inputs[strings.ToLower(k)] = d
		valid = append(valid, k)
	}
	sort.Strings(valid)
	var unexpected []string
	for k, v := range st.With {
		if _, ok := inputs[strings.ToLower(k)]; !ok {
			unexpected = append(unexpected, k)
		}
		inputs[strings.ToLower(k)] = v
	}
	if len(unexpected) > 0 {
		sort.Strings(unexpected)
		sl.Output(fmt.Sprintf("##[warning]Unexpected input(s) '%s', valid inputs are ['%s']", strings.Join(unexpected, "', '"), strings.Join(valid, "', '")))
	}
	ec := &evalContext{inputs: inputs, actionPath: dir, runnerTemp: w.tempDir, token: w.job.Token, steps: map[string]map[string]string{}}
	for i, cs := range a.Runs.Steps {
		id := cs.ID
		if id == "" {
			id = fmt.Sprintf("__%d", i)
		}
		script, err := ec.expand(cs.Run)
		if err != nil {
			sl.Output("##[error]" + err.Error())
			return false
		}
		extra := map[string]string{"GITHUB_ACTION_PATH": dir, "GITHUB_ACTION_REPOSITORY": "", "GITHUB_ACTION_REF": ""}
		for k, v := range cs.Env {
			ev, err := ec.expand(v)
			if err != nil {
				sl.Output("##[error]" + err.Error())
				return false
			}
			extra[k] = ev
		}
		wd := w.workspace
		if cs.WorkingDirectory != "" {
			d, err := ec.expand(cs.WorkingDirectory)
			if err != nil {
				sl.Output("##[error]" + err.Error())
				return false
			}
			if !filepath.IsAbs(d) {
				d = filepath.Join(w.workspace, d)
			}
			wd = d
		}
		env, files, err := w.stepEnv(action, extra)
		if err != nil {
			sl.Output("##[error]" + err.Error())
			return false
		}
		outs := map[string]string{}
		if !w.runBash(ctx, sl, wd, env, files, script, outs) {
			return false
		}
		ec.steps[id] = outs
	}
	names := make([]string, 0, len(a.Outputs))
	for k := range a.Outputs {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		v, err := ec.expand(a.Outputs[k].Value)
		if err != nil {
			sl.Output("##[error]" + err.Error())
			return false
		}
		w.log.Info("CompositeActionHandler", "Set output %s", k)
		sl.Output(fmt.Sprintf("Output %s=%s", k, safeLine(v)))
	}
	return true
}

// resolveLocalAction maps "./dir" to the workspace (as the runner does for a
// local action) and accepts an absolute directory (a fake-only shortcut).
// Remote actions are refused.
func (w *worker) resolveLocalAction(uses string) (string, error) {
	switch {
	case strings.HasPrefix(uses, "./"):
		dir := filepath.Join(w.workspace, uses)
		if !strings.HasPrefix(dir+string(filepath.Separator), w.workspace+string(filepath.Separator)) {
			return "", fmt.Errorf("local action %q is outside the workspace", uses)
		}
		return dir, nil
	case filepath.IsAbs(uses):
		return filepath.Clean(uses), nil
	case strings.HasPrefix(uses, "docker://"):
		return "", fmt.Errorf("uses: %q: docker actions are %w", uses, errUnsupported)
	default:
		if st, err := os.Stat(uses); err == nil && st.IsDir() {
			return "", fmt.Errorf("uses: %q: write a local action as ./path", uses)
		}
		return "", fmt.Errorf("uses: %q: repository actions are %w (only local composite actions)", uses, errUnsupported)
	}
}
