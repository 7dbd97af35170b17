package datasync

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Engine behaviour on the in-memory bucket: these run under -short.

func TestUnitEgressLifecycle(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.egress("e", "out", "dev"))
	f.write("out/a.txt", []byte("alpha"))
	f.write("out/sub/b.txt", []byte("bravo"))
	f.write("out/sub-c.txt", []byte("charlie"))

	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, []string{"dev/a.txt", "dev/sub-c.txt", "dev/sub/b.txt"}, f.be.keys())
	assert.Equal(t, int64(3), f.status("e").FilesLastPass)
	assert.Equal(t, 3, f.rows("e"))

	// Idle: no request at all.
	before := f.be.requests()
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, before, f.be.requests(), "idle egress pass")

	// Changed file: uploaded again; deleted file: its row goes, its object stays.
	time.Sleep(10 * time.Millisecond)
	f.write("out/a.txt", []byte("alpha 2"))
	require.NoError(t, os.Remove(filepath.Join(f.root, "out/sub/b.txt")))
	require.NoError(t, f.sync(PassOptions{}))
	got, _ := f.be.data("dev/a.txt")
	assert.Equal(t, "alpha 2", string(got))
	assert.Equal(t, 2, f.rows("e"))
	assert.Contains(t, f.be.keys(), "dev/sub/b.txt", "egress never deletes")

	// Out-of-band loss: a normal pass does not see it, a reconcile repairs it.
	f.be.remove("dev/a.txt")
	f.be.put("dev/sub-c.txt", []byte("overwritten"))
	require.NoError(t, f.sync(PassOptions{}))
	_, ok := f.be.data("dev/a.txt")
	assert.False(t, ok)
	lists := f.be.lists.Load()
	require.NoError(t, f.sync(PassOptions{Reconcile: true}))
	assert.Equal(t, lists+1, f.be.lists.Load(), "one listing")
	got, _ = f.be.data("dev/a.txt")
	assert.Equal(t, "alpha 2", string(got))
	got, _ = f.be.data("dev/sub-c.txt")
	assert.Equal(t, "charlie", string(got))
	assert.Equal(t, int64(2), f.status("e").FilesLastPass)

	// And a reconcile with nothing lost moves nothing.
	puts := f.be.puts.Load()
	require.NoError(t, f.sync(PassOptions{Reconcile: true}))
	assert.Equal(t, puts, f.be.puts.Load())
}

func TestUnitEgressAdoptsWithoutJournal(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.egress("e", "out", "dev"))
	f.write("out/same", []byte("same"))
	f.write("out/other", []byte("mine"))
	f.be.put("dev/same", []byte("same"))
	f.be.put("dev/other", []byte("xxxx")) // same size, other content
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, int64(1), f.be.puts.Load(), "only the differing file is uploaded")
	got, _ := f.be.data("dev/other")
	assert.Equal(t, "mine", string(got))
	assert.Equal(t, 2, f.rows("e"))
	// The next pass does not list again.
	lists := f.be.lists.Load()
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, lists, f.be.lists.Load())
}

func TestUnitEgressMissingSourceIsNormal(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.egress("e", "not-yet", "dev"))
	require.NoError(t, f.sync(PassOptions{}))
	assert.Empty(t, f.status("e").LastError)
	assert.Zero(t, f.be.requests())
}

