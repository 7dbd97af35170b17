package datasync

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// simulate runs rounds of transfers through f on a fake clock: each round
// fills the limit, lasts took(limit) and moves size bytes per transfer.
// It returns the limits of the last rounds.
func simulate(t *testing.T, f *flow, rounds int, size int64, took func(limit int) time.Duration, err func(round int) error) []int {
	t.Helper()
	clock := time.Unix(0, 0)
	f.now = func() time.Time { return clock }
	var limits []int
	for r := range rounds {
		l := f.Limit()
		limits = append(limits, l)
		toks := make([]*token, l)
		for i := range toks {
			if toks[i] = f.acquire(context.Background()); toks[i] == nil {
				t.Fatal("acquire failed")
			}
		}
		clock = clock.Add(took(l))
		for _, tok := range toks {
			var e error
			if err != nil {
				e = err(r)
			}
			tok.done(size, e)
		}
	}
	return limits
}

// TestFlowClimbsWhileRoundTripsBind: small files on a 300 ms round trip
// move as many times faster as there are in flight: the limit climbs to
// its cap.
func TestFlowClimbsWhileRoundTripsBind(t *testing.T) {
	f := newFlow(0, DefaultConcurrency, MinConcurrency, DefaultMaxConcurrency)
	limits := simulate(t, f, 60, 4<<10, func(int) time.Duration { return 300 * time.Millisecond }, nil)
	if got := limits[len(limits)-1]; got < DefaultMaxConcurrency*3/4 {
		t.Errorf("round-trip bound: limit %d after 60 rounds (%v), want near %d", got, limits, DefaultMaxConcurrency)
	}
}

// TestFlowStepsBackOnAThinLink: 1 MiB files through 128 KiB/s: as many in
// flight share the link, so more do not move more: the limit comes down.
func TestFlowStepsBackOnAThinLink(t *testing.T) {
	f := newFlow(0, DefaultConcurrency, MinConcurrency, DefaultMaxConcurrency)
	const size, rate = 1 << 20, 128 << 10
	limits := simulate(t, f, 80, size, func(l int) time.Duration {
		return 300*time.Millisecond + time.Duration(float64(l)*size/rate*float64(time.Second))
	}, nil)
	last := limits[len(limits)-10:]
	for _, l := range last {
		if l > DefaultConcurrency {
			t.Fatalf("bandwidth bound: limits %v, want at most %d at the end", limits, DefaultConcurrency)
		}
	}
	if last[len(last)-1] > 4 {
		t.Errorf("bandwidth bound: limit %d at the end (%v), want it down to a few", last[len(last)-1], limits)
	}
}

// TestFlowHalvesOnATimeout: a transfer that timed out on the link halves
// the limit at once.
func TestFlowHalvesOnATimeout(t *testing.T) {
	f := newFlow(0, 16, MinConcurrency, DefaultMaxConcurrency)
	stall := fmt.Errorf("upload x: %w", &s3client.TimeoutError{Op: "read"})
	limits := simulate(t, f, 3, 4<<10, func(int) time.Duration { return time.Second }, func(r int) error {
		if r == 0 {
			return stall
		}
		return nil
	})
	if limits[1] != 8 {
		t.Errorf("limits %v: want 16 then 8 after a timeout", limits)
	}
}

func TestFlowFixed(t *testing.T) {
	f := newFlow(3, DefaultConcurrency, MinConcurrency, DefaultMaxConcurrency)
	limits := simulate(t, f, 20, 4<<10, func(int) time.Duration { return 300 * time.Millisecond }, nil)
	for _, l := range limits {
		if l != 3 {
			t.Fatalf("fixed concurrency 3 moved: %v", limits)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	toks := []*token{f.acquire(ctx), f.acquire(ctx), f.acquire(ctx)}
	cancel()
	if f.acquire(ctx) != nil {
		t.Error("a fourth slot of three")
	}
	for _, tok := range toks {
		tok.done(0, nil)
	}
}
