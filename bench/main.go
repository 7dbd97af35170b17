// Command bench compares flotta-sync with rclone and aws s3 sync on the same
// scenarios against one local versitygw, in one run, and with a raw minio-go
// loop as the ceiling. Every tool runs as a child process, so wall time and
// peak RSS (from rusage) are measured the same way for all of them; S3
// requests are counted by a reverse proxy in front of the server.
//
//	go run ./bench [-files 10000] [-big 1024] [-million] [-out bench/results/x.txt]
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// options are the bench's flags.
type options struct {
	files       int    // small files per scenario
	fileSize    int    // bytes per small file
	bigMiB      int    // size of the single big file
	million     bool   // also run the 1,000,000-file idle egress pass
	concurrency int    // transfers for every tool
	workDir     string // data, server storage and tool state
	repo        string // repository root (bin/ lives there)
	tools       string // comma-separated subset of tools to run
	out         string // where the raw table goes as well as stdout
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "raw" {
		rawMain(os.Args[2:]) // the ceiling, run as a child like the others
		return
	}
	var o options
	flag.IntVar(&o.files, "files", 10000, "small files in the egress and ingress scenarios")
	flag.IntVar(&o.fileSize, "size", 4096, "bytes per small file")
	flag.IntVar(&o.bigMiB, "big", 1024, "MiB of the single big file (0 skips it)")
	flag.BoolVar(&o.million, "million", false, "also measure an idle egress pass over 1,000,000 files (slow to set up)")
	flag.IntVar(&o.concurrency, "concurrency", 16, "parallel transfers for every tool")
	flag.StringVar(&o.workDir, "dir", "", "work directory (default: a new temporary directory, removed at the end)")
	flag.StringVar(&o.repo, "repo", ".", "repository root")
	flag.StringVar(&o.tools, "tools", "flotta,rclone,aws,raw", "tools to compare")
	flag.StringVar(&o.out, "out", "", "also write the table to this file")
	flag.Parse()
	if err := run(o); err != nil {
		log.Fatalf("bench: %v", err)
	}
}

func run(o options) error {
	keep := o.workDir != ""
	if !keep {
		d, err := os.MkdirTemp("", "flotta-bench-")
		if err != nil {
			return err
		}
		o.workDir = d
		defer os.RemoveAll(d)
	}
	repo, err := filepath.Abs(o.repo)
	if err != nil {
		return err
	}
	o.repo = repo
	srv, err := startServer(o)
	if err != nil {
		return err
	}
	defer srv.stop()

	tools, err := selectTools(o, srv)
	if err != nil {
		return err
	}
	var results []result
	for _, sc := range scenarios(o) {
		if err := sc.prepare(o, srv); err != nil {
			return fmt.Errorf("prepare %s: %w", sc.name, err)
		}
		for _, t := range tools {
			if sc.only != "" && sc.only != t.name {
				continue
			}
			r, err := measure(o, srv, sc, t)
			if err != nil {
				return err
			}
			results = append(results, r)
			log.Printf("%-38s %-7s %9.2fs %8d req %7.1f MiB", sc.name, t.name, r.wall.Seconds(), r.requests, r.rssMiB)
		}
	}
	return report(o, results)
}

// result is one tool's run of one scenario.
type result struct {
	scenario, tool string
	wall           time.Duration
	requests       int64
	rssMiB         float64
	err            string
}

// measure runs one tool on one scenario as a child process.
func measure(o options, srv *server, sc scenario, t tool) (result, error) {
	args, env, err := sc.command(o, srv, t)
	if err != nil {
		return result{}, err
	}
	r := result{scenario: sc.name, tool: t.name}
	if args == nil {
		r.err = "n/a"
		return r, nil
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(cleanEnv(), env...)
	var stderr strings.Builder
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	srv.proxy.reset()
	start := time.Now()
	runErr := cmd.Run()
	r.wall = time.Since(start)
	r.requests = srv.proxy.count()
	if cmd.ProcessState != nil {
		r.rssMiB = float64(maxRSSKiB(cmd.ProcessState)) / 1024
	}
	if runErr != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 300 {
			msg = msg[len(msg)-300:]
		}
		r.err = fmt.Sprintf("%v: %s", runErr, msg)
		log.Printf("%s / %s failed: %s", sc.name, t.name, r.err)
	}
	return r, nil
}

// cleanEnv is the environment every tool starts from: AWS_CA_BUNDLE is set
// on these machines and breaks rclone 1.60, and no proxy may intercept
// loopback traffic.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToUpper(k) {
		case "AWS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "AWS_PROFILE":
			continue
		}
		env = append(env, kv)
	}
	return env
}

func report(o options, results []result) error {
	var b strings.Builder
	fmt.Fprintf(&b, "flotta-device-worker bench, %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine: %s\n", machine())
	fmt.Fprintf(&b, "server: versitygw (posix backend) on 127.0.0.1 behind a counting proxy; concurrency %d for every tool\n\n", o.concurrency)
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "scenario\ttool\twall s\tS3 requests\tpeak RSS MiB\tx flotta time\tnote\t")
	flottaWall := map[string]time.Duration{}
	for _, r := range results {
		if r.tool == "flotta" && r.err == "" {
			flottaWall[r.scenario] = r.wall
		}
	}
	for _, r := range results {
		ratio := "-"
		if f := flottaWall[r.scenario]; f > 0 && r.err == "" {
			ratio = fmt.Sprintf("%.2f", r.wall.Seconds()/f.Seconds())
		}
		note := r.err
		if len(note) > 60 {
			note = note[:60] + "..."
		}
		fmt.Fprintf(w, "%s\t%s\t%.2f\t%d\t%.1f\t%s\t%s\t\n", r.scenario, r.tool, r.wall.Seconds(), r.requests, r.rssMiB, ratio, note)
	}
	w.Flush()
	fmt.Print(b.String())
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(o.out, []byte(b.String()), 0o644)
	}
	return nil
}

func machine() string {
	out, _ := exec.Command("uname", "-srm").Output()
	cpu := "unknown cpu"
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(line, "model name") {
				_, v, _ := strings.Cut(line, ":")
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	n, _ := exec.Command("nproc").Output()
	return fmt.Sprintf("%s, %s x %s", strings.TrimSpace(string(out)), strings.TrimSpace(string(n)), cpu)
}
