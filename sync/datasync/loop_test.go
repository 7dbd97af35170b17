package datasync

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Test helpers that talk to the mappings' service loops, as the engine does:
// by message.

// inspect runs fn in the service loop of mapping id (to read or set its state).
func (e *Engine) inspect(t *testing.T, id string, fn func(*loopState)) {
	t.Helper()
	e.mu.Lock()
	mp := e.maps[id]
	e.mu.Unlock()
	require.NotNil(t, mp, "mapping %s", id)
	done := make(chan struct{})
	require.True(t, mp.send(msgInspect{fn: fn, done: done}), "mapping %s: loop ended", id)
	<-done
}

// watched reports whether the schedule treats the mapping as watched.
func watched(e *Engine, id string) bool {
	e.mu.Lock()
	mp := e.maps[id]
	e.mu.Unlock()
	if mp == nil {
		return false
	}
	var w bool
	done := make(chan struct{})
	if !mp.send(msgInspect{fn: func(ls *loopState) { w = ls.sched.watched }, done: done}) {
		return false
	}
	<-done
	return w
}

// simRound is one round of the simulated clock: every loop acts as if its
// timer fired at hooks.now(), and the passes it starts are waited for.
func (e *Engine) simRound() {
	e.mu.Lock()
	list := e.list()
	e.mu.Unlock()
	var wg sync.WaitGroup
	for _, mp := range list {
		reply := make(chan struct{})
		if mp.send(msgTick{reply: reply}) {
			wg.Go(func() { wait(mp, reply) })
		}
	}
	wg.Wait()
}

// simNextDue is when the first loop's next scheduled pass is due.
func (e *Engine) simNextDue(t *testing.T) time.Time {
	e.mu.Lock()
	list := e.list()
	e.mu.Unlock()
	var next time.Time
	for _, mp := range list {
		e.inspect(t, mp.id, func(ls *loopState) {
			at, _ := ls.sched.due(&e.opts, e.hooks.now())
			if next.IsZero() || at.Before(next) {
				next = at
			}
		})
	}
	return next
}

// simulateClock puts the engine's schedule on the simulated clock now,
// with Run running (its loops schedule passes only then). Call it before
// Configure: the loops read what it sets.
func simulateClock(t *testing.T, e *Engine, now *atomic.Pointer[time.Time]) {
	t.Helper()
	e.hooks.manual = true
	e.hooks.now = func() time.Time { return *now.Load() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	e.opts.NoWatch, e.opts.NoNotify = true, true
	e.opts.MaxStaleness = -1
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// A merged pass goes on while one of its callers waits, and stops when the
// last gives up.
func TestAnyLive(t *testing.T) {
	a, cancelA := context.WithCancel(context.Background())
	b, cancelB := context.WithCancel(context.Background())
	ctx, release := anyLive([]context.Context{a, b})
	cancelA()
	time.Sleep(10 * time.Millisecond)
	require.NoError(t, ctx.Err(), "b still waits")
	cancelB()
	require.Eventually(t, func() bool { return ctx.Err() != nil }, time.Second, time.Millisecond)
	release()

	// Released before its callers end: no callback left on them.
	c, cancelC := context.WithCancel(context.Background())
	defer cancelC()
	ctx, release = anyLive([]context.Context{c, context.Background()})
	release()
	require.Error(t, ctx.Err(), "released")
}

// Changes seen while a pass runs wait in the mapping's loop and go
// together into the next pass: three callers, one pass after the first.
func TestChangesSeenDuringAPassGoTogether(t *testing.T) {
	f := newMemFixture(t)
	f.write("out/a", []byte("a"))
	f.configure(f.egress("e1", "out", "p"))
	var partial atomic.Int64
	f.eng.hooks.onPass = func(_ string, _ PassOptions, p bool) {
		if p {
			partial.Add(1)
		}
	}
	hold, held := make(chan struct{}), make(chan struct{}, 1)
	f.eng.hooks.beforeUpload = func(rel string) {
		if rel == "a" {
			held <- struct{}{}
			<-hold
		}
	}
	ctx := t.Context()
	errs := make(chan error, 4)
	go func() { errs <- f.eng.Changed(ctx, "e1", []string{"a"}) }()
	<-held // the first pass runs, and waits
	for _, name := range []string{"b", "c", "d"} {
		f.write("out/"+name, []byte(name))
		go func() { errs <- f.eng.Changed(ctx, "e1", []string{name}) }()
	}
	require.Eventually(t, func() bool {
		n := 0
		f.eng.inspect(t, "e1", func(ls *loopState) { n = len(ls.changes) })
		return n == 3
	}, 5*time.Second, time.Millisecond, "the three wait in the loop")
	close(hold)
	for range 4 {
		require.NoError(t, <-errs)
	}
	require.Equal(t, int64(2), partial.Load(), "the first pass, then one for the three")
	for _, k := range []string{"p/a", "p/b", "p/c", "p/d"} {
		require.True(t, f.has(k), k)
	}
}