func TestUnitOneBadEntryNeverStopsTheRest(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.egress("e", "out", "dev"))
	f.write("out/a/1", []byte("1"))
	f.write("out/b/2", []byte("2")) // its directory cannot be read
	f.write("out/c/3", []byte("3"))
	f.write("out/d/4", []byte("4")) // its upload fails
	f.write("out/e/5", []byte("5"))
	f.write("out/\xff\xfe", []byte("6")) // a name that is no key
	var fault sync.Map
	fault.Store("b", true)
	f.eng.hooks.walkFault = func(dir string) error {
		if _, ok := fault.Load(dir); ok {
			return fmt.Errorf("open %s: %w", dir, os.ErrPermission)
		}
		return nil
	}
	f.be.failPut = func(key string) error {
		if key == "dev/d/4" {
			return errors.New("refused by the server (test)")
		}
		return nil
	}
	err := f.sync(PassOptions{})
	require.Error(t, err, "the failed upload is reported")
	assert.Equal(t, []string{"dev/a/1", "dev/c/3", "dev/e/5"}, f.be.keys())
	st := f.status("e")
	assert.Equal(t, int64(2), st.Unreadable)
	assert.Equal(t, int64(1), st.Pending)
	assert.Contains(t, st.LastError, "dev/d/4")

	// Once readable, the directory's file moves; its rows were never lost.
	fault.Delete("b")
	f.be.failPut = nil
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, []string{"dev/a/1", "dev/b/2", "dev/c/3", "dev/d/4", "dev/e/5"}, f.be.keys())
	fault.Store("b", true)
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, 5, f.rows("e"), "rows under an unreadable directory are not pruned")
	assert.Equal(t, int64(2), f.status("e").Unreadable)
	assert.Contains(t, f.status("e").LastError, "could not be read")
}

func TestUnitEgressChanged(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.egress("e", "out", "dev"))
	f.write("out/a", []byte("a"))
	f.write("out/d/x", []byte("x"))
	require.NoError(t, f.sync(PassOptions{}))
	lists := f.be.lists.Load()

	ctx := context.Background()
	f.write("out/new", []byte("new"))
	f.write("out/d/y", []byte("y"))
	f.write("out/d/deep/z", []byte("z"))
	f.write("out/untold", []byte("not reported"))
	require.NoError(t, os.Remove(filepath.Join(f.root, "out/a")))
	require.NoError(t, f.eng.Changed(ctx, "e", []string{"new", "d", "a", "new", "../escape", ""}))
	assert.Equal(t, []string{"dev/a", "dev/d/deep/z", "dev/d/x", "dev/d/y", "dev/new"}, f.be.keys())
	assert.Equal(t, lists, f.be.lists.Load(), "no listing")
	assert.Equal(t, 4, f.rows("e"), "a's row pruned")

	// A directory that is gone prunes its rows.
	require.NoError(t, os.RemoveAll(filepath.Join(f.root, "out/d")))
	require.NoError(t, f.eng.Changed(ctx, "e", []string{"d"}))
	assert.Equal(t, 1, f.rows("e"))
	assert.ErrorIs(t, f.eng.Changed(ctx, "nope", []string{"a"}), ErrUnknownMapping)
}

func TestUnitIngressLifecycle(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.ingress("i", "in", "cfg"))
	f.be.put("cfg/a", []byte("alpha"))
	f.be.put("cfg/d/b", []byte("bravo"))
	f.be.put("cfg/../evil", []byte("no"))
	f.be.put("other/x", []byte("not ours"))

	require.NoError(t, f.sync(PassOptions{}))
	st := f.status("i")
	assert.Equal(t, int64(2), st.FilesLastPass)
	assert.Equal(t, int64(1), st.Refused)
	assert.Contains(t, st.LastError, "refused")
	assert.Equal(t, 3, f.rows("i"), "two files and the refusal")
	b, err := os.ReadFile(filepath.Join(f.root, "in/d/b"))
	require.NoError(t, err)
	assert.Equal(t, "bravo", string(b))

	// Idle: one listing, nothing else.
	before := f.be.requests()
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, before+1, f.be.requests())
	assert.Equal(t, int64(1), f.status("i").Refused, "still reported")

	// Object changed: downloaded; object deleted: row pruned, file kept.
	f.be.put("cfg/a", []byte("alpha 2"))
	f.be.remove("cfg/d/b")
	require.NoError(t, f.sync(PassOptions{}))
	b, _ = os.ReadFile(filepath.Join(f.root, "in/a"))
	assert.Equal(t, "alpha 2", string(b))
	assert.FileExists(t, filepath.Join(f.root, "in/d/b"), "ingress never deletes")
	assert.Equal(t, 2, f.rows("i"))

	// File deleted locally: a normal pass leaves it, a reconcile fetches it.
	require.NoError(t, os.Remove(filepath.Join(f.root, "in/a")))
	require.NoError(t, f.sync(PassOptions{}))
	assert.NoFileExists(t, filepath.Join(f.root, "in/a"))
	require.NoError(t, f.sync(PassOptions{Reconcile: true}))
	b, _ = os.ReadFile(filepath.Join(f.root, "in/a"))
	assert.Equal(t, "alpha 2", string(b))

	// A change event for a deleted file fetches it without a listing.
	require.NoError(t, os.Remove(filepath.Join(f.root, "in/a")))
	lists := f.be.lists.Load()
	require.NoError(t, f.eng.Changed(context.Background(), "i", []string{"a"}))
	assert.FileExists(t, filepath.Join(f.root, "in/a"))
	assert.Equal(t, lists, f.be.lists.Load())
}

