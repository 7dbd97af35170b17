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
// The group is whatever was sealed while the previous syncfs ran, and, when
// that one covered more than one file (downloads are streaming in), during a
// pause of three times its duration (at most 10 ms) after it: a lone file
// waits for one syncfs, and the groups grow with the rate. Without the pause
// a 10,000 x 4 KiB ingress made about 1,800 syncfs calls of 5 files each,
// with it about 400.

// groupMaxSize is the largest download made durable in a group; bigger ones
// are fsynced on their own (their data dominates, and a syncfs would also
// flush what other writers left on the file system).
const groupMaxSize = 1 << 20

// groupGatherFactor and groupGatherMax set the pause before the next syncfs
// of a stream of downloads (see above).
const (
	groupGatherFactor = 3
	groupGatherMax    = 10 * time.Millisecond
)

// groupWaiters bounds the sealed files of a pass waiting for a syncfs.
const groupWaiters = 256

// groupCommit makes the sealed temporary files of one directory durable
// together.
type groupCommit struct {
	sync   func() error  // the directory's SyncFS
	slots  chan struct{} // one per waiting file
	gather int           // groupGatherFactor (0 in a test: no pause)

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
	g := &groupCommit{sync: dir.SyncFS, slots: make(chan struct{}, groupWaiters), gather: groupGatherFactor}
	if e.hooks.syncGroup != nil {
		g.sync = func() error { return e.hooks.syncGroup(dir) }
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
	var took time.Duration // the last syncfs
	company := false       // it covered more than one file: downloads are streaming in
	for {
		if company && g.gather > 0 {
			// Let the group grow: each syncfs costs a journal commit and a
			// disk cache flush whatever it covers.
			time.Sleep(min(time.Duration(g.gather)*took, groupGatherMax))
		}
		g.mu.Lock()
		batch := g.waiting
		g.waiting = nil
		if len(batch) == 0 {
			g.running = false
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		company = len(batch) > 1
		start := time.Now()
		err := g.sync()
		took = time.Since(start)
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
