package fault_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

// fileState is what a read or a write would change.
type fileState struct {
	mode         fs.FileMode
	size         int64
	mtime, atime int64
	sum          [32]byte
	link         string
}

// snapshot records every entry under dir (not following symlinks), except
// the subtree skip. It reads file content through O_NOATIME, so taking it
// does not disturb the atimes it records.
func snapshot(t *testing.T, dir, skip string) map[string]fileState {
	t.Helper()
	out := map[string]fileState{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == skip {
			return filepath.SkipDir
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		fi, _ := d.Info()
		s := fileState{mode: fi.Mode(), size: st.Size, mtime: st.Mtim.Nano(), atime: st.Atim.Nano()}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			s.link, _ = os.Readlink(p)
		case d.Type().IsRegular():
			f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOATIME, 0)
			if err != nil {
				return err
			}
			b, err := io.ReadAll(f)
			f.Close()
			if err != nil {
				return err
			}
			s.sum = sha256.Sum256(b)
		}
		out[p] = s
		return nil
	})
	if err != nil {
		t.Fatalf("snapshot %s: %v", dir, err)
	}
	return out
}

// diff lists what changed between two snapshots: reads (atime) and writes.
func diff(before, after map[string]fileState) (reads, writes []string) {
	for p, a := range after {
		b, ok := before[p]
		switch {
		case !ok:
			writes = append(writes, "created "+p)
		case a.mode != b.mode || a.size != b.size || a.mtime != b.mtime || a.sum != b.sum || a.link != b.link:
			writes = append(writes, "changed "+p)
		case a.atime != b.atime && a.mode.IsRegular():
			// (directory atimes move with every listing, this one's too)
			reads = append(reads, "read "+p)
		}
	}
	for p := range before {
		if _, ok := after[p]; !ok {
			writes = append(writes, "removed "+p)
		}
	}
	sort.Strings(reads)
	sort.Strings(writes)
	return reads, writes
}

