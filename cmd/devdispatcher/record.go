package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sync"
	"time"
)

// recorder writes one JSON object per line: what the worker sends (kind
// "send") and what the dispatcher does (register, deliver, notify,
// worker-start, worker-exit), to stdout and optionally a file.
type recorder struct {
	mu  sync.Mutex
	out []io.Writer
}

func newRecorder(outFile string) (*recorder, func() error, error) {
	r := &recorder{out: []io.Writer{os.Stdout}}
	if outFile == "" {
		return r, func() error { return nil }, nil
	}
	f, err := os.OpenFile(outFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, fmt.Errorf("open --out file: %w", err)
	}
	r.out = append(r.out, f)
	return r, f.Close, nil
}

// record writes fields plus "time" and "kind" as one line.
func (r *recorder) record(kind string, fields map[string]any) {
	line := map[string]any{"time": time.Now().UTC().Format(time.RFC3339Nano), "kind": kind}
	for k, v := range fields {
		line[k] = v
	}
	b, err := json.Marshal(line)
	if err != nil {
		b, _ = json.Marshal(map[string]any{"kind": "error", "error": err.Error()})
	}
	b = append(b, '\n')
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, w := range r.out {
		_, _ = w.Write(b)
	}
}