func TestUnitIngressAdoptsAndGuards(t *testing.T) {
	f := newMemFixture(t)
	m := f.ingress("i", "in", "cfg")
	m.MaxBytes = 10
	f.configure(m)
	f.write("in/same", []byte("same"))
	f.be.put("cfg/same", []byte("same"))
	f.be.put("cfg/big", []byte("0123456789ab"))
	require.NoError(t, f.sync(PassOptions{}))
	assert.Zero(t, f.be.gets.Load(), "identical file adopted, big one refused by the quota")
	assert.Equal(t, int64(1), f.be.requests(), "an identical local file is kept: LIST only")
	st := f.status("i")
	assert.Equal(t, int64(1), st.Refused)
	assert.Contains(t, st.LastError, "quota")
	assert.NoFileExists(t, filepath.Join(f.root, "in/big"))
}

func TestUnitDryRun(t *testing.T) {
	f := newMemFixture(t)
	f.configure(f.egress("e", "out", "dev"), func() Mapping {
		m := f.ingress("i", "in", "cfg")
		m.MaxBytes = 10
		return m
	}())
	f.write("out/a", []byte("a"))
	f.write("out/b", []byte("b"))
	f.be.put("cfg/x", []byte("x"))
	f.be.put("cfg/big", []byte("0123456789ab"))
	f.be.put("cfg/../evil", []byte("no"))
	jsize, err := f.eng.jr.Size()
	require.NoError(t, err)

	var mu sync.Mutex
	got := map[string][]string{}
	report := func(p Planned) {
		mu.Lock()
		defer mu.Unlock()
		got[p.Action] = append(got[p.Action], p.Key)
	}
	require.NoError(t, f.sync(PassOptions{DryRun: true, Report: report}))
	assert.ElementsMatch(t, []string{"dev/a", "dev/b"}, got["upload"])
	assert.Equal(t, []string{"cfg/x"}, got["download"])
	assert.Equal(t, []string{"cfg/big"}, got["disk-guard"])
	assert.Equal(t, []string{"cfg/../evil"}, got["refuse"])
	assert.Len(t, got["summary"], 2)

	assert.Equal(t, []string{"cfg/../evil", "cfg/big", "cfg/x"}, f.be.keys(), "no object written")
	assert.Zero(t, f.be.puts.Load()+f.be.gets.Load())
	assert.NoDirExists(t, filepath.Join(f.root, "in"), "no local file written")
	ids, err := f.eng.jr.Mappings()
	require.NoError(t, err)
	assert.Empty(t, ids, "no journal written")
	jsize2, _ := f.eng.jr.Size()
	assert.Equal(t, jsize, jsize2)
	assert.Zero(t, f.status("e").LastAttempt, "a dry run is no pass")
}

