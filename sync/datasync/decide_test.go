package datasync

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/journal"
	"github.com/project-flotta/flotta-device-worker/sync/safefs"
	"github.com/project-flotta/flotta-device-worker/sync/stablefile"
)

// The decision tables: every action of both directions, from (local,
// journal row, remote) and what the pass looked at. Pure functions: no
// server, no disk.

func TestDecideEgress(t *testing.T) {
	file := &stablefile.Stat{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 7}
	row := &journal.Record{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 7, ETag: "e1"}
	touched := &stablefile.Stat{Size: 5, MtimeNs: 20, CtimeNs: 21, Inode: 7}
	obj := &Object{Key: "p/a", Size: 5, ETag: "e1"}
	replaced := &Object{Key: "p/a", Size: 5, ETag: "e2"}
	resized := &Object{Key: "p/a", Size: 9, ETag: "e1"}
	walked := scope{localWalked: true}
	listed := scope{localWalked: true, remoteListed: true}
	for _, tc := range []struct {
		name string
		it   item
		sc   scope
		want action
	}{
		{"nothing anywhere", item{}, listed, actSkip},
		{"object not from a file: egress never deletes", item{remote: obj}, listed, actSkip},
		{"new file", item{local: file}, walked, actUpload},
		{"new file, no object of its size", item{local: file, remote: resized}, listed, actUpload},
		{"new file, object of its size (lost journal)", item{local: file, remote: obj}, listed, actAdopt},
		{"unchanged", item{local: file, row: row}, walked, actSkip},
		{"unchanged, object as uploaded", item{local: file, row: row, remote: obj}, listed, actSkip},
		{"changed", item{local: touched, row: row}, walked, actUpload},
		{"changed, object still the old one", item{local: touched, row: row, remote: obj}, listed, actUpload},
		{"reconcile: object deleted behind our back", item{local: file, row: row}, listed, actUpload},
		{"reconcile: object replaced behind our back", item{local: file, row: row, remote: replaced}, listed, actUpload},
		{"reconcile: object resized behind our back", item{local: file, row: row, remote: resized}, listed, actUpload},
		{"file deleted: row pruned", item{row: row}, walked, actPrune},
		{"file deleted, object kept", item{row: row, remote: obj}, listed, actPrune},
		{"file not looked at (unreadable directory)", item{row: row}, scope{}, actSkip},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.it.name = "a"
			assert.Equal(t, tc.want, decideEgress(tc.it, tc.sc).act)
		})
	}
}

