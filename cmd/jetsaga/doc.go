// Command jetsaga is jetsaga's one binary: a self-contained demo, a local
// development environment, the production services (the coordinator and the
// example bank participants), and the operator's tools.
//
//	jetsaga demo                      # everything in-process: runs five scenarios and checks them
//	jetsaga dev                       # NATS on :4222, PostgreSQL, coordinator, both banks; Ctrl-C stops
//	jetsaga coordinator --replicas 3  # the service that drives every saga
//	jetsaga bank --participant bank-a --database-url postgres://...
//	jetsaga start -f plan.json --wait # start a saga, wait for its end
//	jetsaga status <id>               # state, steps and timeline
//	jetsaga list --status parked      # the sagas that wait for an operator
//	jetsaga redrive|skip|resolve <id> # operator actions on a parked saga
//	jetsaga replay --compare          # rebuild states from the streams, compare with the live bucket
//	jetsaga migrate --database-url postgres://... [--bank]
//
// # Why cobra
//
// The binary has a dozen subcommands, each with its own flags and a shared
// set of connection flags, and every flag that configures a deployment needs
// an environment fallback so that the same image runs under compose,
// Kubernetes or a shell. The standard library's flag package would make us
// write subcommand dispatch, per-command help, usage errors and "did you
// mean" suggestions by hand; cobra (with pflag) gives them, plus POSIX
// long and short flags, for one small, widely used dependency. Environment
// fallbacks are ours: a flag is bound to its variables with bindEnv, its
// help says which, and a flag given on the command line wins over the
// environment, which wins over the default.
//
// # Conventions
//
// Errors are one line on standard error, prefixed "jetsaga: ", and name
// what was wrong: the flag, the plan's field, the address tried (passwords
// masked). Output meant for people is aligned text; every read command
// (status, list, start --wait, replay) also prints JSON with --json.
//
// Exit codes:
//
//	0  success; start --wait: the saga committed
//	1  an error
//	2  a bad command line (unknown command or flag, bad value, missing argument)
//	3  start --wait: the saga was compensated
//	4  start --wait: the saga is parked and waits for an operator
//	5  start --wait: the coordinator rejected the saga
//	6  replay --compare: the rebuilt states differ from the live bucket
//
// The services (coordinator, bank, dev) stop on SIGINT or SIGTERM: they
// stop taking work, finish what they hold, drain their NATS connection and
// exit 0. With --metrics-addr they serve Prometheus metrics on /metrics
// (client_golang, a registry of their own with the Go and process
// collectors); traces are exported when the OTEL_* environment asks for them
// (tracing.go); the coordinator and dev serve the saga API as a NATS micro
// service (package service; --service, on by default).
//
// The entry point for tests is run(args, stdout, stderr), which returns the
// exit code, so the CLI is tested in-process; the services are also tested as
// real subprocesses.
package main
