package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
)

// summary is what a transfer run did: the --json object, or the summary
// line. Field names are part of the interface (docs/flotta-sync.md).
type summary struct {
	Command string `json:"command"`
	DryRun  bool   `json:"dry_run,omitempty"`
	// Files and Bytes moved (a dry run: would move).
	Files       int64 `json:"files"`
	Bytes       int64 `json:"bytes"`
	BytesOnWire int64 `json:"bytes_on_wire"` // object data sent or received, retries included
	Requests    int64 `json:"requests"`
	// Skipped is the sum of the four kinds below it: entries the run left
	// for the next one (exit status 3).
	Skipped    int64 `json:"skipped"`
	Unreadable int64 `json:"unreadable"` // files or directories that could not be read
	Refused    int64 `json:"refused"`    // objects refused for their key or path, or by the disk guard
	Vanished   int64 `json:"vanished"`   // files deleted between the walk and their upload
	Changed    int64 `json:"changed"`    // files or objects that changed while being read
	// Pending counts files still to move, the failed ones included.
	Pending   int64 `json:"pending"`
	Conflicts int64 `json:"conflicts"` // local edits kept as conflict copies
	// Errors counts failed transfers; a run that failed otherwise (server,
	// journal) counts 1.
	Errors int64 `json:"errors"`
	// RemovedFiles and RemovedBytes: local files move removed after their
	// upload was confirmed.
	RemovedFiles int64         `json:"removed_files,omitempty"`
	RemovedBytes int64         `json:"removed_bytes,omitempty"`
	Took         time.Duration `json:"-"`
	TookSecs     float64       `json:"took"` // seconds
	ExitCode     int           `json:"exit_code"`
	Error        string        `json:"error,omitempty"`
}

// report prints s (JSON on stdout with --json, else a line on stderr) and
// returns the run's exit error: failed if err, incomplete if anything was
// skipped. why explains a skip (the status's last error).
func (c *transferConfig) report(s summary, err error, why string) error {
	s.Skipped = s.Unreadable + s.Refused + s.Vanished + s.Changed
	s.TookSecs = s.Took.Seconds()
	var result error
	switch {
	case err != nil:
		if s.Errors == 0 {
			s.Errors = 1
		}
		result = failed(err)
	case s.Skipped > 0:
		if why == "" {
			why = "entries skipped"
		}
		result = &exitError{code: exitIncomplete, err: fmt.Errorf("incomplete: %s", why)}
	}
	s.ExitCode = exitOK
	if result != nil {
		s.ExitCode = result.(*exitError).code
		s.Error = result.Error()
	}
	if c.json {
		enc := json.NewEncoder(c.stdout)
		if jerr := enc.Encode(s); jerr != nil && result == nil {
			return failed(jerr)
		}
		return result
	}
	if s.DryRun {
		return result
	}
	verb := map[string]string{"push": "uploaded", "move": "uploaded", "pull": "downloaded"}[s.Command]
	if verb == "" {
		verb = s.Command + ":"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %d files, %s; %d S3 requests; %s", verb, s.Files, bytesize.Format(s.Bytes), s.Requests,
		s.Took.Round(time.Millisecond))
	for _, part := range []struct {
		n    int64
		what string
	}{
		{s.Pending, "pending"}, {s.Refused, "refused"}, {s.Unreadable, "unreadable"},
		{s.Vanished, "vanished while read"}, {s.Changed, "changed while read"},
		{s.Conflicts, "local edits kept as conflict copies (*.flotta-conflict-*)"},
	} {
		if part.n > 0 {
			fmt.Fprintf(&b, "; %d %s", part.n, part.what)
		}
	}
	if s.Command == "move" {
		fmt.Fprintf(&b, "; removed %d files, %s", s.RemovedFiles, bytesize.Format(s.RemovedBytes))
	}
	fmt.Fprintln(c.stderr, b.String())
	return result
}

// newLogger logs to w at warn level (info with -v), as text or JSON.
func newLogger(o *options, w io.Writer) *zap.Logger {
	level := zapcore.WarnLevel
	if o.verbose {
		level = zapcore.InfoLevel
	}
	var enc zapcore.Encoder
	if o.logFormat == "json" {
		cfg := zap.NewProductionEncoderConfig()
		cfg.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(cfg)
	} else {
		enc = zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig())
	}
	return zap.New(zapcore.NewCore(enc, zapcore.AddSync(w), level))
}

// switchWriter is stderr for the logger, redirected through the progress
// display while it is drawn so that log lines print above it.
type switchWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *switchWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

func (s *switchWriter) set(w io.Writer) {
	s.mu.Lock()
	s.w = w
	s.mu.Unlock()
}
