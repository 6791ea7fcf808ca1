package sqlmigrate

import (
	"strings"
	"testing"
	"testing/fstest"
)

func TestLoad(t *testing.T) {
	t.Parallel()
	fsys := fstest.MapFS{
		"m/0002_second.up.sql":   {Data: []byte("up 2")},
		"m/0001_first.down.sql":  {Data: []byte("down 1")},
		"m/0002_second.down.sql": {Data: []byte("down 2")},
		"m/0001_first.up.sql":    {Data: []byte("up 1")},
		"m/10_tenth.up.sql":      {Data: []byte("up 10")},
		"other/0003_x.up.sql":    {Data: []byte("not read")},
	}
	// Versions 3 to 9 missing: a gap.
	if _, err := Load(fsys, "m"); err == nil || !strings.Contains(err.Error(), "version 3 is missing") {
		t.Fatalf("Load with a gap: %v, want version 3 missing", err)
	}
	delete(fsys, "m/10_tenth.up.sql")
	ms, err := Load(fsys, "m")
	if err != nil {
		t.Fatal(err)
	}
	want := []Migration{
		{Version: 1, Name: "first", Up: "up 1", Down: "down 1"},
		{Version: 2, Name: "second", Up: "up 2", Down: "down 2"},
	}
	if len(ms) != len(want) {
		t.Fatalf("Load: %d migrations, want %d", len(ms), len(want))
	}
	for i := range want {
		if ms[i] != want[i] {
			t.Errorf("migration %d: %+v, want %+v", i, ms[i], want[i])
		}
	}
}

func TestLoadRejects(t *testing.T) {
	t.Parallel()
	sql := &fstest.MapFile{Data: []byte("SELECT 1")}
	blank := &fstest.MapFile{Data: []byte(" \n\t")}
	cases := []struct {
		name string
		fsys fstest.MapFS
		want string // in the error
	}{
		{"gap", fstest.MapFS{"m/0001_a.up.sql": sql, "m/0001_a.down.sql": sql, "m/0003_c.up.sql": sql, "m/0003_c.down.sql": sql}, "version 2 is missing"},
		{"missing down", fstest.MapFS{"m/0001_a.up.sql": sql}, "no down file"},
		{"missing up", fstest.MapFS{"m/0001_a.down.sql": sql}, "no up file"},
		{"empty up", fstest.MapFS{"m/0001_a.up.sql": blank, "m/0001_a.down.sql": sql}, "no up file"},
		{"bad name", fstest.MapFS{"m/one.up.sql": sql}, `"one.up.sql"`},
		{"upper case name", fstest.MapFS{"m/0001_A.up.sql": sql, "m/0001_A.down.sql": sql}, "0001_A"},
		{"not sql", fstest.MapFS{"m/0001_a.up.sql": sql, "m/0001_a.down.sql": sql, "m/README": sql}, `"README"`},
		{"directory", fstest.MapFS{"m/0001_a.up.sql/x": sql}, `"0001_a.up.sql"`},
		{"two names", fstest.MapFS{"m/0001_a.up.sql": sql, "m/0001_b.down.sql": sql}, `two names, "a" and "b"`},
		{"version 0", fstest.MapFS{"m/0000_a.up.sql": sql, "m/0000_a.down.sql": sql}, "positive integer"},
		{"version overflows", fstest.MapFS{"m/99999999999999999999_a.up.sql": sql}, "positive integer"},
		{"no directory", fstest.MapFS{"x/0001_a.up.sql": sql}, "read migrations"},
	}
	for _, c := range cases {
		ms, err := Load(c.fsys, "m")
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: Load = %v, %v; want an error containing %q", c.name, ms, err, c.want)
		}
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("MustLoad of a bad set did not panic")
			}
		}()
		MustLoad(cases[0].fsys, "m")
	}()
}

func TestValidIdentifier(t *testing.T) {
	t.Parallel()
	const limit = 10
	good := []string{"a", "_", "abc_1", "_9", strings.Repeat("x", limit)}
	for _, s := range good {
		if err := ValidIdentifier(s, limit); err != nil {
			t.Errorf("ValidIdentifier(%q): %v", s, err)
		}
	}
	bad := map[string]string{
		"":                           "empty",
		strings.Repeat("x", limit+1): "limit is 10",
		"1abc":                       "not a plain identifier",
		"Abc":                        "not a plain identifier",
		"a-b":                        "not a plain identifier",
		"a b":                        "not a plain identifier",
		"a.b":                        "not a plain identifier",
		`a"b`:                        "not a plain identifier",
		"é":                          "not a plain identifier",
	}
	for s, want := range bad {
		if err := ValidIdentifier(s, limit); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidIdentifier(%q) = %v, want an error containing %q", s, err, want)
		}
	}
}

func TestLockKey(t *testing.T) {
	t.Parallel()
	if LockKey("a/migrate\x00t") != LockKey("a/migrate\x00t") {
		t.Error("LockKey is not deterministic")
	}
	seen := map[int64]string{}
	for _, s := range []string{"", "a", "b", "jetsaga/outbox/migrate\x00t", "jetsaga/participants/migrate\x00t", "jetsaga/outbox/migrate\x00u"} {
		k := LockKey(s)
		if prev, dup := seen[k]; dup {
			t.Errorf("LockKey(%q) = LockKey(%q)", s, prev)
		}
		seen[k] = s
	}
}