func TestDecideIngress(t *testing.T) {
	obj := &Object{Key: "p/a", Size: 5, ETag: "e1"}
	changed := &Object{Key: "p/a", Size: 5, ETag: "e2"}
	row := &journal.Record{Size: 5, ETag: "e1"}
	file := &stablefile.Stat{Size: 5}
	hostile := &Object{Key: "p/../x", Size: 5, ETag: "e1"}
	refusedRow := &journal.Record{Size: 5, ETag: "e1", Refused: true}
	downloaded := &journal.Record{Size: 5, ETag: "e1", MtimeNs: 10, CtimeNs: 11, Inode: 7}
	asDownloaded := &stablefile.Stat{Size: 5, MtimeNs: 10, CtimeNs: 11, Inode: 7}
	edited := &stablefile.Stat{Size: 5, MtimeNs: 20, CtimeNs: 21, Inode: 7}
	md5Obj := &Object{Key: "p/a", Size: 5, ETag: md5Hex([]byte("new!!"))}
	md5Row := &journal.Record{Size: 5, ETag: md5Hex([]byte("old!!")), MtimeNs: 10, CtimeNs: 11, Inode: 7}
	listed := scope{remoteListed: true}
	reconcile := scope{remoteListed: true, localWalked: true}
	event := scope{localWalked: true}
	for _, tc := range []struct {
		name string
		it   item
		sc   scope
		want action
	}{
		{"nothing anywhere", item{}, listed, actSkip},
		{"local file not from the bucket: ingress never deletes", item{local: file}, reconcile, actSkip},
		{"new object", item{remote: obj}, listed, actDownload},
		{"new object, local file there, not the object: the device's own, kept", item{remote: obj, local: file}, reconcile, actConflict},
		{"unchanged", item{remote: obj, row: row}, listed, actSkip},
		{"unchanged, file there", item{remote: obj, row: row, local: file}, reconcile, actSkip},
		{"object changed", item{remote: changed, row: row}, listed, actDownload},
		{"reconcile: file deleted locally", item{remote: obj, row: row}, reconcile, actDownload},
		{"event: file deleted locally, fetched as the row knows it", item{row: row}, event, actDownload},
		{"event: file there", item{row: row, local: file}, event, actSkip},
		{"object deleted: row pruned, file kept", item{row: row, local: file}, reconcile, actPrune},
		{"object deleted, no file", item{row: row}, listed, actPrune},
		{"hostile key", item{remote: hostile}, listed, actRefuse},
		{"hostile key, refused earlier", item{remote: hostile, row: refusedRow}, listed, actRefused},
		{"hostile key changed since refused", item{remote: &Object{Key: "p/../x", Size: 6, ETag: "e3"}, row: refusedRow}, listed, actRefuse},
		{"unsafe path refused earlier", item{remote: obj, row: refusedRow}, listed, actRefused},
		{"unsafe path, object changed since", item{remote: changed, row: refusedRow}, listed, actDownload},
		{"event: refused row stays refused", item{row: refusedRow}, event, actSkip},
		{"not listed, not walked", item{row: row}, scope{}, actSkip},

		// Conflicts: the row records the stat of the file as downloaded.
		{"object changed, file as downloaded", item{remote: changed, row: downloaded, local: asDownloaded}, listed, actDownload},
		{"object changed, file edited on the device: conflict copy", item{remote: changed, row: downloaded, local: edited}, listed, actConflict},
		{"object changed, file edited, seen by a reconcile", item{remote: changed, row: downloaded, local: edited}, reconcile, actConflict},
		{"object unchanged, file edited: the edit stays", item{remote: obj, row: downloaded, local: edited}, listed, actSkip},
		{"object unchanged, file edited, reconcile: the edit stays", item{remote: obj, row: downloaded, local: edited}, reconcile, actSkip},
		{"object changed, file deleted: no conflict", item{remote: changed, row: downloaded}, reconcile, actDownload},
		{"object changed, row without a stat, file there: maybe", item{remote: changed, row: row, local: file}, listed, actConflict},
		{"object changed, refused row, file there: not ours, kept", item{remote: changed, row: refusedRow, local: file}, listed, actConflict},

		// What the planner read of the local file (needsLocalCheck).
		{"new object, local file identical: adopted", item{remote: md5Obj, local: file, localSum: md5Obj.ETag}, listed, actAdopt},
		{"object changed, file identical to it: adopted", item{remote: md5Obj, row: downloaded, local: edited, localSum: md5Obj.ETag}, listed, actAdopt},
		{"new object, file carries ingress's mark (crash before the journal)", item{remote: md5Obj, local: file, localMarked: true}, listed, actDownload},
		{"new object, file has the object's size and mtime (crash before the journal)", item{remote: &Object{Key: "p/a", Size: 5, ETag: "e1", LastModified: time.Unix(0, 20)}, local: edited}, listed, actDownload},
		{"object changed, file touched, content as downloaded", item{remote: md5Obj, row: md5Row, local: edited, localSum: md5Row.ETag}, listed, actDownload},
		{"object changed, file edited, content neither", item{remote: md5Obj, row: md5Row, local: edited, localSum: md5Hex([]byte("other"))}, listed, actConflict},
		{"reconcile: refused earlier, file there: kept", item{remote: obj, row: refusedRow, local: file}, reconcile, actConflict},

		// Keys that cannot be files.
		{"key ending in / with content", item{remote: &Object{Key: "p/d/", Size: 3, ETag: "e1"}}, listed, actRefuse},
		{"key under another object (a and a/b)", item{remote: obj, clash: "x"}, listed, actRefuse},
		{"key under another object, refused earlier", item{remote: obj, row: refusedRow, clash: "x"}, listed, actRefused},
		{"key under another object, changed since", item{remote: changed, row: refusedRow, clash: "x"}, listed, actRefuse},
		{"reconcile: refused earlier, tried again", item{remote: obj, row: refusedRow}, reconcile, actDownload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.it.remote != nil {
				tc.it.name = tc.it.remote.Key[2:]
			} else {
				tc.it.name = "a"
			}
			assert.Equal(t, tc.want, decideIngress(tc.it, tc.sc, "p").act)
		})
	}
}

