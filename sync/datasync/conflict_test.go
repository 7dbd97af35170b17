package datasync

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/keys"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// conflictCopies lists the conflict copies under dir (relative paths).
func conflictCopies(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	require.NoError(t, filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && keys.IsConflictCopy(d.Name()) {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, filepath.ToSlash(rel))
		}
		return err
	}))
	return out
}

func TestUnitIngressConflictCopy(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.ingress("i", "in", "cfg"), f.egress("e", "in", "back"))
	in := filepath.Join(f.root, "in")
	f.be.put("cfg/d/report.csv", []byte("v1"))
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, "v1", string(f.read("in/d/report.csv")))

	// Edited on the device, object unchanged: the edit stays, no conflict.
	f.write("in/d/report.csv", []byte("device edit"))
	require.NoError(t, f.sync(PassOptions{}))
	require.NoError(t, f.sync(PassOptions{Reconcile: true}))
	assert.Equal(t, "device edit", string(f.read("in/d/report.csv")))
	assert.Empty(t, conflictCopies(t, in))
	assert.Zero(t, f.status("i").Conflicts)

	// Then the object changes: a dry run says so, and changes nothing.
	f.be.put("cfg/d/report.csv", []byte("v2"))
	var mu sync.Mutex
	var planned []Planned
	require.NoError(t, f.eng.Sync(t.Context(), PassOptions{DryRun: true, Report: func(p Planned) {
		mu.Lock()
		planned = append(planned, p)
		mu.Unlock()
	}}, "i"))
	require.Len(t, planned, 2)
	assert.Equal(t, "conflict", planned[0].Action, "%+v", planned[0])
	assert.Equal(t, "device edit", string(f.read("in/d/report.csv")))

	// The pass keeps the device's version beside the new one.
	before := time.Now().UTC().Truncate(time.Second)
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, "v2", string(f.read("in/d/report.csv")))
	copies := conflictCopies(t, in)
	require.Len(t, copies, 1)
	assert.Regexp(t, `^d/report\.flotta-conflict-\d{8}T\d{6}Z\.csv$`, copies[0])
	stamp := strings.TrimSuffix(strings.TrimPrefix(copies[0], "d/report.flotta-conflict-"), ".csv")
	at, err := time.Parse("20060102T150405Z", stamp)
	require.NoError(t, err)
	assert.False(t, at.Before(before), "the copy's time is the UTC time it was made")
	assert.Equal(t, "device edit", string(f.read("in/"+copies[0])))
	assert.Equal(t, int64(1), f.status("i").Conflicts)

	// Nothing more to keep: the next passes make no copy.
	f.be.put("cfg/d/report.csv", []byte("v3"))
	require.NoError(t, f.sync(PassOptions{}))
	require.NoError(t, f.sync(PassOptions{Reconcile: true}))
	assert.Equal(t, "v3", string(f.read("in/d/report.csv")))
	assert.Len(t, conflictCopies(t, in), 1)
	assert.Equal(t, int64(1), f.status("i").Conflicts)

	// Touched, not changed (same content, new mtime): no copy either.
	// (In the past: egress of the same directory waits for a file whose
	// mtime is in the future to settle.)
	earlier := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(filepath.Join(in, "d/report.csv"), earlier, earlier))
	f.be.put("cfg/d/report.csv", []byte("v4"))
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, "v4", string(f.read("in/d/report.csv")))
	assert.Len(t, conflictCopies(t, in), 1)

	// A second conflict in the same second gets its own name.
	f.write("in/d/report.csv", []byte("edit 2"))
	f.be.put("cfg/d/report.csv", []byte("v5"))
	require.NoError(t, f.sync(PassOptions{}))
	f.write("in/d/report.csv", []byte("edit 3"))
	f.be.put("cfg/d/report.csv", []byte("v6"))
	require.NoError(t, f.sync(PassOptions{}))
	copies = conflictCopies(t, in)
	require.Len(t, copies, 3)
	var kept []string
	for _, c := range copies {
		kept = append(kept, string(f.read("in/"+c)))
	}
	assert.ElementsMatch(t, []string{"device edit", "edit 2", "edit 3"}, kept)
	assert.Equal(t, int64(3), f.status("i").Conflicts)

	// Egress of the same directory never uploads a conflict copy.
	for _, k := range f.be.keys() {
		assert.False(t, keys.IsConflictCopy(k), "uploaded %s", k)
	}
	assert.Contains(t, f.be.keys(), "back/d/report.csv")
	require.NoError(t, f.eng.Changed(t.Context(), "e", copies))
	for _, k := range f.be.keys() {
		assert.False(t, keys.IsConflictCopy(k), "uploaded %s on a change event", k)
	}
}

