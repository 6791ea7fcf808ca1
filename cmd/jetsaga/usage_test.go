package main

import (
	"strings"
	"testing"
)

// TestUsageErrors: a bad command line exits 2 with one line naming the
// problem, before anything is contacted.
func TestUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"frobnicate"}, []string{`unknown command "frobnicate"`}},
		{[]string{"stauts", "x"}, []string{`unknown command "stauts"`, `"status"?`}},
		{[]string{"list", "--bogus"}, []string{"unknown flag: --bogus", "jetsaga list --help"}},
		{[]string{"list", "--limit", "many"}, []string{"--limit", "many"}},
		{[]string{"list", "--limit", "-1"}, []string{"--limit must not be negative"}},
		{[]string{"list", "--status", "sleeping"}, []string{"--status", `"sleeping" is not a saga status`, "parked"}},
		{[]string{"status"}, []string{"missing SAGA_ID"}},
		{[]string{"status", "a", "b"}, []string{`unexpected argument "b"`}},
		{[]string{"redrive"}, []string{"missing SAGA_ID"}},
		{[]string{"skip", "s1", "--note", "fixed"}, []string{"--step is required"}},
		{[]string{"skip", "s1", "--step", "debit"}, []string{"--note is required"}},
		{[]string{"resolve", "s1"}, []string{"--note is required"}},
		{[]string{"resolve", "s1", "--note", "  "}, []string{"--note is required"}},
		{[]string{"start"}, []string{"--file (-f) is required"}},
		{[]string{"list", "--prefix", "a.b"}, []string{"--prefix", `'.'`}},
		{[]string{"list", "--tls-cert", "c.pem"}, []string{"--tls-cert and --tls-key go together"}},
		{[]string{"list", "--nats-user", "u", "--nats-token", "t"}, []string{"alternatives"}},
		{[]string{"list", "--nats-password", "p"}, []string{"--nats-password needs --nats-user"}},
		{[]string{"list", "--connect-timeout", "0s"}, []string{"--connect-timeout must be positive"}},
		{[]string{"replay", "--into", "saga_state"}, []string{"live state bucket", "--force"}},
		{[]string{"replay", "--into", "a.b"}, []string{"--into", "a.b"}},
		{[]string{"coordinator", "--replicas", "0"}, []string{"--replicas must be between 1 and 5"}},
		{[]string{"coordinator", "--workers", "0"}, []string{"--workers must be at least 1"}},
		{[]string{"coordinator", "--log-format", "xml"}, []string{"--log-format", "xml"}},
		{[]string{"coordinator", "--log-level", "loud"}, []string{"--log-level", "loud"}},
		{[]string{"coordinator", "--max-age", "-1h"}, []string{"--max-age must be positive"}},
		{[]string{"version", "extra"}, []string{`unexpected argument "extra"`}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			t.Parallel()
			// A closed port: if anything tried to connect, the error would
			// be a connection error, not the usage error wanted.
			args := tc.args
			if c := tc.args[0]; c != "frobnicate" && c != "stauts" && c != "version" {
				args = append(args, "--nats-url", "nats://"+closedPort(t))
			}
			r := cli(t, nil, "", args...)
			wantOneLineError(t, r, exitUsage, tc.want...)
		})
	}
}

// TestEnvFallbacks: a flag falls back to its environment variables in
// order, and the command line wins over them.
func TestEnvFallbacks(t *testing.T) {
	t.Parallel()
	dead := "nats://" + closedPort(t)
	other := "nats://" + closedPort(t)
	// Short connect timeouts: refused connections are tried again until then.
	r := cli(t, map[string]string{"NATS_URL": dead}, "", "list", "--connect-timeout", "300ms")
	wantOneLineError(t, r, exitError, "cannot connect to NATS at "+dead)
	r = cli(t, map[string]string{"NATS_URL": other, "JETSAGA_NATS_URL": dead}, "", "list", "--connect-timeout", "300ms")
	wantOneLineError(t, r, exitError, "cannot connect to NATS at "+dead)
	r = cli(t, map[string]string{"JETSAGA_NATS_URL": other}, "", "list", "--nats-url", dead, "--connect-timeout", "300ms")
	wantOneLineError(t, r, exitError, "cannot connect to NATS at "+dead)
	r = cli(t, map[string]string{"JETSAGA_PREFIX": "a.b"}, "", "list", "--nats-url", dead)
	wantOneLineError(t, r, exitUsage, "--prefix")
	r = cli(t, map[string]string{"JETSAGA_WORKERS": "lots"}, "", "coordinator", "--nats-url", dead)
	wantOneLineError(t, r, exitUsage, "JETSAGA_WORKERS", "--workers")
}

// TestHelp: help is printed on stdout and exits 0; every command's help
// mentions the environment fallbacks of its connection flags.
func TestHelp(t *testing.T) {
	t.Parallel()
	r := cli(t, nil, "")
	wantExit(t, r, exitOK)
	for _, c := range []string{"demo", "dev", "coordinator", "bank", "start", "status", "list", "redrive", "skip", "resolve", "replay", "migrate", "version"} {
		if !strings.Contains(r.stdout, "\n  "+c+" ") {
			t.Errorf("root help does not list %s:\n%s", c, r.stdout)
		}
	}
	r = cli(t, nil, "", "status", "--help")
	wantExit(t, r, exitOK)
	for _, s := range []string{"JETSAGA_NATS_URL, NATS_URL", "NATS_CREDS", "JETSAGA_PREFIX", "--json"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("status help does not mention %s:\n%s", s, r.stdout)
		}
	}
}

// TestVersion prints the binary's and the protocol's versions.
func TestVersion(t *testing.T) {
	t.Parallel()
	r := cli(t, nil, "", "version")
	wantExit(t, r, exitOK)
	if !strings.HasPrefix(r.stdout, "jetsaga ") || !strings.Contains(r.stdout, "protocol v1\n") {
		t.Fatalf("unexpected version output: %s", r)
	}
}

// TestRedact masks passwords in the addresses errors show.
func TestRedact(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"postgres://bob:s3cret@db:5432/x?sslmode=disable": "postgres://bob:xxxxx@db:5432/x?sslmode=disable",
		"postgres://bob@db/x?password=s3cret":             "postgres://bob@db/x?password=xxxxx",
		"host=db user=bob password=s3cret dbname=x":       "host=db user=bob password=xxxxx dbname=x",
		"host=db password='s3 cret' dbname=x":             "host=db password=xxxxx dbname=x",
		"nats://u:pw@a:4222, nats://b:4222":               "nats://u:xxxxx@a:4222,nats://b:4222",
	} {
		if got := redactURLs(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}