func TestMarchKeyOrder(t *testing.T) {
	// Local files, journal rows and objects meet by name even where a
	// directory's files sort after a sibling ("a-b" < "a/x" in key order).
	local := func(yield func(localFile) bool) {
		for _, n := range []string{"a-b", "a/x", "c"} {
			if !yield(localFile{name: n}) {
				return
			}
		}
	}
	remote := func(yield func(Object, error) bool) {
		for _, k := range []string{"p/a-b", "p/a/", "p/a/x", "p/b", "p/a0"} { // "p/a0" out of order: late
			if !yield(Object{Key: k}, nil) {
				return
			}
		}
	}
	var got []string
	rows := &rowCursor{done: true}
	err := march(local, rows, remote, "p/", func(it item, late bool) bool {
		s := it.name + ":"
		if it.local != nil {
			s += "L"
		}
		if it.remote != nil {
			s += "R"
		}
		if late {
			s += "!"
		}
		got = append(got, s)
		return true
	})
	assert.NoError(t, err)
	assert.Equal(t, []string{"a-b:LR", "a/x:LR", "b:R", "a0:R!", "c:L"}, got)
}

func TestIngressPlannerFindsKeysUnderObjects(t *testing.T) {
	// In key order, the names between "a" and "a/..." all start with "a":
	// the planner only remembers prefixes of the current name.
	pl := &ingressPlanner{p: &pass{m: Mapping{Prefix: "p"}, lp: "p/"}}
	got := map[string]string{}
	for _, n := range []string{"a", "a b", "a-b", "a.txt", "a/b", "a/b/c", "a0", "b/", "b/c", "c/d", "c/d/e", "c/de", "e", "f/g"} {
		if clash := pl.parentObject(n); clash != "" {
			got[n] = clash
		}
		assert.LessOrEqual(t, len(pl.open), len(n)+1)
	}
	assert.Equal(t, map[string]string{"a/b": "a", "a/b/c": "a", "c/d/e": "c/d"}, got)
}

// TestIngressPlannerRestores: with PassOptions.Restore, a pass that lists
// the bucket but does not walk the directory looks up the file of each
// object the journal has unchanged (an lstat, no request) and downloads it
// again when it was deleted locally; without Restore, or for anything else,
// the decision is the plain table's.
func TestIngressPlannerRestores(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "there"), []byte("hello"), 0o644))
	require.NoError(t, os.MkdirAll(filepath.Join(root, "locked", "in"), 0o755))
	dir, err := safefs.Open(root, root, false)
	require.NoError(t, err)
	defer dir.Close()
	obj := func(name, etag string) *Object { return &Object{Key: "p/" + name, Size: 5, ETag: etag} }
	row := &journal.Record{Size: 5, ETag: "e1"}
	refused := &journal.Record{Size: 5, ETag: "e1", Refused: true}
	listed := scope{remoteListed: true}
	for _, tc := range []struct {
		name    string
		it      item
		sc      scope
		restore bool
		want    action
	}{
		{"deleted locally: restored", item{name: "gone", remote: obj("gone", "e1"), row: row}, listed, true, actDownload},
		{"deleted locally, no Restore: not looked at", item{name: "gone", remote: obj("gone", "e1"), row: row}, listed, false, actSkip},
		{"file there: unchanged", item{name: "there", remote: obj("there", "e1"), row: row}, listed, true, actSkip},
		{"a directory now: left alone", item{name: "locked", remote: obj("locked", "e1"), row: row}, listed, true, actSkip},
		{"parent deleted: restored", item{name: "gone/deeper", remote: obj("gone/deeper", "e1"), row: row}, listed, true, actDownload},
		{"object changed: downloaded anyway", item{name: "gone", remote: obj("gone", "e2"), row: row}, listed, true, actDownload},
		{"refused earlier: stays refused", item{name: "gone", remote: obj("gone", "e1"), row: refused}, listed, true, actRefused},
		{"new object: downloaded", item{name: "gone", remote: obj("gone", "e1")}, listed, true, actDownload},
		{"object deleted: row pruned", item{name: "gone", row: row}, listed, true, actPrune},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pl := &ingressPlanner{p: &pass{m: Mapping{Prefix: "p", Direction: Ingress}, lp: "p/", dir: dir,
				po: PassOptions{Restore: tc.restore}}}
			it := tc.it
			assert.Equal(t, tc.want, pl.decide(&it, tc.sc).act)
		})
	}
	// A file that cannot be looked at is not taken for deleted.
	if os.Geteuid() != 0 {
		require.NoError(t, os.Chmod(filepath.Join(root, "locked"), 0))
		defer os.Chmod(filepath.Join(root, "locked"), 0o755)
		pl := &ingressPlanner{p: &pass{m: Mapping{Prefix: "p", Direction: Ingress}, lp: "p/", dir: dir, po: PassOptions{Restore: true}}}
		it := item{name: "locked/in/f", remote: obj("locked/in/f", "e1"), row: row}
		assert.Equal(t, actSkip, pl.decide(&it, listed).act)
	}
}
