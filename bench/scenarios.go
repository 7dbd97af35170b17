package main

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"strings"

	"github.com/minio/minio-go/v7"
)

// scenario is one workload that every tool runs in turn.
type scenario struct {
	name    string
	only    string // when set, only this tool runs it
	once    bool   // only in the first round (too slow to repeat)
	prepare func(o options, srv *server) error
	// command returns the child process to run for tool t in round r, or nil
	// args when the tool has nothing to do in this scenario.
	command func(o options, srv *server, t tool, r int) (args, env []string, err error)
	// verify checks, after the run, that the tool really did all the work
	// (a tool that exits 0 having copied half the files is not fast, it is
	// wrong); nil when there is nothing to check.
	verify func(o options, srv *server, t tool, r int) error
	// cleanup, when set, runs after verify (the big objects would otherwise
	// fill the disk over several rounds).
	cleanup func(o options, srv *server, t tool, r int)
}

// tool-and-round specific places: every round starts from nothing.
func bucketOf(t tool, r int) string { return fmt.Sprintf("egress-%s-%d", t.name, r) }

func scenarios(o options) []scenario {
	small := filepath.Join(o.workDir, "data", "small")
	big := filepath.Join(o.workDir, "data", "big")
	million := filepath.Join(o.workDir, "data", "million")
	state := func(t tool, set string, r int) string {
		return filepath.Join(o.workDir, "state", fmt.Sprintf("%s-%s-%d", t.name, set, r))
	}
	download := func(t tool, r int) string {
		return filepath.Join(o.workDir, "download", fmt.Sprintf("%s-%d", t.name, r))
	}
	smallName := fmt.Sprintf("%d x %d KiB", o.files, o.fileSize/1024)
	smallBytes := int64(o.files) * int64(o.fileSize)
	bigBytes := int64(o.bigMiB) << 20

	egress := func(dir, set string) func(options, *server, tool, int) ([]string, []string, error) {
		return func(o options, srv *server, t tool, r int) ([]string, []string, error) {
			bucket := bucketOf(t, r)
			if err := srv.makeBucket(bucket); err != nil {
				return nil, nil, err
			}
			args, env := t.push(o, srv, dir, bucket, set, state(t, set, r))
			return args, env, nil
		}
	}
	verifyEgress := func(set string, n int, bytes int64) func(options, *server, tool, int) error {
		return func(o options, srv *server, t tool, r int) error {
			return srv.verifyPrefix(bucketOf(t, r), set, n, bytes)
		}
	}
	ingress := func(o options, srv *server, t tool, r int) ([]string, []string, error) {
		args, env := t.pull(o, srv, "ingress-src", "small", download(t, r), state(t, "ingress", r))
		return args, env, nil
	}
	verifyIngress := func(o options, srv *server, t tool, r int) error {
		return verifyDir(download(t, r), o.files, smallBytes)
	}
	list := []scenario{
		{name: "first egress " + smallName, prepare: func(options, *server) error { return makeFiles(small, o.files, o.fileSize) },
			command: egress(small, "small"), verify: verifyEgress("small", o.files, smallBytes)},
		{name: "idle egress " + smallName, prepare: noPrep, command: idleOnly(egress(small, "small")),
			verify: verifyEgress("small", o.files, smallBytes)},
	}
	if o.bigMiB > 0 {
		list = append(list, scenario{
			name:    fmt.Sprintf("one %d MiB file", o.bigMiB),
			prepare: func(options, *server) error { return makeBigFile(filepath.Join(big, "big.bin"), bigBytes) },
			command: egress(big, "big"),
			verify:  verifyEgress("big", 1, bigBytes),
			cleanup: func(o options, srv *server, t tool, r int) {
				_ = srv.removePrefix(bucketOf(t, r), "big")
			},
		})
	}
	list = append(list,
		scenario{name: "first ingress " + smallName, prepare: func(o options, srv *server) error { return seedBucket(o, srv, small, "ingress-src", "small") },
			command: ingress, verify: verifyIngress},
		scenario{name: "idle ingress " + smallName, prepare: noPrep, command: idleOnly(ingress), verify: verifyIngress},
	)
	if o.bigMiB > 0 {
		// One big download: what streaming into a temp file and making it
		// durable costs against the raw loop's plain write.
		bigDownload := func(t tool, r int) string {
			return filepath.Join(o.workDir, "download-big", fmt.Sprintf("%s-%d", t.name, r))
		}
		list = append(list, scenario{
			name: fmt.Sprintf("first ingress one %d MiB file", o.bigMiB),
			prepare: func(o options, srv *server) error {
				if err := makeBigFile(filepath.Join(big, "big.bin"), bigBytes); err != nil {
					return err
				}
				return uploadDir(o, srv, big, "ingress-big", "big")
			},
			command: func(o options, srv *server, t tool, r int) ([]string, []string, error) {
				args, env := t.pull(o, srv, "ingress-big", "big", bigDownload(t, r), state(t, "ingress-big", r))
				return args, env, nil
			},
			verify:  func(o options, srv *server, t tool, r int) error { return verifyDir(bigDownload(t, r), 1, bigBytes) },
			cleanup: func(o options, srv *server, t tool, r int) { _ = os.RemoveAll(bigDownload(t, r)) },
		})
	}
	if o.million {
		const n, size = 1_000_000, 16
		list = append(list,
			scenario{
				name: "first egress 1,000,000 x 16 B", only: "flotta", once: true,
				prepare: func(options, *server) error { return makeFiles(million, n, size) },
				command: egress(million, "million"),
				verify:  verifyEgress("million", n, n*size),
			},
			scenario{
				name: "idle egress 1,000,000 x 16 B", only: "flotta", once: true,
				prepare: noPrep,
				command: egress(million, "million"),
			})
	}
	return list
}

