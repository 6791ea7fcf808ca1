package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// Exit codes of the jetsaga binary.
const (
	exitOK          = 0 // success; `start --wait`: the saga committed
	exitError       = 1 // any error (one line on stderr)
	exitUsage       = 2 // bad command line: unknown command or flag, bad flag value, missing argument
	exitCompensated = 3 // `start --wait`: the saga was compensated
	exitParked      = 4 // `start --wait`: the saga is parked and needs an operator
	exitRejected    = 5 // `start --wait`: the coordinator rejected the start message
	exitDiffers     = 6 // `replay --compare`: the rebuilt state differs from the live bucket
)

// envAnnotation is the flag annotation that lists the environment variables
// a flag falls back to, in order of preference.
const envAnnotation = "jetsaga_env"

// run is the whole CLI: it parses args, runs the command and returns the
// process exit code. Errors are written to stderr as one line.
func run(args []string, stdout, stderr io.Writer) int {
	a := &app{stdin: os.Stdin, stdout: stdout, stderr: stderr, getenv: os.Getenv}
	return a.run(context.Background(), args)
}

// app holds what every command shares: the standard streams and the
// environment. Tests build one with their own streams and environment.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string
}

// usageError is a bad command line; it exits with exitUsage.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error {
	return &usageError{err: fmt.Errorf(format, args...)}
}

// exitCodeError makes a command exit with code; err (if not nil) is
// reported on stderr.
type exitCodeError struct {
	code int
	err  error
}

func (e *exitCodeError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}
func (e *exitCodeError) Unwrap() error { return e.err }

// run executes one command line in ctx.
func (a *app) run(ctx context.Context, args []string) int {
	root := a.newRoot()
	root.SetArgs(args)
	root.SetIn(a.stdin)
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	err := root.ExecuteContext(ctx)
	return a.report(err)
}

// report prints err as one line and returns the exit code it stands for.
func (a *app) report(err error) int {
	if err == nil {
		return exitOK
	}
	code := exitError
	var ue *usageError
	var ce *exitCodeError
	switch {
	case errors.As(err, &ce):
		code = ce.code
		if ce.err == nil {
			return code
		}
	case errors.As(err, &ue):
		code = exitUsage
	}
	msg := strings.Join(strings.Fields(strings.ReplaceAll(err.Error(), "\n", "; ")), " ")
	fmt.Fprintf(a.stderr, "jetsaga: %s\n", msg)
	return code
}

func (a *app) newRoot() *cobra.Command {
	root := &cobra.Command{
		Use:   "jetsaga",
		Short: "Saga distributed transactions over NATS JetStream",
		Long: `jetsaga runs saga distributed transactions over NATS JetStream with PostgreSQL participants.

Start with "jetsaga demo": it needs nothing running. "jetsaga dev" keeps a local environment up;
"jetsaga coordinator" and "jetsaga bank" are the services of a deployment; start, status, list,
redrive, skip, resolve and replay operate on one.

Flags that have an environment fallback say so in their help; a flag given on the command line wins.

Exit codes: 0 success (start --wait: committed), 1 error, 2 bad command line,
3 compensated, 4 parked, 5 rejected (start --wait, watch), 6 differences found (replay --compare),
130 interrupted (Ctrl-C or SIGTERM while start --wait, watch or bench runs).`,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			msg := fmt.Sprintf("unknown command %q", args[0])
			if s := cmd.SuggestionsFor(args[0]); len(s) > 0 {
				msg += ` (did you mean "` + strings.Join(s, `" or "`) + `"?)`
			}
			return usagef("%s; run 'jetsaga --help' for the list", msg)
		},
		RunE: func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return a.applyEnv(cmd)
		},
	}
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return usagef("%s%v (see '%s --help')", cmdPrefix(cmd), err, cmd.CommandPath())
	})
	root.SuggestionsMinimumDistance = 2
	root.CompletionOptions.HiddenDefaultCmd = true
	root.AddCommand(
		a.demoCmd(),
		a.benchCmd(),
		a.devCmd(),
		a.coordinatorCmd(),
		a.bankCmd(),
		a.httpParticipantCmd(),
		a.gatewayCmd(),
		a.startCmd(),
		a.statusCmd(),
		a.watchCmd(),
		a.consoleCmd(),
		a.listCmd(),
		a.redriveCmd(),
		a.skipCmd(),
		a.resolveCmd(),
		a.replayCmd(),
		a.migrateCmd(),
		a.versionCmd(),
	)
	return root
}

// bindEnv makes flag name of fs fall back to the environment variables envs
// (first set one wins) and mentions them in its help.
func bindEnv(fs *pflag.FlagSet, name string, envs ...string) {
	f := fs.Lookup(name)
	if f == nil {
		panic("bindEnv: no flag " + name)
	}
	if f.Annotations == nil {
		f.Annotations = map[string][]string{}
	}
	f.Annotations[envAnnotation] = envs
	f.Usage += " (env " + strings.Join(envs, ", ") + ")"
}

// applyEnv sets every flag of cmd that was not given on the command line
// from its environment fallback.
func (a *app) applyEnv(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		envs := f.Annotations[envAnnotation]
		if err != nil || f.Changed || len(envs) == 0 {
			return
		}
		for _, env := range envs {
			v := a.getenv(env)
			if v == "" {
				continue
			}
			if e := f.Value.Set(v); e != nil {
				err = usagef("%s (for --%s): %v", env, f.Name, e)
			}
			return
		}
	})
	return err
}

// exactArgs is cobra.ExactArgs with a usage error that names what is
// missing.
func exactArgs(what ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) < len(what) {
			return usagef("%smissing %s (usage: %s)", cmdPrefix(cmd), what[len(args)], cmd.UseLine())
		}
		if len(args) > len(what) {
			return usagef("%sunexpected argument %q (usage: %s)", cmdPrefix(cmd), args[len(what)], cmd.UseLine())
		}
		return nil
	}
}

// cmdPrefix is "start: " for `jetsaga start` (report adds "jetsaga: "), ""
// for the root command.
func cmdPrefix(cmd *cobra.Command) string {
	p := strings.TrimSpace(strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()))
	if p == "" {
		return ""
	}
	return p + ": "
}

// noArgs refuses positional arguments.
func noArgs(cmd *cobra.Command, args []string) error { return exactArgs()(cmd, args) }
