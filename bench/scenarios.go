package main

import (
	"fmt"
	"math/rand"
	"os"
	"path/filepath"
)

// scenario is one workload that every tool runs in turn.
type scenario struct {
	name    string
	only    string // when set, only this tool runs it
	prepare func(o options, srv *server) error
	// command returns the child process to run for tool t, or nil args when
	// the tool has nothing to do in this scenario.
	command func(o options, srv *server, t tool) (args, env []string, err error)
}

func scenarios(o options) []scenario {
	small := filepath.Join(o.workDir, "data", "small")
	big := filepath.Join(o.workDir, "data", "big")
	million := filepath.Join(o.workDir, "data", "million")
	state := func(t tool, set string) string { return filepath.Join(o.workDir, "state", t.name+"-"+set) }
	download := func(t tool) string { return filepath.Join(o.workDir, "download", t.name) }
	smallName := fmt.Sprintf("%d x %d KiB", o.files, o.fileSize/1024)

	egress := func(dir, set string) func(options, *server, tool) ([]string, []string, error) {
		return func(o options, srv *server, t tool) ([]string, []string, error) {
			bucket := "egress-" + t.name
			if err := srv.makeBucket(bucket); err != nil {
				return nil, nil, err
			}
			args, env := t.push(o, srv, dir, bucket, set, state(t, set))
			return args, env, nil
		}
	}
	ingress := func(o options, srv *server, t tool) ([]string, []string, error) {
		args, env := t.pull(o, srv, "ingress-src", "small", download(t), state(t, "ingress"))
		return args, env, nil
	}
	list := []scenario{
		{name: "first egress " + smallName, prepare: func(options, *server) error { return makeFiles(small, o.files, o.fileSize) }, command: egress(small, "small")},
		{name: "idle egress " + smallName, prepare: noPrep, command: idleOnly(egress(small, "small"))},
	}
	if o.bigMiB > 0 {
		list = append(list, scenario{
			name:    fmt.Sprintf("one %d MiB file", o.bigMiB),
			prepare: func(options, *server) error { return makeBigFile(filepath.Join(big, "big.bin"), int64(o.bigMiB)<<20) },
			command: egress(big, "big"),
		})
	}
	list = append(list,
		scenario{name: "first ingress " + smallName, prepare: func(o options, srv *server) error { return seedBucket(o, srv, small, "ingress-src", "small") }, command: ingress},
		scenario{name: "idle ingress " + smallName, prepare: noPrep, command: idleOnly(ingress)},
	)
	if o.million {
		list = append(list, scenario{
			name: "idle egress 1,000,000 files", only: "flotta",
			prepare: func(o options, srv *server) error { return prepareMillion(o, srv, million, state) },
			command: egress(million, "million"),
		})
	}
	return list
}

func noPrep(options, *server) error { return nil }

// idleOnly drops the raw loop from idle scenarios: it has no memory of what
// it sent, so "idle" means nothing for it.
func idleOnly(f func(options, *server, tool) ([]string, []string, error)) func(options, *server, tool) ([]string, []string, error) {
	return func(o options, srv *server, t tool) ([]string, []string, error) {
		if t.name == "raw" {
			return nil, nil, nil
		}
		return f(o, srv, t)
	}
}

// makeFiles writes n files of size bytes, 100 to a directory, once.
func makeFiles(dir string, n, size int) error {
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
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
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%06d.bin", i)), buf, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, ".complete"), nil, 0o644)
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

// prepareMillion writes 1,000,000 tiny files and runs one unmeasured flotta
// pass so that the measured pass is idle.
func prepareMillion(o options, srv *server, dir string, state func(tool, string) string) error {
	if err := makeFiles(dir, 1_000_000, 16); err != nil {
		return err
	}
	t := flottaTool()
	if err := srv.makeBucket("egress-flotta"); err != nil {
		return err
	}
	args, env := t.push(o, srv, dir, "egress-flotta", "million", state(t, "million"))
	return runQuiet(args, env)
}
