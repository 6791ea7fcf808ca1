package devenv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeExe creates an executable file.
func writeExe(t *testing.T, path string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestFindPostgres(t *testing.T) {
	empty := t.TempDir()
	lib := t.TempDir()
	t.Setenv("PATH", empty)
	old := pgLibGlob
	t.Cleanup(func() { pgLibGlob = old })
	pgLibGlob = filepath.Join(lib, "*", "bin")

	_, err := findPostgres()
	if !errors.Is(err, ErrNoPostgres) {
		t.Fatalf("no binaries anywhere: err = %v, want ErrNoPostgres", err)
	}
	for _, hint := range []string{"apt-get install postgresql", "DATABASE_URL", "/usr/lib/postgresql/*/bin"} {
		if !strings.Contains(err.Error(), hint) {
			t.Errorf("error %q does not mention %q", err, hint)
		}
	}

	// The highest version under the lib directory wins; numeric, not
	// lexical, order.
	for _, v := range []string{"9.6", "15", "10"} {
		writeExe(t, filepath.Join(lib, v, "bin", "initdb"))
		writeExe(t, filepath.Join(lib, v, "bin", "postgres"))
	}
	writeExe(t, filepath.Join(lib, "17", "bin", "initdb")) // incomplete: skipped
	b, err := findPostgres()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(lib, "15", "bin", "initdb"); b.initdb != want {
		t.Errorf("initdb = %s, want %s", b.initdb, want)
	}

	// PATH comes first.
	writeExe(t, filepath.Join(empty, "initdb"))
	writeExe(t, filepath.Join(empty, "postgres"))
	b, err = findPostgres()
	if err != nil {
		t.Fatal(err)
	}
	if b.initdb != filepath.Join(empty, "initdb") || b.postgres != filepath.Join(empty, "postgres") {
		t.Errorf("found %+v, want the binaries on PATH", b)
	}
}

func TestStartPostgresWithoutBinaries(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	old := pgLibGlob
	t.Cleanup(func() { pgLibGlob = old })
	pgLibGlob = filepath.Join(t.TempDir(), "*", "bin")
	if _, err := StartPostgres(PGOptions{}); !errors.Is(err, ErrNoPostgres) || !strings.Contains(err.Error(), FixPostgres) {
		t.Fatalf("err = %v, want ErrNoPostgres with the fix", err)
	}
}
