package main

import (
	"context"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// supervisor runs the worker binary the way yggd does: a fixed
// environment, restarted with a growing delay when it dies, SIGTERM when
// the dispatcher stops.
type supervisor struct {
	path     string
	env      []string
	minDelay time.Duration
	maxDelay time.Duration
	stopWait time.Duration
	rec      *recorder
	onExit   func(pid int)
}

// stableAfter is how long a worker must run for its restart delay to reset.
const stableAfter = 10 * time.Second

func (s *supervisor) run(ctx context.Context) {
	delay := s.minDelay
	for ctx.Err() == nil {
		started := time.Now()
		err := s.runOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > stableAfter {
			delay = s.minDelay
		}
		fields := map[string]any{"restart_in": delay.String()}
		if err != nil {
			fields["error"] = err.Error()
		}
		s.rec.record("worker-restart", fields)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, s.maxDelay)
	}
}

// runOnce starts the worker and waits for it to end; when ctx ends first it
// sends SIGTERM, then SIGKILL after stopWait.
func (s *supervisor) runOnce(ctx context.Context) error {
	cmd := exec.Command(s.path)
	cmd.Env = s.env
	cmd.Stdout = os.Stderr // the worker logs; stdout is the dispatcher's record
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	pid := cmd.Process.Pid
	s.rec.record("worker-start", map[string]any{"pid": pid, "path": s.path})
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(s.stopWait):
			_ = cmd.Process.Kill()
			err = <-done
		}
	}
	fields := map[string]any{"pid": pid}
	if err != nil {
		fields["error"] = err.Error()
	}
	s.rec.record("worker-exit", fields)
	s.onExit(pid)
	return err
}
