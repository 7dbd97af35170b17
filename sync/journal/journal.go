// Package journal remembers, per mapping and per file, what the last pass
// moved. It is the only memory the sync engine keeps between passes, stored in
// a bbolt file so that a restart does not move everything again.
package journal

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// Record is what is known about one file or object.
//
// Egress fills the local fields (Size, MtimeNs, CtimeNs, Inode) with the stat
// of the file that was uploaded, and ETag/SHA256 with what the server holds.
// Ingress fills ETag and Size from the object that was downloaded.
type Record struct {
	Size    int64
	MtimeNs int64
	CtimeNs int64
	Inode   uint64
	ETag    string
	SHA256  []byte // 32 bytes, or nil
	// Refused marks an object that was not written because of its key; it is
	// not retried until the object changes.
	Refused bool
	// PartSize and PartMD5 (egress, files uploaded part by part: growing
	// files) are the part size and the MD5 of each part of the object: the
	// next upload copies the parts the local file still starts with
	// server-side instead of sending them again. Empty for other rows.
	PartSize int64
	PartMD5  [][16]byte
	// Confirmed (egress) says the server's ETag was checked against what
	// was read from the file (its MD5, or the multipart ETag of its parts):
	// the object holds this version of the file. Only a confirmed row lets
	// retention remove the file, and it is committed before the removal, so
	// that a crash in between leaves a row that the next pass acts on.
	Confirmed bool
	// Unconfirmable (egress) says the server's ETag was checked and cannot
	// prove the content (not an MD5: server-side encryption, another part
	// size): retention keeps the file, and it is not checked again until it
	// changes.
	Unconfirmable bool
}

const recordVersion = 1

func (r Record) marshal() []byte {
	buf := make([]byte, 0, 1+4*binary.MaxVarintLen64+2+len(r.ETag)+1+len(r.SHA256)+1)
	buf = append(buf, recordVersion)
	buf = binary.AppendVarint(buf, r.Size)
	buf = binary.AppendVarint(buf, r.MtimeNs)
	buf = binary.AppendVarint(buf, r.CtimeNs)
	buf = binary.AppendUvarint(buf, r.Inode)
	buf = binary.AppendUvarint(buf, uint64(len(r.ETag)))
	buf = append(buf, r.ETag...)
	buf = binary.AppendUvarint(buf, uint64(len(r.SHA256)))
	buf = append(buf, r.SHA256...)
	flags := byte(0)
	if r.Refused {
		flags |= 1
	}
	if r.Confirmed {
		flags |= 2
	}
	if r.Unconfirmable {
		flags |= 4
	}
	buf = append(buf, flags)
	if r.PartSize > 0 && len(r.PartMD5) > 0 {
		// Optional tail: rows written before it existed simply end at flags.
		buf = binary.AppendVarint(buf, r.PartSize)
		buf = binary.AppendUvarint(buf, uint64(len(r.PartMD5)))
		for _, h := range r.PartMD5 {
			buf = append(buf, h[:]...)
		}
	}
	return buf
}

var errCorrupt = errors.New("corrupt journal record")

func unmarshal(b []byte) (Record, error) {
	var r Record
	if len(b) < 1 || b[0] != recordVersion {
		return r, errCorrupt
	}
	rd := bytes.NewReader(b[1:])
	var err error
	read := func(dst *int64) {
		if err == nil {
			*dst, err = binary.ReadVarint(rd)
		}
	}
	read(&r.Size)
	read(&r.MtimeNs)
	read(&r.CtimeNs)
	if err == nil {
		r.Inode, err = binary.ReadUvarint(rd)
	}
	readBytes := func() []byte {
		if err != nil {
			return nil
		}
		var n uint64
		if n, err = binary.ReadUvarint(rd); err != nil || n > uint64(rd.Len()) {
			err = errCorrupt
			return nil
		}
		out := make([]byte, n)
		_, err = rd.Read(out)
		return out
	}
	r.ETag = string(readBytes())
	if sum := readBytes(); len(sum) > 0 {
		r.SHA256 = sum
	}
	if err == nil {
		var flags byte
		flags, err = rd.ReadByte()
		r.Refused = flags&1 != 0
		r.Confirmed = flags&2 != 0
		r.Unconfirmable = flags&4 != 0
	}
	if err == nil && rd.Len() > 0 {
		var ps int64
		var n uint64
		if ps, err = binary.ReadVarint(rd); err == nil {
			n, err = binary.ReadUvarint(rd)
		}
		if err == nil && (ps <= 0 || n == 0 || n > uint64(rd.Len())/16) {
			err = errCorrupt
		}
		if err == nil {
			r.PartSize = ps
			r.PartMD5 = make([][16]byte, n)
			for i := range r.PartMD5 {
				_, err = rd.Read(r.PartMD5[i][:])
			}
		}
	}
	if err != nil {
		return Record{}, errCorrupt
	}
	return r, nil
}

