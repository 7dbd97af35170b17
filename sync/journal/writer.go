package journal

import (
	"sync"
	"time"
)

// Writer batches records of one mapping so that thousands of small transfers
// cost a few commits (each commit is an fsync), not one each. Records not yet
// flushed when the process dies are simply moved again on the next pass.
type Writer struct {
	db      *DB
	mapping string
	table   Table

	// BeforeCommit, when set, runs before each commit; an error keeps the
	// batch out of the journal. Ingress syncs directories there, so that the
	// journal never records a rename the disk could still lose.
	BeforeCommit func() error

	mu      sync.Mutex
	pending []Entry
	err     error
	timer   *time.Timer
}

// BatchSize and BatchDelay bound how much a Writer holds before committing.
const (
	BatchSize  = 512
	BatchDelay = 200 * time.Millisecond
)

// NewWriter returns a Writer for one table of a mapping.
func (d *DB) NewWriter(mapping string, t Table) *Writer {
	return &Writer{db: d, mapping: mapping, table: t}
}

// Add queues an entry; it commits when the batch is full or BatchDelay passed.
func (w *Writer) Add(e Entry) {
	w.mu.Lock()
	w.pending = append(w.pending, e)
	full := len(w.pending) >= BatchSize
	if !full && w.timer == nil {
		w.timer = time.AfterFunc(BatchDelay, func() { _ = w.Flush() })
	}
	w.mu.Unlock()
	if full {
		_ = w.Flush()
	}
}

// Flush commits what is queued and returns the first error seen so far.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	if len(w.pending) > 0 {
		var err error
		if w.BeforeCommit != nil {
			err = w.BeforeCommit()
		}
		if err == nil {
			err = w.db.Put(w.mapping, w.table, w.pending)
		}
		if err != nil && w.err == nil {
			w.err = err
		}
		w.pending = w.pending[:0]
	}
	return w.err
}
