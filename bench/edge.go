package main

// The edge link scenario (issue 25): a tree of 300 files of 4 KiB and one
// of 1 MiB pushed and pulled by flotta-sync and by `rclone copy --transfers
// 8 --checkers 8` through the same simulated link, in the same run, tools
// interleaved: 150 ms ± 30 ms each way, 256 KB/s down, 128 KB/s up, in front
// of versitygw. Two links play it:
//
//   - toxiproxy (bin/toxiproxy-server, make toxiproxy), as the issue tried
//     it: its bandwidth toxic limits each connection on its own, so more
//     connections get more rate than the link has;
//   - fault/linksim with a split-TCP buffer and one rate shared by all
//     connections, as a modem or a satellite terminal has.
//
// Then the resets scenario: pushes through linksim that resets a
// connection every few hundred KiB until one run succeeds; after every run
// the files the journal claims (all but those a dry run still lists) are
// compared with the bucket's objects, read back directly.
//
//	go run ./bench edge [-rounds 3] [-out bench/results/x.txt]

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/fault/linksim"
	"github.com/project-flotta/flotta-device-worker/sync/s3server"
)

type edgeOptions struct {
	repo, out, dir string
	rounds         int
	small, smallN  int
	big            int
	resetEvery     int64
	flotta         string // flotta-sync binary
	extra          []string
}

const edgeBucket = "edge"

// The link of the issue.
var edgeLink = linksim.Config{Latency: 150 * time.Millisecond, Jitter: 30 * time.Millisecond,
	Up: 128 << 10, Down: 256 << 10, SplitTCP: true}

func edgeMain(args []string) {
	var o edgeOptions
	fs := flag.NewFlagSet("bench edge", flag.ExitOnError)
	fs.StringVar(&o.repo, "repo", ".", "repository root (bin/flotta-sync, bin/toxiproxy-server, bin/versitygw)")
	fs.StringVar(&o.out, "out", "", "also write the report to this file")
	fs.StringVar(&o.dir, "dir", "", "work directory (default: a temporary one, removed at the end)")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds, tools interleaved")
	fs.IntVar(&o.smallN, "files", 300, "small files")
	fs.IntVar(&o.small, "size", 4096, "bytes per small file")
	fs.IntVar(&o.big, "big", 1<<20, "bytes of the big file")
	fs.Int64Var(&o.resetEvery, "reset-every", 1536<<10, "resets scenario: one connection reset every this many bytes sent, more than the biggest body (0 skips it)")
	fs.StringVar(&o.flotta, "flotta-sync", "", "flotta-sync binary (default <repo>/bin/flotta-sync)")
	_ = fs.Parse(args)
	if err := runEdge(o); err != nil {
		log.Fatalf("bench edge: %v", err)
	}
}

type edgeLinkUnderTest struct {
	name  string
	addr  string
	close func()
}

