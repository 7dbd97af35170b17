package directio

import (
	"errors"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// direct is a file with O_DIRECT set on its descriptor (fcntl F_SETFL: the
// flag can be turned off again for the unaligned tail).
type direct struct {
	f     *os.File
	fd    int
	flags int // the descriptor's flags before

	mu sync.Mutex
	on bool
}

func enable(f *os.File) (*direct, error) {
	fd := int(f.Fd())
	flags, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err != nil {
		return nil, err
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags|unix.O_DIRECT); err != nil {
		return nil, err // EINVAL: the file system has no direct I/O
	}
	return &direct{f: f, fd: fd, flags: flags, on: true}, nil
}

// disable turns O_DIRECT off (idempotent).
func (d *direct) disable() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.on {
		_, _ = unix.FcntlInt(uintptr(d.fd), unix.F_SETFL, d.flags)
		d.on = false
	}
}

// writeAt writes all of b at off. A direct write the file system refuses
// (EINVAL: an alignment it does not take) turns direct I/O off and is
// written again through the page cache.
func (d *direct) writeAt(b []byte, off int64) error {
	for len(b) > 0 {
		n, err := unix.Pwrite(d.fd, b, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EINVAL) && d.isOn() {
			d.disable()
			continue
		}
		if err != nil {
			return &os.PathError{Op: "write", Path: d.f.Name(), Err: err}
		}
		if n == 0 {
			return &os.PathError{Op: "write", Path: d.f.Name(), Err: errShort}
		}
		b, off = b[n:], off+int64(n)
	}
	return nil
}

func (d *direct) isOn() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.on
}