func TestUnitIngressNoRowLocalFileIsKept(t *testing.T) {
	// A file the journal knows nothing of (the workload wrote it, or the
	// journal was lost) is the device's: adopted when identical, else kept.
	f := newMemFixture(t)
	f.configure(f.ingress("i", "in", "cfg"))
	f.write("in/same", []byte("same"))
	f.write("in/mine", []byte("the workload's"))
	f.be.put("cfg/same", []byte("same"))
	f.be.put("cfg/mine", []byte("the bucket's"))
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, "the bucket's", string(f.read("in/mine")))
	copies := conflictCopies(t, filepath.Join(f.root, "in"))
	require.Len(t, copies, 1)
	assert.Equal(t, "the workload's", string(f.read("in/"+copies[0])))
	assert.Equal(t, int64(1), f.status("i").Conflicts)
}

func TestUnitIngressKeysThatCannotBeFiles(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.ingress("i", "in", "cfg"))
	f.be.put("cfg/a", []byte("a file"))
	f.be.put("cfg/a/b", []byte("under a file"))
	f.be.put("cfg/a/b/c", []byte("deeper"))
	f.be.put("cfg/a-b", []byte("a sibling"))
	f.be.put("cfg/dir/", nil)                // a directory marker: ignored
	f.be.put("cfg/full/", []byte("content")) // a "directory" with content
	f.be.put("cfg/x/"+strings.Repeat("n", 256), []byte("name too long"))
	f.be.put("cfg/ok/file", []byte("ok"))
	require.NoError(t, f.sync(PassOptions{}), "refusals are reported, not failures")

	assert.Equal(t, "a file", string(f.read("in/a")))
	assert.Equal(t, "a sibling", string(f.read("in/a-b")))
	assert.Equal(t, "ok", string(f.read("in/ok/file")))
	assert.NoDirExists(t, filepath.Join(f.root, "in/dir"), "markers make no directory")
	assert.NoFileExists(t, filepath.Join(f.root, "in/full"))
	st := f.status("i")
	assert.Equal(t, int64(4), st.Refused, "a/b, a/b/c, full/ and the long name")
	assert.Equal(t, int64(3), st.FilesLastPass)
	assert.Contains(t, st.LastError, "refused object key")

	// Remembered: the next pass fetches nothing and reports the same.
	gets := f.be.gets.Load()
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, gets, f.be.gets.Load())
	assert.Equal(t, int64(4), f.status("i").Refused)
	assert.Equal(t, 7, f.rows("i"), "three files and four refusals; no row for the marker")
}

func TestUnitMtimeMetadata(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.egress("e", "out", "dev"), f.ingress("i", "in", "dev"))
	f.write("out/a", []byte("alpha"))
	mt := time.Date(2024, 12, 2, 19, 28, 7, 123456789, time.UTC)
	require.NoError(t, os.Chtimes(filepath.Join(f.root, "out/a"), mt, mt))
	require.NoError(t, f.eng.SyncNow(t.Context(), "e"))
	info, err := f.be.Stat(t.Context(), bucket, "dev/a")
	require.NoError(t, err)
	assert.Equal(t, "1733167687.123456789", info.Meta["Mtime"], "rclone's format")

	require.NoError(t, f.eng.SyncNow(t.Context(), "i"))
	fi, err := os.Stat(filepath.Join(f.root, "in/a"))
	require.NoError(t, err)
	assert.True(t, fi.ModTime().Equal(mt), "mtime %v, want %v", fi.ModTime(), mt)

	// No metadata: LastModified.
	f.be.put("dev/b", []byte("bravo"))
	require.NoError(t, f.eng.SyncNow(t.Context(), "i"))
	fi, err = os.Stat(filepath.Join(f.root, "in/b"))
	require.NoError(t, err)
	o, _ := f.be.Stat(t.Context(), bucket, "dev/b")
	assert.True(t, fi.ModTime().Equal(o.LastModified))
}