// DB is an open journal file.
type DB struct {
	db      *bolt.DB
	path    string
	lookups atomic.Int64 // Lookup calls, to drop mapped pages now and then
	// SetAside names where an unreadable journal was moved when Open had to
	// start a new one; empty otherwise.
	SetAside string
}

// bbolt reads through a shared mmap of the whole file, and every page a pass
// touches stays mapped into the process: an idle pass over a million files
// would hold the whole journal (over 100 MiB) in RSS although it needs one
// batch at a time. Every dropEvery lookups, when the file is bigger than
// dropAbove, the mapping's pages are dropped from the page table
// (MADV_DONTNEED: they stay in the page cache and fault back in on access; on
// a read-only shared file mapping nothing is lost).
const (
	dropEvery = 32       // lookups of up to 256 keys
	dropAbove = 16 << 20 // bytes of journal
)

// dropPages releases the mapped pages; tx pins the mapping (bbolt does not
// remap while a read transaction is open).
func (d *DB) dropPages(tx *bolt.Tx) {
	size := tx.Size()
	if size < dropAbove {
		return
	}
	info := d.db.Info()
	if info == nil || info.Data == 0 {
		return
	}
	_, _, _ = unix.Syscall(unix.SYS_MADVISE, info.Data, uintptr(size), unix.MADV_DONTNEED)
}

var (
	filesKey  = []byte("files")
	metaKey   = []byte("meta")
	fpKey     = []byte("fingerprint")
	listedKey = []byte("listed")
	remoteKey = []byte("remote") // adoption candidates, while a first egress pass runs
)

// Open opens (creating) the journal at path.
func Open(path string) (*DB, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("create journal directory: %w", err)
	}
	db, err := openBolt(path)
	if err != nil && !errors.Is(err, bolt.ErrTimeout) {
		// A journal that cannot be read (a torn write by a dying disk, a
		// file from elsewhere) is set aside rather than failing every start:
		// the worker must not crash-loop, and a lost journal only costs one
		// listing (egress adopts what the bucket already holds).
		if _, statErr := os.Stat(path); statErr == nil {
			aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().Unix())
			if renameErr := os.Rename(path, aside); renameErr == nil {
				var retryErr error
				if db, retryErr = openBolt(path); retryErr == nil {
					return &DB{db: db, path: path, SetAside: aside}, nil
				}
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	return &DB{db: db, path: path}, nil
}

// openBolt opens the file, turning a panic of bbolt on a mangled file into
// an error.
func openBolt(path string) (db *bolt.DB, err error) {
	defer func() {
		if r := recover(); r != nil {
			db, err = nil, fmt.Errorf("unreadable journal: %v", r)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, FreelistType: bolt.FreelistMapType})
}

// Path is the journal file.
func (d *DB) Path() string { return d.path }

// Close closes the file.
func (d *DB) Close() error { return d.db.Close() }

// Prepare makes sure the mapping's journal belongs to fingerprint (what the
// mapping syncs: direction, server, bucket, prefix, directory). A journal
// written for anything else is dropped, since it would say wrong things.
// It reports whether the remote side was ever listed for adoption.
func (d *DB) Prepare(mapping, fingerprint string) (listed bool, err error) {
	err = d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(mapping))
		if b != nil {
			if m := b.Bucket(metaKey); m != nil && bytes.Equal(m.Get(fpKey), []byte(fingerprint)) {
				listed = m.Get(listedKey) != nil
				return nil
			}
			if err := tx.DeleteBucket([]byte(mapping)); err != nil {
				return err
			}
		}
		b, err := tx.CreateBucket([]byte(mapping))
		if err != nil {
			return err
		}
		m, err := b.CreateBucket(metaKey)
		if err != nil {
			return err
		}
		if _, err := b.CreateBucket(filesKey); err != nil {
			return err
		}
		return m.Put(fpKey, []byte(fingerprint))
	})
	if err != nil {
		return false, fmt.Errorf("prepare journal of %s: %w", mapping, err)
	}
	return listed, nil
}

// SetListed records that the remote side was listed and adoption is done,
// and drops the adoption candidates.
func (d *DB) SetListed(mapping string) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(mapping))
		if b == nil {
			return fmt.Errorf("journal of %s missing", mapping)
		}
		if b.Bucket(remoteKey) != nil {
			if err := b.DeleteBucket(remoteKey); err != nil {
				return err
			}
		}
		return b.Bucket(metaKey).Put(listedKey, []byte{1})
	})
}

// Drop forgets a mapping.
func (d *DB) Drop(mapping string) error {
	return d.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket([]byte(mapping)) == nil {
			return nil
		}
		return tx.DeleteBucket([]byte(mapping))
	})
}

