package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"
)

// The exit statuses of flotta-sync, documented in docs/flotta-sync.md.
const (
	exitOK = 0
	// exitFailed: the run failed: a transfer failed (and is retried by the
	// next run), the server or the journal could not be used, or the run
	// was interrupted.
	exitFailed = 1
	// exitUsage: the command line or the environment is wrong; nothing was
	// attempted.
	exitUsage = 2
	// exitIncomplete: the run did its work but skipped entries: unreadable
	// files or directories, objects refused for their key or path or by the
	// disk guard, files that changed or vanished while being read. Every
	// other file moved; the next run tries the skipped ones again.
	exitIncomplete = 3
	// exitDiffers: check found the directory and the bucket different.
	exitDiffers = 4
)

// exitError carries the exit status of a command that ran (or could not).
type exitError struct {
	code int
	err  error // printed on stderr unless nil
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// usageError is a mistake on the command line or in the environment.
func usageError(format string, a ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, a...)}
}

// failed is a run that did not complete.
func failed(err error) error { return &exitError{code: exitFailed, err: err} }

// exitCode turns the error of root.Execute into the exit status, printing
// it. cobra's own errors (an unknown command or flag, a wrong number of
// operands) are usage errors.
func exitCode(err error, root *cobra.Command, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	var ee *exitError
	if !errors.As(err, &ee) {
		ee = &exitError{code: exitUsage, err: err}
	}
	if ee.err != nil {
		fmt.Fprintln(stderr, "flotta-sync:", ee.err)
	}
	if ee.code == exitUsage {
		fmt.Fprintln(stderr, `Run "flotta-sync help" or "flotta-sync help COMMAND" for usage.`)
	}
	return ee.code
}
