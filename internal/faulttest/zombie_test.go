package faulttest

import (
	"context"
	"math/rand/v2"
	"syscall"
	"time"
)

// shortZombies bounds the zombies of the short form: each holds inputs of
// its sagas for the coordinators' AckWait (30s).
const shortZombies = 3

// zombieCoordinator, with two coordinators, turns one into a zombie, each
// in turn: SIGSTOP it for 1.5-2.5 step timeouts while the other goes on,
// then SIGKILL it (it never resumes) and start a fresh process. A stopped
// coordinator keeps the messages JetStream delivered to it (its pull
// requests stay open on the server until they expire, and it gets its share
// of the new messages meanwhile): they come back to the others only after
// the consumer's AckWait (30s), behind later inputs of the same sagas —
// outcomes, timer ticks — that the live coordinator applied already.
// Bank-b is stopped too, from the same moment, for 0.5-1.5 step timeouts,
// so that its outcomes arrive around the moment their steps time out:
// timeouts and late outcomes race. Every 1-3s, shortZombies times in the
// short form; every 10-20s in the long one.
func zombieCoordinator(ctx context.Context, s *system, rng *rand.Rand) (int, error) {
	n := 0
	lo, hi, limit := time.Second, 3*time.Second, shortZombies
	if soak() {
		lo, hi, limit = 10*time.Second, 20*time.Second, 0
	}
	for (limit == 0 || n < limit) && pause(ctx, rng, lo, hi) {
		zombie := s.coords[n%len(s.coords)]
		frozen := between(rng, stepTimeout*3/2, stepTimeout*5/2)
		slow := between(rng, stepTimeout/2, stepTimeout*3/2)
		if err := zombie.signal(syscall.SIGSTOP); err != nil {
			return n, err
		}
		n++
		if err := s.bankB.signal(syscall.SIGSTOP); err != nil {
			return n, err
		}
		time.Sleep(slow)
		if err := s.bankB.signal(sigCont); err != nil {
			return n, err
		}
		time.Sleep(frozen - slow)
		if err := zombie.kill(); err != nil {
			return n, err
		}
		if err := zombie.start(); err != nil {
			return n, err
		}
	}
	return n, nil
}
