package datasync

import (
	"context"
	"sync"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/safefs"
)

// A download is durable before it gets its final name. One fsync per file
// costs a file-system journal commit and a disk cache flush each: for
// thousands of small objects, more than the downloads themselves. Small
// downloads are therefore made durable in groups (group commit): each is
// sealed (written and closed, not synced) and waits; one syncfs of the
// directory's file system covers every file sealed before it started; then
// each is renamed. The ordering (data durable, then rename, then the
// directory, then the journal) is the same as fsync-then-rename.
//
// The group is whatever was sealed while the previous syncfs ran: no timer,
// a lone file waits for one syncfs, and the groups grow with the rate.

// groupMaxSize is the largest download made durable in a group; bigger ones
// are fsynced on their own (their data dominates, and a syncfs would also
// flush what other writers left on the file system).
const groupMaxSize = 1 << 20

// groupWaiters bounds the sealed files of a pass waiting for a syncfs.
const groupWaiters = 256

// groupCommit makes the sealed temporary files of one directory durable
// together.
type groupCommit struct {
	sync  func() error  // the directory's SyncFS
	slots chan struct{} // one per waiting file

	mu      sync.Mutex
	waiting []chan error
	running bool // a syncer goroutine is serving waiting
}

// newGroupCommit returns a group commit for dir, or nil when its file system
// cannot be synced as a whole (every file is then fsynced on its own).
func newGroupCommit(e *Engine, dir *safefs.Dir) *groupCommit {
	if dir == nil || !dir.CanSyncFS() {
		return nil
	}
	g := &groupCommit{sync: dir.SyncFS, slots: make(chan struct{}, groupWaiters)}
	if e.syncGroup != nil {
		g.sync = func() error { return e.syncGroup(dir) }
	}
	return g
}

// durable returns once a syncfs that started after it was called has
// returned, with that syncfs's error.
func (g *groupCommit) durable() error {
	done := make(chan error, 1)
	g.mu.Lock()
	g.waiting = append(g.waiting, done)
	if !g.running {
		g.running = true
		go g.syncer()
	}
	g.mu.Unlock()
	return <-done
}

// syncer syncs for the waiting files until none waits.
func (g *groupCommit) syncer() {
	for {
		g.mu.Lock()
		batch := g.waiting
		g.waiting = nil
		if len(batch) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		err := g.sync()
		for _, done := range batch {
			done <- err
		}
	}
}

// commitDownload puts a fully written and checked temporary file under its
// final name, durably, giving up the transfer slot (release) while the disk
// works. A small file on the directory's file system joins a group commit;
// any other is fsynced on its own in one of the engine's commit slots.
// beforeRename runs once the data is durable (group) or about to be synced
// with the rename (alone), right before the file takes its name; its error
// abandons the download.
func (p *pass) commitDownload(ctx context.Context, tmp *safefs.Temp, size int64, mtime time.Time, release func(), beforeRename func() error) error {
	g := p.group
	if g == nil || size > groupMaxSize || !tmp.OnSyncFS() {
		select {
		case p.e.commits <- struct{}{}: // taken before the transfer slot is given up: bounded
		case <-ctx.Done():
			tmp.Abort()
			return ctx.Err()
		}
		release()
		defer func() { <-p.e.commits }()
		if err := beforeRename(); err != nil {
			tmp.Abort()
			return err
		}
		return tmp.Commit(mtime)
	}
	if err := tmp.Seal(mtime); err != nil {
		return err
	}
	select {
	case g.slots <- struct{}{}:
	case <-ctx.Done():
		tmp.Abort()
		return ctx.Err()
	}
	release()
	err := g.durable()
	<-g.slots
	if err == nil {
		err = beforeRename()
	}
	if err != nil {
		tmp.Abort()
		return err
	}
	return tmp.Place()
}
