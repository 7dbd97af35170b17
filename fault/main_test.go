// Package fault_test is the fault-injection suite: it runs the real
// binaries (flotta-sync, device-worker under devdispatcher) and the sync
// engine against a real S3 server and breaks things on purpose — kill -9,
// the server going away, writers racing the uploader, a full disk, hostile
// keys and symlinks, bad configuration messages — then proves with counts
// that the promises of DESIGN.md §5 held. Each test prints one summary line.
//
// FLOTTA_FAULT_LONG=1 runs the long variants (50 crashes, a 60 s outage, ...).
package fault_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

const buildTags = "remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp"

// Distinctive credentials: every server of this suite runs with them, and
// no log line or heartbeat may ever contain them (raw or base64).
const (
	accessKey = "FLTFAULTAKIDQ7X2W9ZP"
	secretKey = "fault-SeCrEt/9f3b1c7e+do-NOT-log-0xC0FFEE"
	bucket    = "fault"
	// A second pair the secrets test configures (refused by the server).
	wrongAccess = "FLTWRONGAKIDM4K8V1TQ"
	wrongSecret = "fault-WRONG-secret/77aa+never-log-0xBADC0DE"
	tempMark    = ".flotta-tmp-"
)

var (
	binDir string
	long   = os.Getenv("FLOTTA_FAULT_LONG") == "1"
)

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // every test needs the S3 server and skips
	}
	dir, err := os.MkdirTemp("", "flotta-fault-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	build := exec.Command("go", "build", "-tags", buildTags, "-o", dir+"/",
		"./cmd/device-worker", "./cmd/devdispatcher", "./cmd/flotta-sync")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// pick is the default variant's figure, or the long one's.
func pick[T any](def, lng T) T {
	if long {
		return lng
	}
	return def
}

// summary prints a test's one-line result in the test log and on stdout,
// so it shows in `go test` output without -v.
func summary(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	fmt.Printf("FAULT %s\n", line)
}

// startS3 runs versitygw with the suite's credentials and one bucket.
func startS3(t *testing.T) *s3test.Server {
	t.Helper()
	return s3test.Start(t, s3test.WithCredentials(accessKey, secretKey), s3test.WithBuckets(bucket))
}

// ---- self-checking versions ----
//
// A version is: body || uint64 big-endian body length || SHA-256(body) || "FLTV".
// The body starts with "<name> v<n>\n", so an object holding another file's
// content is caught too. Any prefix, mixture or extension of versions fails.

const trailerLen = 8 + sha256.Size + 4

var magic = []byte("FLTV")

// makeVersion returns version n of name with a body of about size bytes.
func makeVersion(rng *rand.Rand, name string, n, size int) []byte {
	head := fmt.Sprintf("%s v%d\n", name, n)
	body := make([]byte, max(size, len(head)))
	copy(body, head)
	for i := len(head); i < len(body); i += 8 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], rng.Uint64())
		copy(body[i:], w[:])
	}
	return append(body, trailer(body)...)
}

func trailer(body []byte) []byte {
	sum := sha256.Sum256(body)
	t := binary.BigEndian.AppendUint64(nil, uint64(len(body)))
	t = append(t, sum[:]...)
	return append(t, magic...)
}

// checkVersion reports why b is not a complete version of name.
func checkVersion(name string, b []byte) error {
	if len(b) < trailerLen {
		return fmt.Errorf("%s: %d bytes, shorter than a trailer", name, len(b))
	}
	body, tr := b[:len(b)-trailerLen], b[len(b)-trailerLen:]
	if !bytes.Equal(tr[len(tr)-4:], magic) {
		return fmt.Errorf("%s: no trailer (torn or partial)", name)
	}
	if n := binary.BigEndian.Uint64(tr[:8]); n != uint64(len(body)) {
		return fmt.Errorf("%s: trailer says %d bytes, body has %d", name, n, len(body))
	}
	if sum := sha256.Sum256(body); !bytes.Equal(sum[:], tr[8:8+sha256.Size]) {
		return fmt.Errorf("%s: body does not match its checksum", name)
	}
	if !bytes.HasPrefix(body, []byte(name+" v")) {
		return fmt.Errorf("%s: holds the content of another file (%.40q)", name, body)
	}
	return nil
}

