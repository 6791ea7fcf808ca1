package outbox

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// listen holds a dedicated connection LISTENing on the outbox's channel and
// wakes the relay on every notification, until ctx is done. It reconnects
// with backoff when the connection fails, and wakes the relay after each
// reconnect, since notifications sent while it was down are lost.
func (r *Relay) listen(ctx context.Context) {
	cfg := r.pool.Config().ConnConfig.Copy()
	if cfg.RuntimeParams == nil {
		cfg.RuntimeParams = map[string]string{}
	}
	cfg.RuntimeParams["application_name"] = listenAppName
	failures := 0
	for {
		err := r.listenOnce(ctx, cfg, failures > 0)
		if ctx.Err() != nil {
			return
		}
		failures++
		r.mu.Lock()
		r.stats.ListenErrors++
		r.stats.LastError = err
		r.mu.Unlock()
		if r.cfg.OnError != nil {
			r.cfg.OnError(err)
		}
		if !sleepCtx(ctx, r.backoff(failures)) {
			return
		}
	}
}

// listenOnce connects, listens and waits for notifications until the
// connection fails or ctx is done.
func (r *Relay) listenOnce(ctx context.Context, cfg *pgx.ConnConfig, reconnect bool) error {
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("outbox: relay %s: connect to LISTEN: %w", r.ob.qtable, err)
	}
	defer func() {
		r.mu.Lock()
		r.stats.Listening = false
		r.mu.Unlock()
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		_ = conn.Close(cctx)
		cancel()
	}()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{r.ob.channel}.Sanitize()); err != nil {
		return fmt.Errorf("outbox: relay %s: LISTEN %q: %w", r.ob.qtable, r.ob.channel, err)
	}
	r.mu.Lock()
	r.stats.Listening = true
	r.mu.Unlock()
	if reconnect {
		r.Wake()
	}
	for {
		if _, err := conn.WaitForNotification(ctx); err != nil {
			return fmt.Errorf("outbox: relay %s: wait for NOTIFY: %w", r.ob.qtable, err)
		}
		r.mu.Lock()
		r.stats.Notifications++
		r.mu.Unlock()
		r.Wake()
	}
}