// TestJournalChurn creates and deletes many files over many passes: the
// journal's rows follow the live tree and its file stops growing.
func TestJournalChurn(t *testing.T) {
	const perPass, passes, live = 150, 20, 1000
	f := newMemFixture(t)
	f.configure(f.egress("e", "out", "dev"))
	next := 0
	var sizes []int64
	for pass := range passes {
		for range perPass {
			f.write(fmt.Sprintf("out/d%02d/f%06d", next%17, next), []byte("x"))
			next++
		}
		for i := max(0, next-perPass-live); i < next-live; i++ {
			require.NoError(t, os.Remove(filepath.Join(f.root, fmt.Sprintf("out/d%02d/f%06d", i%17, i))))
		}
		require.NoError(t, f.sync(PassOptions{}))
		want := min(next, live)
		require.Equal(t, want, f.rows("e"), "pass %d", pass)
		size, err := f.eng.jr.Size()
		require.NoError(t, err)
		sizes = append(sizes, size)
	}
	t.Logf("journal: %d files created, %d live, %d rows; file size after pass 5: %d B, after pass %d: %d B",
		next, live, f.rows("e"), sizes[4], passes, sizes[passes-1])
	assert.Less(t, sizes[passes-1], 3*sizes[4], "the journal file follows the live tree")
}

func TestSortNames(t *testing.T) {
	assert.Equal(t, []string{"a", "b/c"}, sortNames([]string{"b/c/", "a", "/a", "..", "../x", "x/../y", ".", "a//b"}))
	assert.True(t, strings.HasPrefix(actConflict.String(), "conf"))
}

func TestUnitRunIntervals(t *testing.T) {
	f := newMemFixture(t, func(o *Options) {
		o.Interval, o.WatchedInterval, o.ReconcileInterval = 30*time.Millisecond, 600*time.Millisecond, 200*time.Millisecond
		o.NoWatch = true // SetWatched by hand below
	})
	var mu sync.Mutex
	full, reconciles := map[string]int{}, map[string]int{}
	f.eng.hooks.onPass = func(id string, po PassOptions, partial bool) {
		mu.Lock()
		defer mu.Unlock()
		full[id]++
		if po.Reconcile {
			reconciles[id]++
		}
	}
	f.configure(f.egress("plain", "a", "a"), f.egress("watched", "b", "b"))
	f.eng.SetWatched("watched", true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = f.eng.Run(ctx) }()
	time.Sleep(time.Second)
	cancel()
	<-done
	mu.Lock()
	defer mu.Unlock()
	t.Logf("passes %v, reconciles %v", full, reconciles)
	assert.GreaterOrEqual(t, full["plain"], 10, "every Interval")
	assert.Less(t, full["watched"], full["plain"]/2, "every WatchedInterval, plus prompt and reconcile passes")
	assert.GreaterOrEqual(t, reconciles["plain"], 3)
	assert.GreaterOrEqual(t, reconciles["watched"], 3)
}

func TestUnitUnreadableByPermission(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads mode 000 files and directories (TestUnitOneBadEntryNeverStopsTheRest injects the failure)")
	}
	f := newMemFixture(t)
	f.configure(f.egress("e", "out", "dev"))
	f.write("out/a/1", []byte("1"))
	f.write("out/b/2", []byte("2"))
	f.write("out/c/3", []byte("3"))
	f.write("out/d", []byte("4"))
	require.NoError(t, os.Chmod(filepath.Join(f.root, "out/b"), 0))
	require.NoError(t, os.Chmod(filepath.Join(f.root, "out/d"), 0))
	t.Cleanup(func() { _ = os.Chmod(filepath.Join(f.root, "out/b"), 0o755) })
	require.NoError(t, f.sync(PassOptions{}))
	assert.Equal(t, []string{"dev/a/1", "dev/c/3"}, f.be.keys())
	assert.Equal(t, int64(2), f.status("e").Unreadable)
}