// TestHostileKeysAndSymlinks runs ingress and egress with hostile object
// keys, symlinks inside /export pointing out of it, and mappings whose
// directory is such a symlink. Canary files outside /export (on a strictatime
// tmpfs, so any read shows) and a listing of the parent directories prove
// that nothing outside /export was read or written.
func TestHostileKeysAndSymlinks(t *testing.T) {
	srv := startS3(t)
	client := srv.Client()
	top := filepath.Join(t.TempDir(), "h")
	mountTmpfs(t, top, "size=32m,strictatime")
	root := filepath.Join(top, "export")
	outside := filepath.Join(top, "outside")
	canary := []byte("CANARY-do-not-read-3b7f\n")
	old := time.Now().Add(-72 * time.Hour)
	for _, p := range []string{"canary.txt", "sub/canary2.txt", "x", "passwd"} {
		full := filepath.Join(outside, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, canary, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(full, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(top, "x"), canary, 0o644); err != nil { // where "in/../../x" would land
		t.Fatal(err)
	}
	_ = os.Chtimes(filepath.Join(top, "x"), old, old)
	for _, d := range []string{"in", "out"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	symlinks := map[string]string{
		"out/leak":    filepath.Join(outside, "canary.txt"), // a file link in an egress source
		"out/leakdir": outside,                              // a directory link in an egress source
		"out/rel":     "../../outside/sub/canary2.txt",      // a relative one
		"in/link":     outside,                              // a directory link in an ingress target
		"linked-in":   outside,                              // an ingress target that is a link
		"linked-out":  outside,                              // an egress source that is a link
	}
	for name, target := range symlinks {
		if err := os.Symlink(target, filepath.Join(root, name)); err != nil {
			t.Fatal(err)
		}
	}
	// Objects the server accepts.
	long := strings.Repeat("ł", 100) // 200 bytes: a long but legal name
	good := map[string][]byte{"good": []byte("good\n"), "ünïcødé/文件 ✓.txt": []byte("unicode\n"), long: []byte("long\n")}
	for rel, b := range good {
		putObject(t, client, "in/"+rel, b)
	}
	for _, k := range []string{"in/link/evil", "in/link/canary.txt", "lin/canary.txt", "lin/evil"} {
		putObject(t, client, k, []byte("evil\n"))
	}
	// Keys the server would refuse or clean, injected into its listing.
	hostile := []string{
		"in/../x", "in/../../x", "in/a/../../../outside/canary.txt", "in//abs", "in///etc/passwd",
		"in/a" + string(rune(0)) + "b", "in/" + string(rune(0)), "in/.flotta-tmp-evil", "in/a/./b", "in/./x",
		"in/bad\xff\xfeutf8", "in/" + strings.Repeat("../", 40) + "x", "in/" + strings.Repeat("a/", 2100) + "x",
		"in/" + strings.Repeat("n", 300), "/etc/passwd", "../outside/x",
	}
	parent := filepath.Dir(top)
	beforeTop := snapshot(t, top, root)
	beforeParent := snapshot(t, parent, top)

	mappings := []datasync.Mapping{
		{ID: "in", Direction: datasync.Ingress, Root: root, LocalDir: filepath.Join(root, "in"), Bucket: bucket, Prefix: "in"},
		{ID: "linked-in", Direction: datasync.Ingress, Root: root, LocalDir: filepath.Join(root, "linked-in"), Bucket: bucket, Prefix: "lin"},
		{ID: "out", Direction: datasync.Egress, Root: root, LocalDir: filepath.Join(root, "out"), Bucket: bucket, Prefix: "up"},
		{ID: "linked-out", Direction: datasync.Egress, Root: root, LocalDir: filepath.Join(root, "linked-out"), Bucket: bucket, Prefix: "lup"},
	}
	eng, err := datasync.New(datasync.Options{StateDir: t.TempDir(), Interval: time.Hour, MinFreeBytes: -1, MinFreePercent: -1,
		WrapTransport: func(rt http.RoundTripper) http.RoundTripper {
			return s3test.InjectKeys(rt, "in/", hostile)
		}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	ak, sk := srv.Credentials()
	if err := eng.Configure(&datasync.Endpoint{Host: srv.Host, Port: srv.Port, Region: s3test.Region, AccessKey: ak, SecretKey: sk}, mappings); err != nil {
		t.Fatal(err)
	}
	// A mapping outside its root is refused outright.
	bad := datasync.Mapping{ID: "escape", Direction: datasync.Ingress, Root: root, LocalDir: filepath.Join(root, "..", "outside"), Bucket: bucket, Prefix: "in"}
	configRefused := eng.Configure(&datasync.Endpoint{Host: srv.Host, Port: srv.Port, AccessKey: ak, SecretKey: sk}, append(mappings, bad)) != nil
	passErrs := 0
	for range 2 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if err := eng.SyncNow(ctx); err != nil {
			passErrs++
			t.Logf("pass: %v", err)
		}
		cancel()
	}
	refused := map[string]int64{}
	for _, s := range eng.Status() {
		refused[s.ID] = s.Refused
		t.Logf("%s: refused %d, last error %q", s.ID, s.Refused, s.LastError)
	}

	reads, writes := diff(beforeTop, snapshot(t, top, root))
	r2, w2 := diff(beforeParent, snapshot(t, parent, top))
	reads, writes = append(reads, r2...), append(writes, w2...)
	// Nothing from outside reached the bucket.
	leaked := 0
	objs, err := s3Objects(t, client, "")
	if err != nil {
		t.Fatal(err)
	}
	for k, b := range objs {
		if bytes.Contains(b, canary) && !strings.HasPrefix(k, "in/") && !strings.HasPrefix(k, "lin/") {
			leaked++
			t.Errorf("object %s holds a canary from outside /export", k)
		}
	}
	goodOK := 0
	for rel, b := range good {
		if got, err := os.ReadFile(filepath.Join(root, "in", rel)); err == nil && bytes.Equal(got, b) {
			goodOK++
		} else {
			t.Errorf("good key %q not downloaded: %v", rel, err)
		}
	}
	// The detector can fail: a deliberate read of a canary shows.
	probe := snapshot(t, top, root)
	if _, err := os.ReadFile(filepath.Join(outside, "sub", "canary2.txt")); err != nil {
		t.Fatal(err)
	}
	probeReads, _ := diff(probe, snapshot(t, top, root))

	summary(t, "hostile: %d hostile keys + %d server-stored keys through symlinks, %d symlinks, %d refused (ingress %d + %d), %d/%d good keys written, %d outside reads, %d outside writes, %d canary objects, mapping outside root refused %v, canary read detector %d/1",
		len(hostile), 4, len(symlinks), refused["in"]+refused["linked-in"], refused["in"], refused["linked-in"], goodOK, len(good),
		len(reads), len(writes), leaked, configRefused, len(probeReads))
	for _, r := range reads {
		t.Errorf("outside /export: %s", r)
	}
	for _, w := range writes {
		t.Errorf("outside /export: %s", w)
	}
	if len(probeReads) != 1 {
		t.Errorf("the atime detector missed a deliberate read (%v): the outside-read check proves nothing", probeReads)
	}
	if !configRefused {
		t.Errorf("a mapping outside its root was accepted")
	}
	if refused["in"] < int64(len(hostile)-2) {
		t.Errorf("only %d of the hostile keys refused", refused["in"])
	}
	if passErrs > 0 {
		t.Logf("%d passes reported errors (expected: hostile or impossible names)", passErrs)
	}
}
