// Package diskguard decides whether a download may be written: it keeps a
// directory under its quota and the file system above a minimum free space.
package diskguard

import (
	"errors"
	"fmt"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrQuota and ErrFreeSpace are wrapped by the refusals of Reserve.
var (
	ErrQuota     = errors.New("quota exceeded")
	ErrFreeSpace = errors.New("not enough free space")
)

// FreeFunc reports the bytes available to unprivileged users and the total
// size of the file system holding path.
type FreeFunc func(path string) (avail, total uint64, err error)

// Statfs is the FreeFunc of the real file system.
func Statfs(path string) (avail, total uint64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	return st.Bavail * uint64(st.Bsize), st.Blocks * uint64(st.Bsize), nil
}

// Guard tracks the bytes used under one directory and the reservations of
// downloads in flight. Its methods are safe for concurrent use.
type Guard struct {
	path           string
	quota          int64 // 0: none
	minFreeBytes   int64
	minFreePercent float64
	free           FreeFunc

	mu       sync.Mutex
	used     int64
	reserved int64
}

// Config says what a Guard enforces.
type Config struct {
	Path           string  // the directory downloads go to
	Quota          int64   // bytes the directory may hold; 0 = no quota
	Used           int64   // bytes it holds now
	MinFreeBytes   int64   // the file system keeps at least this much available
	MinFreePercent float64 // ... and at least this share of its size
	Free           FreeFunc
}

// New returns a Guard; a nil Free means Statfs.
func New(c Config) *Guard {
	if c.Free == nil {
		c.Free = Statfs
	}
	return &Guard{path: c.Path, quota: c.Quota, used: c.Used, minFreeBytes: c.MinFreeBytes,
		minFreePercent: c.MinFreePercent, free: c.Free}
}

// Reservation is room held for one download.
type Reservation struct {
	g        *Guard
	size     int64
	replaces int64
	done     bool
}

// Reserve holds room for a file of size bytes that replaces a file of
// replaces bytes (0 when new). The new file needs its full size free on the
// file system (it is written beside the old one), and the quota must hold the
// difference.
func (g *Guard) Reserve(size, replaces int64) (*Reservation, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.quota > 0 {
		if after := g.used + g.reserved + size - replaces; after > g.quota {
			return nil, fmt.Errorf("%w: %s would hold %d bytes, quota %d", ErrQuota, g.path, after, g.quota)
		}
	}
	avail, total, err := g.free(g.path)
	if err != nil {
		return nil, err
	}
	keep := max(g.minFreeBytes, int64(g.minFreePercent/100*float64(total)))
	if left := int64(avail) - g.reserved - size; left < keep {
		return nil, fmt.Errorf("%w: writing %d bytes would leave %d bytes free on the file system of %s, minimum %d",
			ErrFreeSpace, size, max(left, 0), g.path, keep)
	}
	g.reserved += size
	return &Reservation{g: g, size: size, replaces: replaces}, nil
}

// Commit accounts the file as written.
func (r *Reservation) Commit() { r.end(true) }

// Release gives the room back: the download did not happen.
func (r *Reservation) Release() { r.end(false) }

func (r *Reservation) end(written bool) {
	g := r.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.done {
		return
	}
	r.done = true
	g.reserved -= r.size
	if written {
		g.used += r.size - r.replaces
	}
}

// Used is the bytes the directory holds as far as the Guard knows.
func (g *Guard) Used() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.used
}
