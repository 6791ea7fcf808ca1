package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/spf13/cobra"

	"github.com/jetsaga/jetsaga/events"
	"github.com/jetsaga/jetsaga/orchestrator"
)

// replayJSON is the output of `replay --json`.
type replayJSON = orchestrator.ReplayReport

func (a *app) replayCmd() *cobra.Command {
	var (
		nf          natsFlags
		into        string
		force       bool
		compare     bool
		asJSON      bool
		replicas    int
		stepTimeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "replay",
		Short: "Rebuild saga states from the streams into a bucket",
		Long: `Rebuild every saga's state by folding the sagas stream (starts, outcomes, timers, operator
actions) through the coordinator's state machine, and write the states into a key-value bucket.

By default the bucket is <prefix>_state_replay, a scratch bucket that is emptied first. To repair
the live bucket (<prefix>_state) after it was lost or damaged, stop every coordinator first, then
run "jetsaga replay --into <prefix>_state --force". Writing into another existing, non-empty bucket
also needs --force.

With --compare it also compares the rebuilt states with the live bucket and reports how many sagas
differ (exit code 6 if any do). Sagas in flight while coordinators run may differ for a moment.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if replicas < 1 {
				return usagef("--replicas must be at least 1, got %d", replicas)
			}
			ns, err := nf.namespace()
			if err != nil {
				return err
			}
			scratch := ns.StateBucket() + "_replay"
			if into == "" {
				into = scratch
			}
			if err := events.ValidToken(into); err != nil {
				return usagef("--into: bucket name %q %v", into, err)
			}
			live := into == ns.StateBucket()
			if live && !force {
				return usagef("--into %s is the live state bucket: stop every coordinator first, then add --force", into)
			}
			ctx := cmd.Context()
			s, err := nf.open(ctx, "replay")
			if err != nil {
				return err
			}
			defer s.close()
			if live {
				fmt.Fprintf(a.stderr, "jetsaga: warning: rewriting the live state bucket %s; every coordinator must be stopped\n", into)
			}
			if _, err := prepareBucket(ctx, s.js, ns, into, into == scratch, force || live, events.StreamOptions{Replicas: replicas}); err != nil {
				return err
			}
			rep, err := orchestrator.Replay(ctx, s.js, ns, into, orchestrator.ReplayOptions{
				Streams: events.StreamOptions{Replicas: replicas}, StepTimeout: stepTimeout, Compare: compare})
			if err != nil {
				return err
			}
			out := rep
			if asJSON {
				if err := writeJSON(a.stdout, out); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(a.stdout, "rebuilt %d sagas from stream %s into bucket %s\n", out.Rebuilt, ns.SagasStream(), into)
				if c := out.Compared; c != nil {
					fmt.Fprintf(a.stdout, "compared with the live states in %s (%d sagas): %d differ\n", ns.StateBucket(), c.Live, c.Differ)
					for _, id := range c.Changed {
						fmt.Fprintf(a.stdout, "  differs:           %s\n", id)
					}
					for _, id := range c.MissingLive {
						fmt.Fprintf(a.stdout, "  not in live:       %s\n", id)
					}
					for _, id := range c.MissingReplay {
						fmt.Fprintf(a.stdout, "  not in the stream: %s\n", id)
					}
				}
			}
			if out.Compared != nil && out.Compared.Differ > 0 {
				return &exitCodeError{code: exitDiffers}
			}
			return nil
		},
	}
	fs := cmd.Flags()
	nf.register(fs)
	fs.StringVar(&into, "into", "", "bucket to write the rebuilt states into (default <prefix>_state_replay)")
	fs.BoolVar(&force, "force", false, "allow writing into the live bucket or another existing non-empty bucket")
	fs.BoolVar(&compare, "compare", false, "compare the rebuilt states with the live bucket; exit 6 if any differ")
	fs.BoolVar(&asJSON, "json", false, "print the result as JSON")
	fs.IntVar(&replicas, "replicas", 1, "replicas of the bucket if it has to be created")
	fs.DurationVar(&stepTimeout, "step-timeout", orchestrator.DefaultStepTimeout, "the coordinators' --step-timeout (the default step timeout that starts record in their sagas)")
	bindEnv(fs, "step-timeout", "JETSAGA_STEP_TIMEOUT")
	return cmd
}

// prepareBucket returns the bucket to replay into: the scratch bucket is
// recreated empty; another existing bucket must be empty unless force.
func prepareBucket(ctx context.Context, js jetstream.JetStream, ns events.Namespace, name string, scratch, force bool, opts events.StreamOptions) (jetstream.KeyValue, error) {
	cfg := ns.StateBucketConfig(opts)
	cfg.Bucket = name
	cfg.Description = "jetsaga saga states rebuilt by replay"
	existing, err := js.KeyValue(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
	case err != nil:
		return nil, fmt.Errorf("bucket %s: %w", name, err)
	case scratch:
		if err := js.DeleteKeyValue(ctx, name); err != nil {
			return nil, fmt.Errorf("empty the scratch bucket %s: %w", name, err)
		}
	case !force:
		st, err := existing.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("bucket %s: %w", name, err)
		}
		if st.Values() > 0 {
			return nil, usagef("--into %s: the bucket exists and holds %d values; add --force to write into it", name, st.Values())
		}
	}
	if existing != nil && !scratch {
		return existing, nil
	}
	kv, err := js.CreateKeyValue(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create bucket %s: %w", name, err)
	}
	return kv, nil
}
