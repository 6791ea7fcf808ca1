package main

import (
	"log/slog"
	"strings"

	"github.com/spf13/pflag"

	"github.com/jetsaga/jetsaga/events"
)

// logFlags are the logging flags of the services.
type logFlags struct {
	format string
	level  string
}

func (f *logFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&f.format, "log-format", "text", "log format: text or json")
	bindEnv(fs, "log-format", "JETSAGA_LOG_FORMAT")
	fs.StringVar(&f.level, "log-level", "info", "log level: debug, info, warn or error")
	bindEnv(fs, "log-level", "JETSAGA_LOG_LEVEL")
}

// logger builds the slog logger the flags ask for, writing to the app's
// standard error.
func (f *logFlags) logger(a *app) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.level)); err != nil {
		return nil, usagef("--log-level: %q is not a level (want debug, info, warn or error)", f.level)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(f.format) {
	case "text":
		return slog.New(slog.NewTextHandler(a.stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(a.stderr, opts)), nil
	}
	return nil, usagef("--log-format: %q is not a format (want text or json)", f.format)
}

// serviceSetup reads what every long-running command needs first: its
// logger and its namespace.
func (a *app) serviceSetup(lf *logFlags, nf *natsFlags) (*slog.Logger, events.Namespace, error) {
	log, err := lf.logger(a)
	if err != nil {
		return nil, events.Namespace{}, err
	}
	ns, err := nf.namespace()
	if err != nil {
		return nil, events.Namespace{}, err
	}
	return log, ns, nil
}
