package datasync

import (
	"errors"
	"io/fs"
	"sync/atomic"

	"github.com/project-flotta/flotta-device-worker/sync/diskguard"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// Progress counts the transfers of the passes it is given to
// (PassOptions.Progress) while they run, for a live display: what the
// planner queued so far, what is done, what is in flight. The plan streams
// (the walk or the listing goes on while files move), so the totals grow
// during a pass. Bytes on the wire are counted by s3client.Counter.
// All methods are safe for concurrent use and on a nil Progress.
type Progress struct {
	plannedFiles, plannedBytes atomic.Int64
	doneFiles, doneBytes       atomic.Int64
	failed, vanished, changed  atomic.Int64
	inFlight                   atomic.Int64
}

// ProgressSnapshot is the state of a Progress at one moment.
type ProgressSnapshot struct {
	PlannedFiles, PlannedBytes int64 // transfers queued so far (and refusals)
	DoneFiles, DoneBytes       int64 // finished, whatever the outcome
	// Failed counts transfers that failed (retried by the next pass).
	// Refused and unreadable files are not in it: the status counts them.
	Failed int64
	// Vanished counts files deleted between the walk and their upload.
	Vanished int64
	// Changed counts files or objects that changed while being read (the
	// next pass moves the new version).
	Changed  int64
	InFlight int64 // running now
}

// Snapshot reads the counters.
func (p *Progress) Snapshot() ProgressSnapshot {
	if p == nil {
		return ProgressSnapshot{}
	}
	return ProgressSnapshot{
		PlannedFiles: p.plannedFiles.Load(), PlannedBytes: p.plannedBytes.Load(),
		DoneFiles: p.doneFiles.Load(), DoneBytes: p.doneBytes.Load(),
		Failed: p.failed.Load(), Vanished: p.vanished.Load(), Changed: p.changed.Load(), InFlight: p.inFlight.Load(),
	}
}

func (p *Progress) planned(size int64) {
	if p != nil {
		p.plannedFiles.Add(1)
		p.plannedBytes.Add(size)
	}
}

func (p *Progress) begin() {
	if p != nil {
		p.inFlight.Add(1)
	}
}

// end counts a finished job of size bytes.
func (p *Progress) end(size int64, err error) {
	if p == nil {
		return
	}
	p.inFlight.Add(-1)
	p.doneFiles.Add(1)
	p.doneBytes.Add(size)
	switch {
	case err == nil || isRefusal(err) || errors.Is(err, fs.ErrPermission):
		// refused or unreadable: in the status
	case errors.Is(err, fs.ErrNotExist):
		p.vanished.Add(1)
	case errors.Is(err, stablefile.ErrChanged) || errors.Is(err, errObjectMoved):
		p.changed.Add(1)
	default:
		p.failed.Add(1)
	}
}

// isRefusal reports whether err refused a file (its key, its path, or the disk
// guard) rather than failed it: the status counts those as refused.
func isRefusal(err error) bool {
	return errors.Is(err, keys.ErrHostile) || errors.Is(err, safefs.ErrUnsafe) ||
		errors.Is(err, diskguard.ErrQuota) || errors.Is(err, diskguard.ErrFreeSpace)
}

// sizeOf is the size a decision about it moves: the file's for egress, the
// object's for ingress, else what the journal recorded.
func (p *pass) sizeOf(it item) int64 {
	switch {
	case it.local != nil && p.m.Direction == Egress:
		return it.local.Size
	case it.remote != nil:
		return it.remote.Size
	case it.row != nil:
		return it.row.Size
	}
	return 0
}
