package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

// signalContext returns a context that is done when ctx is, or when the
// process receives SIGINT or SIGTERM.
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
}
