// Package stablefile reads a file for upload and makes sure the bytes handed
// out all come from one version of it.
//
// An HTTP client stops reading a request body at Content-Length, so an error
// returned after the last byte is never seen and the server commits whatever
// it received. A Reader therefore checks the file again before it hands out the
// final bytes of each checkpoint (the end of each multipart part, and the end
// of the file) and returns ErrChanged instead of them when the size, mtime,
// ctime or inode moved: the request then fails before the object is committed.
package stablefile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"time"
)

// ErrChanged says the file changed while it was being read.
var ErrChanged = errors.New("file changed while being read")

// Stat is the part of a file's status that changes when its content does.
type Stat struct {
	Size    int64
	MtimeNs int64
	CtimeNs int64
	Inode   uint64
	Dev     uint64
}

// StatOf extracts a Stat from a FileInfo of os.Stat, os.Lstat or File.Stat.
func StatOf(fi os.FileInfo) Stat {
	s := Stat{Size: fi.Size(), MtimeNs: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.CtimeNs = st.Ctim.Sec*1e9 + st.Ctim.Nsec
		s.Inode = st.Ino
		s.Dev = uint64(st.Dev) //nolint:unconvert // int32 on some platforms
	}
	return s
}

// Mtime is the modification time.
func (s Stat) Mtime() time.Time { return time.Unix(0, s.MtimeNs) }

// Reader reads one version of a file. It implements io.Reader, io.ReaderAt and
// io.Seeker; ReadAt may be called concurrently (parallel multipart parts).
type Reader struct {
	f        *os.File
	path     string
	lstat    func() (os.FileInfo, error)
	st       Stat
	partSize int64
	off      int64 // for Read and Seek
	// prefix: the bytes handed out are the first Size bytes of a file that
	// may keep growing (see AsPrefix).
	prefix bool
}

// AsPrefix makes the Reader deliver the first Size bytes of a file that keeps
// growing (a log held open): growth no longer counts as a change, a file
// that shrank or was replaced still does. A rewrite in the middle does not
// show in the file's status: the caller checks the content (an upload sends
// the MD5 of what it read ahead, and the server refuses other bytes).
func (r *Reader) AsPrefix() { r.prefix = true }

// Open opens path (not following a final symlink) and records its Stat.
// partSize is the size of multipart parts (0 or >= size for a single PUT).
func Open(path string, partSize int64) (*Reader, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	return newReader(f, path, func() (os.FileInfo, error) { return os.Lstat(path) }, partSize)
}

// OpenIn opens rel inside root like Open: the file cannot lie outside root.
func OpenIn(root *os.Root, rel string, partSize int64) (*Reader, error) {
	f, err := root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	return newReader(f, rel, func() (os.FileInfo, error) { return root.Lstat(rel) }, partSize)
}

func newReader(f *os.File, path string, lstat func() (os.FileInfo, error), partSize int64) (*Reader, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s: not a regular file", path)
	}
	return &Reader{f: f, path: path, lstat: lstat, st: StatOf(fi), partSize: partSize}, nil
}

// Path is the path the Reader was opened with.
func (r *Reader) Path() string { return r.path }

// Stat is the file's status when it was opened.
func (r *Reader) Stat() Stat { return r.st }

// Size is the number of bytes the Reader delivers.
func (r *Reader) Size() int64 { return r.st.Size }

// Close closes the file.
func (r *Reader) Close() error { return r.f.Close() }

// Verify returns ErrChanged (wrapped) when the file is no longer the version
// that was opened: its size, mtime or ctime moved, or its path now names
// another file.
func (r *Reader) Verify() error {
	fi, err := r.f.Stat()
	if err != nil {
		return fmt.Errorf("re-stat %s: %w", r.path, err)
	}
	now := StatOf(fi)
	if r.prefix {
		if now.Size < r.st.Size || now.Inode != r.st.Inode || now.Dev != r.st.Dev {
			return fmt.Errorf("%s: %w (size %d→%d, no longer a prefix)", r.path, ErrChanged, r.st.Size, now.Size)
		}
	} else if now != r.st {
		return fmt.Errorf("%s: %w (size %d→%d)", r.path, ErrChanged, r.st.Size, now.Size)
	}
	li, err := r.lstat()
	if err != nil {
		return fmt.Errorf("%s: %w (%v)", r.path, ErrChanged, err)
	}
	if p := StatOf(li); p.Inode != r.st.Inode || p.Dev != r.st.Dev {
		return fmt.Errorf("%s: %w (replaced)", r.path, ErrChanged)
	}
	return nil
}

// Unchecked reads the file without checkpoints, for a pass that only
// computes checksums ahead of the checked read that goes to the server: if
// the file changes during the unchecked pass, the checked one fails.
func (r *Reader) Unchecked() io.Reader { return io.NewSectionReader(r.f, 0, r.st.Size) }

// ReadAt reads like io.ReaderAt, but bytes that end a checkpoint are only
// returned once Verify passed.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.st.Size {
		return 0, io.EOF
	}
	want := min(int64(len(p)), r.st.Size-off)
	n, err := r.f.ReadAt(p[:want], off)
	if int64(n) < want {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("%s: %w (shrank)", r.path, ErrChanged)
		}
		return 0, err
	}
	end := off + want
	if r.crossesCheckpoint(off, end) {
		if err := r.Verify(); err != nil {
			return 0, err // hold the final bytes back: the request cannot complete
		}
	}
	if want < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}

// crossesCheckpoint reports whether (off, end] contains the end of the file
// or the end of a part.
func (r *Reader) crossesCheckpoint(off, end int64) bool {
	if end >= r.st.Size {
		return true
	}
	if r.partSize <= 0 {
		return false
	}
	return end/r.partSize > off/r.partSize
}

// Read reads sequentially from the current offset.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.ReadAt(p, r.off)
	r.off += int64(n)
	return n, err
}

// Seek sets the offset of Read.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		offset += r.st.Size
	default:
		return 0, errors.New("stablefile: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("stablefile: negative offset")
	}
	r.off = offset
	return offset, nil
}