func noPrep(options, *server) error { return nil }

// idleOnly drops the raw loop from idle scenarios: it has no memory of what
// it sent, so "idle" means nothing for it.
func idleOnly(f func(options, *server, tool, int) ([]string, []string, error)) func(options, *server, tool, int) ([]string, []string, error) {
	return func(o options, srv *server, t tool, r int) ([]string, []string, error) {
		if t.name == "raw" {
			return nil, nil, nil
		}
		return f(o, srv, t, r)
	}
}

// makeFiles writes n files of size bytes, 100 to a directory, once. The
// marker saying it is done lives beside dir, not in it: it must not be one
// more file for the tools to copy.
func makeFiles(dir string, n, size int) error {
	marker := dir + ".complete"
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	rng := rand.New(rand.NewSource(1))
	buf := make([]byte, size)
	for i := 0; i < n; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%04d", i/100))
		if i%100 == 0 {
			if err := os.MkdirAll(sub, 0o755); err != nil {
				return err
			}
		}
		rng.Read(buf)
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%07d.bin", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(marker, nil, 0o644)
}

func makeBigFile(path string, size int64) error {
	if st, err := os.Stat(path); err == nil && st.Size() == size {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	rng := rand.New(rand.NewSource(2))
	buf := make([]byte, 4<<20)
	for written := int64(0); written < size; written += int64(len(buf)) {
		rng.Read(buf)
		if _, err := f.Write(buf); err != nil {
			return err
		}
	}
	return f.Sync()
}

// verifyPrefix checks that bucket/prefix holds exactly n objects and bytes.
func (s *server) verifyPrefix(bucket, prefix string, n int, bytes int64) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	got, gotBytes := 0, int64(0)
	for obj := range c.ListObjects(context.Background(), bucket, minio.ListObjectsOptions{Prefix: prefix + "/", Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		got++
		gotBytes += obj.Size
	}
	if got != n || gotBytes != bytes {
		return fmt.Errorf("INCOMPLETE: %d objects, %d bytes; want %d, %d", got, gotBytes, n, bytes)
	}
	return nil
}

// verifyDir checks that dir holds exactly n regular files and bytes (a
// leftover temporary file counts: it would be a bug too).
func verifyDir(dir string, n int, bytes int64) error {
	got, gotBytes := 0, int64(0)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			fi, err := d.Info()
			if err != nil {
				return err
			}
			got++
			gotBytes += fi.Size()
		} else if !d.IsDir() {
			return fmt.Errorf("unexpected %s in %s", strings.TrimPrefix(p, dir), dir)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if got != n || gotBytes != bytes {
		return fmt.Errorf("INCOMPLETE: %d files, %d bytes; want %d, %d", got, gotBytes, n, bytes)
	}
	return nil
}
