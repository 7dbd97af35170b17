package journal

import (
	"sync"
	"time"
)

// Writer batches records of one mapping so that thousands of small transfers
// cost a few commits (each commit is an fsync), not one each. Records not yet
// flushed when the process dies are simply moved again on the next pass.
//
// Add never waits for a commit in progress: the batch is swapped out under a
// short lock and committed under another, so transfers keep going while the
// journal (and BeforeCommit) fsyncs.
type Writer struct {
	db      *DB
	mapping string
	table   Table

	// BeforeCommit, when set, runs before each commit; an error keeps the
	// batch out of the journal. Ingress syncs directories there, so that the
	// journal never records a rename the disk could still lose.
	BeforeCommit func() error

	commit sync.Mutex // held while a batch is committed: commits stay in order

	mu      sync.Mutex // guards the fields below
	pending []Entry
	spare   []Entry // the previous batch's slice, for reuse
	err     error
	timer   *time.Timer
	kicked  bool // a Flush for a full batch was started and has not swapped yet
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
	full := len(w.pending) >= BatchSize && !w.kicked
	if full {
		w.kicked = true
	} else if w.timer == nil {
		w.timer = time.AfterFunc(BatchDelay, func() { _ = w.Flush() })
	}
	w.mu.Unlock()
	if full {
		go w.Flush() //nolint:errcheck // the error is kept for the final Flush
	}
}

// Flush commits what is queued and returns the first error seen so far.
// Entries added before Flush was called are committed when it returns.
func (w *Writer) Flush() error {
	w.commit.Lock()
	defer w.commit.Unlock()
	w.mu.Lock()
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	w.kicked = false
	batch := w.pending
	w.pending = w.spare[:0]
	w.spare = nil
	w.mu.Unlock()

	var err error
	if len(batch) > 0 {
		if w.BeforeCommit != nil {
			err = w.BeforeCommit()
		}
		if err == nil {
			err = w.db.Put(w.mapping, w.table, batch)
		}
	}
	clear(batch) // drop references to keys
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.spare == nil {
		w.spare = batch[:0]
	}
	if err != nil && w.err == nil {
		w.err = err
	}
	return w.err
}
