package datasync

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// passActions runs one pass of mapping "i" and returns the actions it
// reported ("action path", sorted; the dry run's summary left out).
func (f *memFixture) passActions(po PassOptions) []string {
	f.t.Helper()
	var mu sync.Mutex
	var out []string
	po.Report = func(p Planned) {
		if p.Action == "summary" {
			return
		}
		mu.Lock()
		out = append(out, p.Action+" "+p.Path)
		mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	require.NoError(f.t, f.eng.Sync(ctx, po, "i"))
	slices.Sort(out)
	return out
}

// TestUnitIngressDryRunEqualsRun: a target holding "same" (the object's
// content) and "mine" (a user's file), a fresh journal, objects same, mine
// and new: the dry run plans what the real pass then does.
func TestUnitIngressDryRunEqualsRun(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.ingress("i", "in", "cfg"))
	f.write("in/same", []byte("same"))
	f.write("in/mine", []byte("a user's file"))
	for _, k := range []string{"same", "mine", "new"} {
		f.be.put("cfg/"+k, []byte(k))
	}
	want := []string{"adopt same", "conflict mine", "download new"}
	assert.Equal(t, want, f.passActions(PassOptions{DryRun: true}))
	assert.Zero(t, f.rows("i"), "a dry run writes no journal")
	assert.Equal(t, want, f.passActions(PassOptions{}))

	assert.Equal(t, int64(2), f.be.gets.Load(), "same adopted, not downloaded")
	assert.Equal(t, "mine", string(f.read("in/mine")))
	assert.Equal(t, "new", string(f.read("in/new")))
	copies := conflictCopies(t, filepath.Join(f.root, "in"))
	require.Len(t, copies, 1)
	assert.Equal(t, "a user's file", string(f.read("in/"+copies[0])))
	assert.Equal(t, int64(1), f.status("i").Conflicts)
	assert.Empty(t, f.passActions(PassOptions{DryRun: true}), "then in sync")
}

