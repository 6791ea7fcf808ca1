package orchestrator

import (
	"context"

	"github.com/jetsaga/jetsaga/events"
)

// Act publishes an operator action on a parked saga, as [Client.Redrive],
// [Client.Skip] and [Client.Resolve] do, keeping every field of ctl that
// they do not set: By, the operator's identity, is recorded in the sagas
// stream with the action (and shown by the saga's timeline). V and ID are
// set here; it returns ErrNotParked unless the saga is parked.
func (c *Client) Act(ctx context.Context, ctl events.Control) error {
	return c.control(ctx, ctl)
}
