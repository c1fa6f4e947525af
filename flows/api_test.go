package flows_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// engineOnly are the exported names of internal/flowcore that only engines
// use: flows must not export them.
var engineOnly = []string{
	"AlertInfo", "Alerter", "Batch", "ChannelInfo", "Compile", "Cursor", "Delta",
	"EventError", "Fragment", "Interner", "NoWatermark", "Plan", "Reader", "Rec",
	"SourceInfo", "StateEntry",
}

// exported lists the exported top-level names declared in dir's non-test
// files.
func exported(t *testing.T, dir string) map[string]bool {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	fset := token.NewFileSet()
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".go") || strings.HasSuffix(e.Name(), "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, e.Name()), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil && d.Name.IsExported() {
					names[d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						if s.Name.IsExported() {
							names[s.Name.Name] = true
						}
					case *ast.ValueSpec:
						for _, n := range s.Names {
							if n.IsExported() {
								names[n.Name] = true
							}
						}
					}
				}
			}
		}
	}
	return names
}

// TestUserAPIOnly keeps flows the user API: each exported name of the
// engine is either one of flows' (an alias or a forwarding function) or
// one of engineOnly, so that a new exported name of flowcore has to be
// placed on purpose, and flows exports nothing that engineOnly holds.
func TestUserAPIOnly(t *testing.T) {
	user := exported(t, ".")
	core := exported(t, filepath.Join("..", "internal", "flowcore"))
	for name := range core {
		if !user[name] && !slices.Contains(engineOnly, name) {
			t.Errorf("flowcore.%s is neither in flows nor in engineOnly: decide whether users call it", name)
		}
	}
	for name := range user {
		if slices.Contains(engineOnly, name) {
			t.Errorf("flows exports %s, which only engines use", name)
		}
		if !core[name] {
			t.Errorf("flows exports %s, which flowcore does not", name)
		}
	}
}