// TestUnitIngressDecisionsDryRunAndRun runs every ingress decision twice,
// on two copies of the same state: a dry run on one, a real pass on the
// other; both report the same actions, and the ones expected.
func TestUnitIngressDecisionsDryRunAndRun(t *testing.T) {
	downloaded := func(f *memFixture) {
		f.be.put("cfg/k", []byte("v1"))
		require.NoError(t, f.sync(PassOptions{}))
	}
	for _, tc := range []struct {
		name      string
		quota     int64
		reconcile bool
		setup     func(f *memFixture)
		want      []string
	}{
		{"new object", 0, false, func(f *memFixture) { f.be.put("cfg/k", []byte("v1")) }, []string{"download k"}},
		{"new object, identical file: adopt", 0, false, func(f *memFixture) {
			f.write("in/k", []byte("v1"))
			f.be.put("cfg/k", []byte("v1"))
		}, []string{"adopt k"}},
		{"new object, a user's file: conflict copy", 0, false, func(f *memFixture) {
			f.write("in/k", []byte("v0"))
			f.be.put("cfg/k", []byte("v1"))
		}, []string{"conflict k"}},
		{"unchanged", 0, true, downloaded, nil},
		{"object changed, file as downloaded", 0, false, func(f *memFixture) {
			downloaded(f)
			f.be.put("cfg/k", []byte("v2"))
		}, []string{"download k"}},
		{"object changed, file touched (same content)", 0, false, func(f *memFixture) {
			downloaded(f)
			later(t, f, "in/k")
			f.be.put("cfg/k", []byte("v2"))
		}, []string{"download k"}},
		{"object changed, file edited: conflict copy", 0, false, func(f *memFixture) {
			downloaded(f)
			f.write("in/k", []byte("e1"))
			later(t, f, "in/k")
			f.be.put("cfg/k", []byte("v2"))
		}, []string{"conflict k"}},
		{"object changed to what the file holds: adopt", 0, false, func(f *memFixture) {
			downloaded(f)
			f.write("in/k", []byte("v2"))
			later(t, f, "in/k")
			f.be.put("cfg/k", []byte("v2"))
		}, []string{"adopt k"}},
		{"file deleted locally, reconcile", 0, true, func(f *memFixture) {
			downloaded(f)
			require.NoError(t, os.Remove(filepath.Join(f.root, "in/k")))
		}, []string{"download k"}},
		{"object deleted: prune", 0, false, func(f *memFixture) {
			downloaded(f)
			f.be.remove("cfg/k")
		}, []string{"prune k"}},
		{"a parent directory is an object too: refuse", 0, false, func(f *memFixture) {
			f.be.put("cfg/k", []byte("v1"))
			f.be.put("cfg/k/x", []byte("v1"))
		}, []string{"download k", "refuse k/x"}},
		{"refused earlier", 0, false, func(f *memFixture) {
			f.be.put("cfg/k", []byte("v1"))
			f.be.put("cfg/k/x", []byte("v1"))
			require.NoError(t, f.sync(PassOptions{}))
		}, []string{"refused k/x"}},
		{"a symlinked parent: refuse", 0, false, func(f *memFixture) {
			require.NoError(t, os.MkdirAll(filepath.Join(f.root, "in"), 0o755))
			require.NoError(t, os.Symlink(t.TempDir(), filepath.Join(f.root, "in", "d")))
			f.be.put("cfg/d/k", []byte("v1"))
		}, []string{"refuse d/k"}},
		{"a parent that is a file: refuse", 0, false, func(f *memFixture) {
			f.write("in/d", []byte("a file"))
			f.be.put("cfg/d/k", []byte("v1"))
		}, []string{"refuse d/k"}},
		{"a directory where the file goes: refuse", 0, false, func(f *memFixture) {
			f.write("in/k/x", []byte("a file"))
			f.be.put("cfg/k", []byte("v1"))
		}, []string{"refuse k"}},
		{"refused for its path earlier", 0, false, func(f *memFixture) {
			f.write("in/d", []byte("a file"))
			f.be.put("cfg/d/k", []byte("v1"))
			require.NoError(t, f.sync(PassOptions{}))
		}, []string{"refused d/k"}},
		{"disk guard", 10, false, func(f *memFixture) {
			f.be.put("cfg/k", []byte("0123456789ab"))
		}, []string{"disk-guard k"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got [2][]string
			for i, dry := range []bool{true, false} {
				f := newMemFixture(t)
				m := f.ingress("i", "in", "cfg")
				m.MaxBytes = tc.quota
				f.configure(m)
				tc.setup(f)
				got[i] = f.passActions(PassOptions{DryRun: dry, Reconcile: tc.reconcile})
			}
			assert.Equal(t, tc.want, got[0], "dry run")
			assert.Equal(t, got[0], got[1], "real run as planned")
		})
	}
}

// TestUnitIngressFileChangedBeforeRename: a file that changes between the
// plan and the rename is not overwritten; the outcome says so (pending) and
// the next pass decides again.
func TestUnitIngressFileChangedBeforeRename(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.ingress("i", "in", "cfg"))
	f.be.put("cfg/k", []byte("v1"))
	require.NoError(t, f.sync(PassOptions{}))
	f.be.put("cfg/k", []byte("v2"))
	// The plan sees the file as downloaded; the device writes it while the
	// object is on its way.
	f.be.onGet = func() {
		f.write("in/k", []byte("device"))
		later(t, f, "in/k")
	}
	assert.Empty(t, f.passActions(PassOptions{}))
	assert.Equal(t, "device", string(f.read("in/k")), "not overwritten")
	assert.Equal(t, int64(1), f.status("i").Pending)
	assert.Empty(t, conflictCopies(t, filepath.Join(f.root, "in")))
	f.be.onGet = nil
	assert.Equal(t, []string{"conflict k"}, f.passActions(PassOptions{}), "decided again")
	assert.Equal(t, "v2", string(f.read("in/k")))
	copies := conflictCopies(t, filepath.Join(f.root, "in"))
	require.Len(t, copies, 1, fmt.Sprint(copies))
	assert.Equal(t, "device", string(f.read("in/"+copies[0])))
}

// later moves the file's mtime an hour ahead (a change a coarse clock
// could otherwise hide).
func later(t *testing.T, f *memFixture, rel string) {
	at := time.Now().Add(time.Hour)
	require.NoError(t, os.Chtimes(filepath.Join(f.root, rel), at, at))
}