func runEdge(o edgeOptions) error {
	repo, err := filepath.Abs(o.repo)
	if err != nil {
		return err
	}
	if o.flotta == "" {
		o.flotta = filepath.Join(repo, "bin", "flotta-sync")
	}
	if o.dir == "" {
		d, err := os.MkdirTemp("", "flotta-bench-edge-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		o.dir = d
	}
	srv, err := s3server.StartVersitygw(s3server.Options{Dir: filepath.Join(o.dir, "gw"), Binary: filepath.Join(repo, "bin", "versitygw"),
		Buckets: []string{edgeBucket}, KeepAlive: true})
	if err != nil {
		return err
	}
	defer srv.Stop()
	tree := filepath.Join(o.dir, "tree")
	if err := makeEdgeTree(tree, o); err != nil {
		return err
	}

	var links []edgeLinkUnderTest
	if tp, err := startToxiproxy(filepath.Join(repo, "bin", "toxiproxy-server"), srv.Endpoint()); err != nil {
		log.Printf("toxiproxy: %v (skipped)", err)
	} else {
		links = append(links, tp)
	}
	ls, err := linksim.Start(srv.Endpoint(), edgeLink)
	if err != nil {
		return err
	}
	links = append(links, edgeLinkUnderTest{name: "linksim", addr: ls.Addr(), close: func() { ls.Close() }})
	defer func() {
		for _, l := range links {
			l.close()
		}
	}()

	var rep strings.Builder
	fmt.Fprintf(&rep, "# bench edge: %d x %d B + 1 x %d B; link 150 ms ± 30 ms each way, 256 KiB/s down, 128 KiB/s up\n", o.smallN, o.small, o.big)
	fmt.Fprintf(&rep, "# server: versitygw %s (--keep-alive), loopback; machine: %s; load before: %s\n", versitygwVersion(repo), machine(), loadAvg())
	fmt.Fprintf(&rep, "# flotta-sync: %s (default settings); rclone: %s (--transfers 8 --checkers 8)\n", o.flotta, rcloneVersion())
	fmt.Fprintf(&rep, "# started %s\n\n", time.Now().UTC().Format(time.RFC3339))
	type key struct{ link, tool, dir string }
	times := map[key][]float64{}
	n := 0
	for round := range o.rounds {
		for _, l := range links {
			for _, tool := range []string{"flotta-sync", "rclone"} {
				if round%2 == 1 { // interleave: who goes first alternates
					tool = map[string]string{"flotta-sync": "rclone", "rclone": "flotta-sync"}[tool]
				}
				n++
				prefix := fmt.Sprintf("r%d-%s-%d", round, l.name, n)
				for _, dir := range []string{"push", "pull"} {
					took, out, err := edgeRun(o, srv, l.addr, tool, dir, tree, prefix)
					status := "ok"
					if err != nil {
						status = "FAILED: " + lastLine(out)
					}
					fmt.Fprintf(&rep, "round %d  %-8s %-11s %-4s %7.2f s  %s\n", round+1, l.name, tool, dir, took.Seconds(), status)
					log.Printf("round %d %s %s %s: %.2fs %s", round+1, l.name, tool, dir, took.Seconds(), status)
					if err == nil {
						times[key{l.name, tool, dir}] = append(times[key{l.name, tool, dir}], took.Seconds())
					}
				}
			}
		}
	}
	fmt.Fprintf(&rep, "\n# medians (s) and flotta-sync's speed-up over rclone\n")
	for _, l := range links {
		for _, dir := range []string{"push", "pull"} {
			ft, rt := times[key{l.name, "flotta-sync", dir}], times[key{l.name, "rclone", dir}]
			if len(ft) == 0 || len(rt) == 0 {
				fmt.Fprintf(&rep, "%-8s %-4s runs that succeeded: flotta-sync %d, rclone %d of %d\n", l.name, dir, len(ft), len(rt), o.rounds)
				continue
			}
			f, r := medianOf(ft), medianOf(rt)
			fmt.Fprintf(&rep, "%-8s %-4s flotta-sync %6.2f  rclone %6.2f  x%.2f  (runs %d/%d)\n", l.name, dir, f, r, r/f, len(ft), len(rt))
		}
	}
	if o.resetEvery > 0 {
		if err := edgeResets(o, srv, tree, &rep); err != nil {
			fmt.Fprintf(&rep, "\nresets: %v\n", err)
		}
	}
	fmt.Fprintf(&rep, "\n# load after: %s\n", loadAvg())
	fmt.Print(rep.String())
	if o.out != "" {
		return os.WriteFile(o.out, []byte(rep.String()), 0o644)
	}
	return nil
}

func makeEdgeTree(dir string, o edgeOptions) error {
	if err := os.MkdirAll(filepath.Join(dir, "f"), 0o755); err != nil {
		return err
	}
	for i := range o.smallN {
		b := make([]byte, o.small)
		_, _ = rand.Read(b)
		if err := os.WriteFile(filepath.Join(dir, "f", fmt.Sprintf("s%03d", i)), b, 0o644); err != nil {
			return err
		}
	}
	b := make([]byte, o.big)
	_, _ = rand.Read(b)
	return os.WriteFile(filepath.Join(dir, "f", "big"), b, 0o644)
}

// edgeRun runs one tool one way through the link at addr and checks the
// result: push compares the objects with the tree, pull the files.
func edgeRun(o edgeOptions, srv *s3server.Server, addr, tool, dir, tree, prefix string) (time.Duration, string, error) {
	endpoint := "http://" + addr
	local := filepath.Join(o.dir, "pulled", tool+"-"+prefix)
	var args, env []string
	switch tool {
	case "flotta-sync":
		state := filepath.Join(o.dir, "state", dir+"-"+prefix)
		if dir == "push" {
			args = []string{o.flotta, "push", "--endpoint", endpoint, "--state", state, tree, "s3://" + edgeBucket + "/" + prefix}
		} else {
			args = []string{o.flotta, "pull", "--endpoint", endpoint, "--state", state, "--min-free", "-1", "s3://" + edgeBucket + "/" + prefix, local}
		}
		env = credentialsEnv()
	case "rclone":
		remote := "edge:" + edgeBucket + "/" + prefix
		if dir == "push" {
			args = []string{"/usr/bin/rclone", "copy", tree, remote}
		} else {
			args = []string{"/usr/bin/rclone", "copy", remote, local}
		}
		args = append(args, "--transfers", "8", "--checkers", "8", "--config", "/dev/null")
		env = []string{"RCLONE_CONFIG_EDGE_TYPE=s3", "RCLONE_CONFIG_EDGE_PROVIDER=Other",
			"RCLONE_CONFIG_EDGE_ENDPOINT=" + endpoint, "RCLONE_CONFIG_EDGE_REGION=us-east-1",
			"RCLONE_CONFIG_EDGE_ACCESS_KEY_ID=" + accessKey, "RCLONE_CONFIG_EDGE_SECRET_ACCESS_KEY=" + secretKey}
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(cleanEnv(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if err != nil {
		return took, out.String(), err
	}
	if dir == "push" {
		bad, err := bucketMatches(srv, tree, prefix, nil)
		if err == nil && len(bad) > 0 {
			err = fmt.Errorf("%d objects differ from the tree, first %s", len(bad), bad[0])
		}
		return took, out.String(), err
	}
	return took, out.String(), sameTree(tree, local)
}

// bucketMatches compares every file of tree (or only names, when given)
// with its object under prefix, read back directly from the server; it
// returns the names that are missing or differ.
func bucketMatches(srv *s3server.Server, tree, prefix string, names []string) ([]string, error) {
	c, err := srv.Client()
	if err != nil {
		return nil, err
	}
	if names == nil {
		names, err = treeNames(tree)
		if err != nil {
			return nil, err
		}
	}
	var bad []string
	for _, name := range names {
		want, err := os.ReadFile(filepath.Join(tree, name))
		if err != nil {
			return nil, err
		}
		obj, err := c.GetObject(context.Background(), edgeBucket, prefix+"/"+name, minio.GetObjectOptions{})
		if err != nil {
			return nil, err
		}
		got, err := io.ReadAll(obj)
		obj.Close()
		if err != nil || !bytes.Equal(got, want) {
			bad = append(bad, name)
		}
	}
	return bad, nil
}

func treeNames(tree string) ([]string, error) {
	var names []string
	err := filepath.WalkDir(tree, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(tree, p)
		names = append(names, filepath.ToSlash(rel))
		return nil
	})
	slices.Sort(names)
	return names, err
}

func sameTree(want, got string) error {
	names, err := treeNames(want)
	if err != nil {
		return err
	}
	for _, n := range names {
		a, _ := os.ReadFile(filepath.Join(want, n))
		b, err := os.ReadFile(filepath.Join(got, n))
		if err != nil || !bytes.Equal(a, b) {
			return fmt.Errorf("pulled %s differs or is missing", n)
		}
	}
	return nil
}

// edgeResets pushes through a link that resets a connection every
// o.resetEvery bytes sent, run after run, and after each run compares the
// files the journal claims with the bucket.
func edgeResets(o edgeOptions, srv *s3server.Server, tree string, rep *strings.Builder) error {
	cfg := edgeLink
	cfg.ResetEvery = o.resetEvery
	ls, err := linksim.Start(srv.Endpoint(), cfg)
	if err != nil {
		return err
	}
	defer ls.Close()
	names, err := treeNames(tree)
	if err != nil {
		return err
	}
	fmt.Fprintf(rep, "\n# resets: linksim as above, one connection reset every %d KiB sent; flotta-sync push run after run\n", o.resetEvery>>10)
	state := filepath.Join(o.dir, "state", "resets")
	prefix := "resets"
	base := []string{"--endpoint", "http://" + ls.Addr(), "--state", state, tree, "s3://" + edgeBucket + "/" + prefix}
	for run := 1; run <= 8; run++ {
		cmd := exec.Command(o.flotta, append([]string{"push"}, base...)...)
		cmd.Env = append(cleanEnv(), credentialsEnv()...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		runErr := cmd.Run()
		took := time.Since(start)
		// What the journal claims: every file a dry run no longer lists.
		dry := exec.Command(o.flotta, append([]string{"push", "--dry-run"}, base...)...)
		dry.Env = cmd.Env
		var plan bytes.Buffer
		dry.Stdout = &plan
		_ = dry.Run()
		pending := map[string]bool{}
		for _, line := range strings.Split(plan.String(), "\n") {
			for _, n := range names {
				if strings.Contains(line, prefix+"/"+n) {
					pending[n] = true
				}
			}
		}
		var claimed []string
		for _, n := range names {
			if !pending[n] {
				claimed = append(claimed, n)
			}
		}
		bad, err := bucketMatches(srv, tree, prefix, claimed)
		if err != nil {
			return err
		}
		notWhole, _ := bucketMatches(srv, tree, prefix, nil)
		status := "ok"
		if runErr != nil {
			status = "exit " + strings.TrimPrefix(runErr.Error(), "exit status ") + ": " + lastLine(out.String())
		}
		fmt.Fprintf(rep, "run %d  %6.2f s  resets so far %3d  claimed %3d  whole %3d  claimed-not-whole %d  %s\n",
			run, took.Seconds(), ls.Resets(), len(claimed), len(names)-len(notWhole), len(bad), status)
		if len(bad) > 0 {
			fmt.Fprintf(rep, "  CLAIMED BUT NOT WHOLE: %v\n", bad)
		}
		if runErr == nil {
			return nil
		}
	}
	return errors.New("no run succeeded in 8")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := lines[len(lines)-1]
	if len(l) > 200 {
		l = l[:200]
	}
	return l
}

func versitygwVersion(repo string) string {
	out, err := exec.Command(filepath.Join(repo, "bin", "versitygw"), "--version").CombinedOutput()
	if err != nil {
		return "(unknown version)"
	}
	return strings.Join(strings.Fields(string(out)), " ")
}

func rcloneVersion() string {
	out, _ := exec.Command("/usr/bin/rclone", "version").Output()
	return strings.SplitN(string(out), "\n", 2)[0]
}

// startToxiproxy runs toxiproxy-server and puts a proxy to target with the
// issue's toxics in front of it.
func startToxiproxy(bin, target string) (edgeLinkUnderTest, error) {
	if _, err := os.Stat(bin); err != nil {
		return edgeLinkUnderTest{}, fmt.Errorf("%s not found (make toxiproxy)", bin)
	}
	api, err := freePort()
	if err != nil {
		return edgeLinkUnderTest{}, err
	}
	listen, err := freePort()
	if err != nil {
		return edgeLinkUnderTest{}, err
	}
	cmd := exec.Command(bin, "-host", "127.0.0.1", "-port", fmt.Sprint(api))
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Start(); err != nil {
		return edgeLinkUnderTest{}, err
	}
	stop := func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }
	base := fmt.Sprintf("http://127.0.0.1:%d", api)
	post := func(path string, body any) error {
		b, _ := json.Marshal(body)
		var last error
		for range 50 {
			resp, err := http.Post(base+path, "application/json", bytes.NewReader(b))
			if err == nil {
				msg, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 2 {
					return nil
				}
				return fmt.Errorf("toxiproxy %s: %s: %s", path, resp.Status, msg)
			}
			last = err
			time.Sleep(100 * time.Millisecond)
		}
		return last
	}
	addr := fmt.Sprintf("127.0.0.1:%d", listen)
	steps := []struct {
		path string
		body any
	}{
		{"/proxies", map[string]any{"name": "edge", "listen": addr, "upstream": target, "enabled": true}},
		{"/proxies/edge/toxics", map[string]any{"name": "lat_up", "type": "latency", "stream": "upstream", "attributes": map[string]int{"latency": 150, "jitter": 30}}},
		{"/proxies/edge/toxics", map[string]any{"name": "lat_down", "type": "latency", "stream": "downstream", "attributes": map[string]int{"latency": 150, "jitter": 30}}},
		{"/proxies/edge/toxics", map[string]any{"name": "bw_up", "type": "bandwidth", "stream": "upstream", "attributes": map[string]int{"rate": 128}}},
		{"/proxies/edge/toxics", map[string]any{"name": "bw_down", "type": "bandwidth", "stream": "downstream", "attributes": map[string]int{"rate": 256}}},
	}
	for _, s := range steps {
		if err := post(s.path, s.body); err != nil {
			stop()
			return edgeLinkUnderTest{}, err
		}
	}
	return edgeLinkUnderTest{name: "toxiproxy", addr: addr, close: stop}, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
