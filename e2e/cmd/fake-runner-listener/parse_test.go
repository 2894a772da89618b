package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseKeyValue(t *testing.T) {
	got, err := parseKeyValue([]byte("A=1\nB<<EOF\nline 1\nline 2\nEOF\nC=x=y\r\n\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"A": "1", "B": "line 1\nline 2", "C": "x=y"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s=%q, want %q", k, got[k], v)
		}
	}
	for _, bad := range []string{"novalue", "=x", "K<<EOF\nunterminated", "K<<\nx\n"} {
		if _, err := parseKeyValue([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := parseKeyValue(make([]byte, maxFileCommand+1)); err == nil {
		t.Error("oversized file command accepted")
	}
}

func FuzzParseKeyValue(f *testing.F) {
	f.Add([]byte("A=1\nB<<EOF\nx\nEOF\n"))
	f.Add([]byte("K<<D\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseKeyValue(b)
		if err == nil {
			for k := range m {
				if k == "" {
					t.Fatal("empty key accepted")
				}
			}
		}
	})
}

func TestParseActionAndExpressions(t *testing.T) {
	dir, _ := filepath.Abs("testdata/greet")
	b, err := os.ReadFile(filepath.Join(dir, "action.yml"))
	if err != nil {
		t.Fatal(err)
	}
	a, err := parseAction(b, dir)
	if err != nil {
		t.Fatal(err)
	}
	if a.Inputs["greeting"].Default != "hello" || !a.Inputs["who"].Required || len(a.Runs.Steps) != 2 {
		t.Errorf("parsed %+v", a)
	}
	bad := map[string]string{
		"node action":      "runs:\n  using: node20\n  main: index.js\n",
		"unknown key":      "runs:\n  using: composite\n  steps:\n    - run: x\n      shell: bash\n      bogus: 1\n",
		"no shell":         "runs:\n  using: composite\n  steps:\n    - run: x\n",
		"pwsh":             "runs:\n  using: composite\n  steps:\n    - run: x\n      shell: pwsh\n",
		"nested uses":      "runs:\n  using: composite\n  steps:\n    - uses: actions/checkout@v4\n",
		"if":               "runs:\n  using: composite\n  steps:\n    - run: x\n      shell: bash\n      if: always()\n",
		"no steps":         "runs:\n  using: composite\n",
		"not yaml mapping": "- a\n- b\n",
	}
	for name, y := range bad {
		if _, err := parseAction([]byte(y), "/x"); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}

	ec := &evalContext{inputs: map[string]string{"who": "world"}, actionPath: "/a", runnerTemp: "/t",
		steps: map[string]map[string]string{"s1": {"out": "v"}}}
	got, err := ec.expand("${{ inputs.who }} ${{github.action_path}} ${{ runner.temp }} ${{ steps.s1.outputs.out }} ${{ inputs.none }}")
	if err != nil || got != "world /a /t v " {
		t.Errorf("expand: %q, %v", got, err)
	}
	// github.token is the job's token (fakegithub.Job.Token).
	tok := &evalContext{token: "ghs_x"}
	if got, err := tok.expand("${{ github.token }}"); err != nil || got != "ghs_x" {
		t.Errorf("github.token: %q, %v", got, err)
	}
	for _, e := range []string{"${{ github.sha }}", "${{ secrets.X }}", "${{ inputs.who == 'x' }}", "${{ format('{0}', 1) }}", "${{ inputs.who"} {
		if _, err := ec.expand(e); !errors.Is(err, errUnsupported) {
			t.Errorf("%q: %v, want errUnsupported", e, err)
		} else if !strings.Contains(err.Error(), "not supported") {
			t.Errorf("%q: unclear error %v", e, err)
		}
	}
}

func FuzzParseAction(f *testing.F) {
	b, err := os.ReadFile("testdata/greet/action.yml")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte("runs: {using: composite, steps: [{run: x, shell: bash}]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := parseAction(b, "/fuzz")
		if err == nil && (a.Runs.Using != "composite" || len(a.Runs.Steps) == 0) {
			t.Fatalf("accepted %+v", a.Runs)
		}
	})
}
