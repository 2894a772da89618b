// Command mutate removes security checks one at a time and runs the tests,
// to show that every check is proved: removing it makes some test fail.
//
// gremlins (make mutate runs it first) inverts and shifts conditions; an
// inverted guard also breaks every valid input, so the happy path alone
// kills it. Removing a guard is the stricter mutant: only a test of that
// very rejection notices it. For each `if` in the given files whose body
// returns a non-nil error (a guard clause), this program makes one mutant
// whose condition is `false && (cond)`; so it does for each expression of
// a `case` of a switch without a tag whose body returns an error (the
// same guard, written as a switch, which gremlins cannot see: Go's
// coverage has no block for case expressions, so it reports them NOT
// COVERED). It compiles each mutant through `go test -overlay` (the
// working tree is never written) and runs the given packages' tests. It
// prints one line per mutant, KILLED or LIVED, and a summary; it exits 1
// if any mutant lived.
//
//	go run ./scripts/mutate [-timeout 5m] [-run REGEXP] -tests ./pkg/... FILE...
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

func main() {
	tests := flag.String("tests", "", "packages whose tests must kill the mutants (space-separated)")
	timeout := flag.Duration("timeout", 5*time.Minute, "time limit per mutant test run")
	runRE := flag.String("run", "", "only the tests matching this regular expression (go test -run): a quicker, partial pass; a mutant it leaves alive may be killed by another test")
	flag.Parse()
	if *tests == "" || flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: go run ./scripts/mutate -tests 'PKG...' FILE...")
		os.Exit(2)
	}
	lived, total := 0, 0
	for _, file := range flag.Args() {
		ms, err := mutants(file)
		if err != nil {
			fmt.Fprintf(os.Stderr, "mutate: %s: %v\n", file, err)
			os.Exit(2)
		}
		for _, m := range ms {
			total++
			killed, detail, err := run(m, strings.Fields(*tests), *runRE, *timeout)
			if err != nil {
				fmt.Fprintf(os.Stderr, "mutate: %s: %v\n", m.pos, err)
				os.Exit(2)
			}
			status := "KILLED"
			if !killed {
				status = "LIVED "
				lived++
			}
			fmt.Printf("%s removed check at %s: %s %s%s\n", status, m.pos, m.kind, m.cond, detail)
		}
	}
	fmt.Printf("check removal: %d mutants, %d killed, %d lived\n", total, total-lived, lived)
	if lived > 0 {
		os.Exit(1)
	}
}

type mutant struct {
	file, pos, cond string
	kind            string // "if" or "case"
	src             []byte
}

// mutants returns one mutant per guard clause of file.
func mutants(file string) ([]mutant, error) {
	fset := token.NewFileSet()
	orig, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	type guard struct {
		kind string
		at   token.Pos
		cond ast.Expr
	}
	var guards []guard
	f, err := parser.ParseFile(fset, file, orig, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	ast.Inspect(f, func(n ast.Node) bool {
		switch s := n.(type) {
		case *ast.IfStmt:
			if returnsError(s.Body) {
				guards = append(guards, guard{"if", s.Pos(), s.Cond})
			}
		case *ast.SwitchStmt:
			if s.Tag != nil {
				break
			}
			for _, c := range s.Body.List {
				cc := c.(*ast.CaseClause)
				if !returnsError(&ast.BlockStmt{List: cc.Body}) {
					continue
				}
				for _, e := range cc.List {
					guards = append(guards, guard{"case", e.Pos(), e})
				}
			}
		}
		return true
	})
	var out []mutant
	for _, g := range guards {
		cond := exprString(fset, g.cond)
		// Replace the condition's bytes: positions are those of orig.
		// The mutant wraps the original bytes, not cond: exprString
		// shortens long conditions (they would not compile) and folds
		// whitespace (even inside string literals).
		start, end := fset.Position(g.cond.Pos()).Offset, fset.Position(g.cond.End()).Offset
		src := append(append(append([]byte{}, orig[:start]...), []byte("false && ("+string(orig[start:end])+")")...), orig[end:]...)
		out = append(out, mutant{file: file, pos: fset.Position(g.at).String(), cond: cond, kind: g.kind, src: src})
	}
	return out, nil
}

// returnsError reports whether a block ends in a return whose last result
// is not the identifier nil: the shape of a rejection.
func returnsError(b *ast.BlockStmt) bool {
	if len(b.List) == 0 {
		return false
	}
	r, ok := b.List[len(b.List)-1].(*ast.ReturnStmt)
	if !ok || len(r.Results) == 0 {
		return false
	}
	last := r.Results[len(r.Results)-1]
	if id, ok := last.(*ast.Ident); ok && (id.Name == "nil" || id.Name == "true" || id.Name == "false") {
		return false
	}
	return true
}

func exprString(fset *token.FileSet, e ast.Expr) string {
	var b bytes.Buffer
	printer.Fprint(&b, fset, e)
	s := strings.Join(strings.Fields(b.String()), " ")
	if len(s) > 120 {
		s = s[:117] + "..."
	}
	return s
}

// run compiles the mutant through an overlay and runs the tests; killed is
// true when they fail (or do not build: a vet failure is not a kill).
func run(m mutant, pkgs []string, runRE string, timeout time.Duration) (bool, string, error) {
	dir, err := os.MkdirTemp("", "mutant-")
	if err != nil {
		return false, "", err
	}
	defer os.RemoveAll(dir)
	abs, err := filepath.Abs(m.file)
	if err != nil {
		return false, "", err
	}
	mf := filepath.Join(dir, filepath.Base(m.file))
	if err := os.WriteFile(mf, m.src, 0o644); err != nil {
		return false, "", err
	}
	ov, _ := json.Marshal(map[string]any{"Replace": map[string]string{abs: mf}})
	ovPath := filepath.Join(dir, "overlay.json")
	if err := os.WriteFile(ovPath, ov, 0o644); err != nil {
		return false, "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	args := []string{"test", "-count=1", "-failfast", "-vet=off", "-overlay", ovPath}
	if runRE != "" {
		args = append(args, "-run", runRE)
	}
	args = append(args, pkgs...)
	cmd := exec.CommandContext(ctx, "go", args...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		return true, " (tests timed out)", nil
	}
	if err == nil {
		return false, "", nil
	}
	if bytes.Contains(out, []byte("[build failed]")) || bytes.Contains(out, []byte("[setup failed]")) {
		return false, "", fmt.Errorf("mutant does not build:\n%s", out)
	}
	return true, " (" + firstFailure(out) + ")", nil
}

func firstFailure(out []byte) string {
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "--- FAIL: ") {
			return strings.TrimSpace(strings.TrimPrefix(l, "--- FAIL: "))
		}
	}
	return "tests failed"
}
