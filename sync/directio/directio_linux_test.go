package directio

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func randomBytes(n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{1})
	_, _ = r.Read(b)
	return b
}

// residentPages counts the file's pages in the page cache.
func residentPages(t *testing.T, p string) (resident, total int) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	if fi.Size() == 0 {
		return 0, 0
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	page := os.Getpagesize()
	vec := make([]byte, (len(m)+page-1)/page)
	if _, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); errno != 0 {
		t.Fatal(errno)
	}
	for _, v := range vec {
		if v&1 != 0 {
			resident++
		}
	}
	return resident, len(vec)
}

// TestCopy: every length (empty, under a block, whole blocks, blocks and a
// tail) arrives whole, the offset ends at the end, and the whole blocks
// went around the page cache (on this machine's file system).
func TestCopy(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []int{0, 1, align - 1, Block - 1, Block, Block + 1, 3*Block + 12345} {
		want := randomBytes(n)
		p := filepath.Join(dir, "f")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Copy(f, bytes.NewReader(want))
		if err != nil || got != int64(n) {
			t.Fatalf("%d bytes: Copy = %d, %v", n, got, err)
		}
		if pos, _ := f.Seek(0, io.SeekCurrent); pos != int64(n) {
			t.Fatalf("%d bytes: offset %d after Copy", n, pos)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		if n >= 3*Block {
			resident, total := residentPages(t, p)
			tailPages := (n%Block + os.Getpagesize() - 1) / os.Getpagesize()
			if resident > tailPages {
				t.Errorf("%d bytes: %d of %d pages in the page cache, want at most the tail's %d: not written directly", n, resident, total, tailPages)
			}
		}
		b, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(b, want) {
			t.Fatalf("%d bytes: content differs (%v)", n, err)
		}
	}
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(b []byte) (int, error) {
	n, err := f.r.Read(b)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

// TestReadError: a stream that breaks off returns its error.
func TestReadError(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	broken := errors.New("connection reset")
	_, err = Copy(f, &failingReader{bytes.NewReader(randomBytes(2*Block + 7)), broken})
	if !errors.Is(err, broken) {
		t.Fatalf("Copy = %v, want the reader's error", err)
	}
}

type endless struct{}

func (endless) Read(b []byte) (int, error) { return len(b), nil }

// TestWriteErrorStopsReading: a file that cannot be written ends the copy
// with the write error instead of reading the stream to its end.
func TestWriteErrorStopsReading(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p) // read-only: every write fails (EBADF)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Copy(f, endless{}); err == nil {
		t.Fatal("Copy into a read-only file succeeded")
	}
}

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		size int64
		n    int
		want []Range
	}{
		{0, 4, nil},
		{10, 4, []Range{{0, 10}}},
		{Block, 4, []Range{{0, Block}}},
		{4*Block + 1, 4, []Range{{0, 2 * Block}, {2 * Block, 2 * Block}, {4 * Block, 1}}},
		{8 * Block, 4, []Range{{0, 2 * Block}, {2 * Block, 2 * Block}, {4 * Block, 2 * Block}, {6 * Block, 2 * Block}}},
		{3*Block + 5, 2, []Range{{0, 2 * Block}, {2 * Block, Block + 5}}},
	} {
		got := Split(c.size, c.n)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("Split(%d, %d) = %v, want %v", c.size, c.n, got, c.want)
		}
		for _, r := range got[:max(len(got)-1, 0)] {
			if r.Off%Block != 0 || r.Len%Block != 0 {
				t.Errorf("Split(%d, %d): range %v is not whole blocks", c.size, c.n, r)
			}
		}
	}
}

// TestCopyRanges: the ranges, written at once, make the whole file, around
// the page cache; a range that comes short fails the copy.
func TestCopyRanges(t *testing.T) {
	dir := t.TempDir()
	for _, size := range []int{1, Block, 7*Block + 4321, 16 * Block} {
		want := randomBytes(size)
		ranges := Split(int64(size), 4)
		readers := make([]io.Reader, len(ranges))
		for i, r := range ranges {
			readers[i] = bytes.NewReader(want[r.Off : r.Off+r.Len])
		}
		p := filepath.Join(dir, "f")
		f, err := os.OpenFile(p, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		n, err := CopyRanges(f, ranges, readers)
		if err != nil || n != int64(size) {
			t.Fatalf("%d bytes: CopyRanges = %d, %v", size, n, err)
		}
		if pos, _ := f.Seek(0, io.SeekCurrent); pos != int64(size) {
			t.Fatalf("%d bytes: offset %d", size, pos)
		}
		f.Close()
		if size >= 7*Block {
			resident, total := residentPages(t, p)
			if tailPages := (size%Block + os.Getpagesize() - 1) / os.Getpagesize(); resident > tailPages {
				t.Errorf("%d bytes: %d of %d pages in the page cache, want at most %d", size, resident, total, tailPages)
			}
		}
		got, err := os.ReadFile(p)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: content differs (%v)", size, err)
		}
	}

	ranges := Split(8*Block, 4)
	readers := []io.Reader{endless{}, endless{}, bytes.NewReader(make([]byte, Block)), endless{}}
	f, err := os.Create(filepath.Join(dir, "short"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := CopyRanges(f, ranges, readers); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("a short range: %v, want io.ErrUnexpectedEOF", err)
	}
}