// ---- bucket and directory views ----

func s3Objects(t *testing.T, c *minio.Client, prefix string) (map[string][]byte, error) {
	t.Helper()
	ctx := context.Background()
	out := map[string][]byte{}
	for o := range c.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			return nil, o.Err
		}
		obj, err := c.GetObject(ctx, bucket, o.Key, minio.GetObjectOptions{})
		if err != nil {
			return nil, err
		}
		b, err := io.ReadAll(obj)
		obj.Close()
		if err != nil {
			var er minio.ErrorResponse
			if errors.As(err, &er) && er.Code == "NoSuchKey" {
				continue // replaced between LIST and GET
			}
			return nil, err
		}
		out[strings.TrimPrefix(o.Key, prefix)] = b
	}
	return out, nil
}

func putObject(t *testing.T, c *minio.Client, key string, data []byte) {
	t.Helper()
	_, err := c.PutObject(context.Background(), bucket, key, bytes.NewReader(data), int64(len(data)),
		minio.PutObjectOptions{DisableContentSha256: true, SendContentMd5: true})
	if err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
}

// localFiles reads every regular file under dir (relative slash paths) and
// lists the temp files apart. A missing dir is empty.
func localFiles(dir string) (files map[string][]byte, temps []string, err error) {
	files = map[string][]byte{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // gone meanwhile (a temp file renamed)
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if strings.HasPrefix(d.Name(), tempMark) {
			temps = append(temps, rel)
			return nil
		}
		b, err := os.ReadFile(p)
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		files[rel] = b
		return err
	})
	return files, temps, err
}

// compare counts the wanted files that are missing from or differ in got.
func compare(want, got map[string][]byte) (missing, differ int, first string) {
	for k, w := range want {
		g, ok := got[k]
		switch {
		case !ok:
			missing++
			if first == "" {
				first = k + " missing"
			}
		case !bytes.Equal(g, w):
			differ++
			if first == "" {
				first = k + " differs"
			}
		}
	}
	return missing, differ, first
}

// tornIn counts the entries of m that are not complete versions.
func tornIn(m map[string][]byte) (n int, first error) {
	for k, b := range m {
		if err := checkVersion(k, b); err != nil {
			n++
			if first == nil {
				first = err
			}
		}
	}
	return n, first
}

// ---- secrets ----

// secretForms are the strings no output may contain.
func secretForms() []string {
	var out []string
	for _, k := range []string{accessKey, secretKey, wrongAccess, wrongSecret} {
		out = append(out, k, base64.StdEncoding.EncodeToString([]byte(k)),
			base64.URLEncoding.EncodeToString([]byte(k)), base64.RawStdEncoding.EncodeToString([]byte(k)))
	}
	return out
}

// secretScan is every line the suite saw from its processes and every
// heartbeat, scanned for the credentials.
var secretScan struct {
	mu    sync.Mutex
	lines int
	hits  []string
}

// secretLines returns the lines of out that contain a credential.
func secretLines(out []byte) (lines int, leaks []string) {
	forms := secretForms()
	for _, line := range bytes.Split(out, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		lines++
		for _, f := range forms {
			if bytes.Contains(line, []byte(f)) {
				leaks = append(leaks, fmt.Sprintf("(%q…) %.300s", f[:6], line))
				break
			}
		}
	}
	return lines, leaks
}

// scanSecrets checks each line of out (from what) for the credentials.
func scanSecrets(t *testing.T, what string, out []byte) (lines, hits int) {
	t.Helper()
	lines, leaks := secretLines(out)
	for _, l := range leaks {
		t.Errorf("%s leaks a credential: %s", what, l)
	}
	secretScan.mu.Lock()
	secretScan.lines += lines
	secretScan.hits = append(secretScan.hits, leaks...)
	secretScan.mu.Unlock()
	return lines, len(leaks)
}