func TestMtimeFormat(t *testing.T) {
	for in, want := range map[string]time.Time{
		"1733167687.123456789":  time.Unix(1733167687, 123456789),
		"1733167687":            time.Unix(1733167687, 0),
		"1733167687.5":          time.Unix(1733167687, 5e8),
		"1733167687.1234567891": time.Unix(1733167687, 123456789),
		" 1733167687.000000001": time.Unix(1733167687, 1),
	} {
		got, ok := parseMtime(in)
		assert.True(t, ok, in)
		assert.True(t, got.Equal(want), "%q: %v", in, got)
	}
	for _, bad := range []string{"", "x", "-1.5", "+1", "1.x", "1e9", "99999999999999"} {
		_, ok := parseMtime(bad)
		assert.False(t, ok, bad)
	}
	s, ok := formatMtime(time.Unix(1733167687, 120))
	assert.True(t, ok)
	assert.Equal(t, "1733167687.000000120", s)
	_, ok = formatMtime(time.Unix(-5, 0))
	assert.False(t, ok)
}

func TestLocalEdit(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "f"), []byte("v1"), 0o644))
	dir, err := safefs.Open(root, root, false)
	require.NoError(t, err)
	defer dir.Close()
	p := &pass{dir: dir}
	fi, err := os.Stat(filepath.Join(root, "f"))
	require.NoError(t, err)
	st := stablefile.StatOf(fi)
	v1 := md5Hex([]byte("v1"))
	newObj := Object{Size: 2, ETag: md5Hex([]byte("v2"))}
	later := time.Unix(0, st.MtimeNs+1e9)
	withStat := &journal.Record{Size: 2, ETag: v1, MtimeNs: st.MtimeNs, CtimeNs: st.CtimeNs, Inode: st.Inode}
	touched := &journal.Record{Size: 2, ETag: v1, MtimeNs: st.MtimeNs - 1, Inode: st.Inode}
	otherContent := &journal.Record{Size: 2, ETag: md5Hex([]byte("v0")), MtimeNs: st.MtimeNs - 1, Inode: st.Inode}
	multipart := &journal.Record{Size: 2, ETag: "abc-2", MtimeNs: st.MtimeNs - 1, Inode: st.Inode}
	for _, tc := range []struct {
		name string
		row  *journal.Record
		obj  Object
		mt   time.Time
		want bool
	}{
		{"as downloaded (same stat)", withStat, newObj, later, false},
		{"touched: other stat, same content", touched, newObj, later, false},
		{"edited: other stat, other content", otherContent, newObj, later, true},
		{"other stat, content unknown (multipart ETag): kept", multipart, newObj, later, true},
		{"no row: the device's own file", nil, newObj, later, true},
		{"refused row: not ours either", &journal.Record{Refused: true}, newObj, later, true},
		{"already the new version (crash before the journal)", nil, newObj, time.Unix(0, st.MtimeNs), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, localEditOf(p, tc.row, &st, tc.obj, tc.mt))
		})
	}

	// A version ingress wrote (marked) and nobody changed since is no edit,
	// whatever the row: a crash between the rename and the journal.
	fh, err := os.OpenFile(filepath.Join(root, "f"), os.O_RDWR, 0)
	require.NoError(t, err)
	markVersion(fh, Object{ETag: v1, Size: 2}, time.Unix(0, st.MtimeNs))
	require.NoError(t, fh.Close())
	fi, err = os.Stat(filepath.Join(root, "f"))
	require.NoError(t, err)
	st = stablefile.StatOf(fi)
	assert.False(t, localEditOf(p, nil, &st, newObj, later), "marked, unchanged")
	assert.False(t, localEditOf(p, otherContent, &st, newObj, later), "marked, unchanged, row of an older version")
	require.NoError(t, os.WriteFile(filepath.Join(root, "f"), []byte("v9"), 0o644)) // edited in place: the mark stays, the mtime moves
	fi, err = os.Stat(filepath.Join(root, "f"))
	require.NoError(t, err)
	st = stablefile.StatOf(fi)
	assert.True(t, localEditOf(p, nil, &st, newObj, later), "marked, then edited")
}

// localEditOf is what the planner and decideLocal conclude of the file "f"
// (stat st) before obj (whose mtime is mt) is written over it.
func localEditOf(p *pass, row *journal.Record, st *stablefile.Stat, obj Object, mt time.Time) bool {
	obj.LastModified = mt
	it := item{name: "f", local: st, row: row, remote: &obj}
	p.checkLocalFile(&it)
	return localEdited(it)
}