// Mappings lists the mapping ids the journal knows.
func (d *DB) Mappings() ([]string, error) {
	var ids []string
	err := d.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
			ids = append(ids, string(name))
			return nil
		})
	})
	return ids, err
}

// Table names a set of records inside a mapping's journal.
type Table int

const (
	// Files holds what was synced, by relative path (egress) or key (ingress).
	Files Table = iota
	// Remote holds objects found on the server during adoption, by relative path.
	Remote
)

func (t Table) key() []byte {
	if t == Remote {
		return remoteKey
	}
	return filesKey
}

// Lookup fetches the records of keys in one short read transaction; found[i]
// tells whether recs[i] is known. Transactions stay short on purpose: a long
// reader would stall writers that need to grow the file.
func (d *DB) Lookup(mapping string, t Table, keys []string, recs []Record, found []bool) error {
	return d.db.View(func(tx *bolt.Tx) error {
		var b *bolt.Bucket
		if mb := tx.Bucket([]byte(mapping)); mb != nil {
			b = mb.Bucket(t.key())
		}
		for i, k := range keys {
			found[i] = false
			if b == nil {
				continue
			}
			v := b.Get([]byte(k))
			if v == nil {
				continue
			}
			r, err := unmarshal(v)
			if err != nil {
				continue // a corrupt record is as good as none: the file moves again
			}
			recs[i], found[i] = r, true
		}
		if d.lookups.Add(1)%dropEvery == 0 {
			d.dropPages(tx)
		}
		return nil
	})
}

// Entry is one record to store.
type Entry struct {
	Key    string
	Record Record
	Delete bool
}

// Put stores entries in one write transaction.
func (d *DB) Put(mapping string, t Table, entries []Entry) error {
	if len(entries) == 0 {
		return nil
	}
	return d.db.Update(func(tx *bolt.Tx) error {
		mb := tx.Bucket([]byte(mapping))
		if mb == nil {
			return fmt.Errorf("journal of %s missing", mapping)
		}
		b, err := mb.CreateBucketIfNotExists(t.key())
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Delete {
				err = b.Delete([]byte(e.Key))
			} else {
				err = b.Put([]byte(e.Key), e.Record.marshal())
			}
			if err != nil {
				return fmt.Errorf("store %s: %w", e.Key, err)
			}
		}
		return nil
	})
}

// Peek is Prepare without writing: it reports whether the mapping's journal
// belongs to fingerprint (when not, its rows say nothing of this mapping) and
// whether the remote side was listed. For dry runs.
func (d *DB) Peek(mapping, fingerprint string) (matches, listed bool, err error) {
	err = d.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(mapping))
		if b == nil {
			return nil
		}
		if m := b.Bucket(metaKey); m != nil && bytes.Equal(m.Get(fpKey), []byte(fingerprint)) {
			matches, listed = true, m.Get(listedKey) != nil
		}
		return nil
	})
	return matches, listed, err
}

// Scan appends to out up to n rows of table t whose keys start with prefix
// and sort after after ("" for the first), in key order, in one short read
// transaction, and returns out. Fewer than n rows means the end was reached.
// Corrupt records are returned as rows with a zero Record (their file moves
// again).
func (d *DB) Scan(mapping string, t Table, prefix, after string, n int, out []Entry) ([]Entry, error) {
	err := d.db.View(func(tx *bolt.Tx) error {
		mb := tx.Bucket([]byte(mapping))
		if mb == nil {
			return nil
		}
		b := mb.Bucket(t.key())
		if b == nil {
			return nil
		}
		c := b.Cursor()
		start := []byte(prefix)
		if after != "" && after > prefix {
			start = []byte(after)
		}
		k, v := c.Seek(start)
		if after != "" && k != nil && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil && n > 0; k, v = c.Next() {
			if !bytes.HasPrefix(k, []byte(prefix)) {
				break
			}
			r, _ := unmarshal(v)
			out = append(out, Entry{Key: string(k), Record: r})
			n--
		}
		if d.lookups.Add(1)%dropEvery == 0 {
			d.dropPages(tx)
		}
		return nil
	})
	return out, err
}

// Rows counts the rows of a mapping's table (for tests and reports).
func (d *DB) Rows(mapping string, t Table) (int, error) {
	n := 0
	err := d.db.View(func(tx *bolt.Tx) error {
		if mb := tx.Bucket([]byte(mapping)); mb != nil {
			if b := mb.Bucket(t.key()); b != nil {
				n = b.Stats().KeyN
			}
		}
		return nil
	})
	return n, err
}

// Size is the journal file's size in bytes.
func (d *DB) Size() (int64, error) {
	var n int64
	err := d.db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n, err
}
