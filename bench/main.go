// Command bench compares flotta-sync with rclone and aws s3 sync on the same
// scenarios against one local versitygw, in one run, and with a raw minio-go
// loop as the ceiling. Every tool runs as a child process, so wall time and
// peak RSS (from rusage) are measured the same way for all of them; S3
// requests are counted by a reverse proxy in front of the server.
//
//	go run ./bench [-files 10000] [-big 1024] [-rounds 3] [-million] [-out bench/results/x.txt]
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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
	rounds      int    // times every scenario is repeated
	only        string // run only scenarios whose name contains this
	keepAlive   bool   // versitygw keeps connections open
	server      string // versitygw or minio
	baseline    string // repository root of another flotta-sync build: tool "baseline"

	// The worker scenarios (bench/worker.go).
	worker          bool          // run them without -only
	workerIdleFiles intList       // files in the egress source of each idle scenario
	workerWrites    int           // new files, one a second, in the latency scenario
	workerIdle      time.Duration // the idle CPU window
	workerSettle    time.Duration // wait between the first upload and the window
	workerEnv       envList       // extra settings of the worker (KEY=VALUE), e.g. a baseline with FLOTTA_WATCH=off
	// The worker ingress scenarios (bench/ingress.go).
	ingressObjects intList       // objects under the prefix of each idle ingress scenario
	ingressSettle  time.Duration // wait after the first download before the idle window
	ingressQuiet   time.Duration // quiet spell before the object of the quiet scenarios
	ingressIdle    time.Duration // the idle ingress CPU window

	bw bwOptions // the bandwidth scenarios (bench/bwlimit.go)
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "raw" {
		rawMain(os.Args[2:]) // the ceiling, run as a child like the others
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "edge" {
		edgeMain(os.Args[2:]) // the edge link scenario (bench/edge.go)
		return
	}
	if len(os.Args) > 1 && os.Args[1] == "fleet" {
		fleetMain(os.Args[2:]) // the fleet simulation (bench/fleet.go)
		return
	}
	var o options
	flag.IntVar(&o.files, "files", 10000, "small files in the egress and ingress scenarios")
	flag.IntVar(&o.fileSize, "size", 4096, "bytes per small file")
	flag.IntVar(&o.bigMiB, "big", 1024, "MiB of the single big file (0 skips it)")
	flag.BoolVar(&o.million, "million", false, "also measure an idle egress pass over 1,000,000 files (slow to set up)")
	flag.IntVar(&o.concurrency, "concurrency", 16, "parallel transfers for every tool")
	flag.StringVar(&o.server, "server", "versitygw", "S3 server the tools compare on: versitygw or minio (bin/minio, make minio)")
	flag.BoolVar(&o.keepAlive, "keep-alive", true, "start versitygw with --keep-alive (connections reused between requests, as production servers do)")
	flag.StringVar(&o.workDir, "dir", "", "work directory (default: a new temporary directory, removed at the end)")
	flag.StringVar(&o.repo, "repo", ".", "repository root")
	flag.StringVar(&o.tools, "tools", "flotta,rclone,aws,raw", "tools to compare")
	flag.StringVar(&o.out, "out", "", "also write the table to this file")
	flag.StringVar(&o.only, "only", "", "run only the scenarios whose name contains this (\"egress\" runs first and idle egress)")
	flag.BoolVar(&o.worker, "worker", false, "also run the worker scenarios (egress latency and idle CPU through devdispatcher + device-worker; -only worker runs only them)")
	o.workerIdleFiles = intList{2000, 100000}
	flag.Var(&o.workerIdleFiles, "worker-files", "files in the egress source of each worker idle scenario, comma-separated")
	flag.IntVar(&o.workerWrites, "worker-writes", 20, "new files, one a second, in the worker egress latency scenario")
	flag.DurationVar(&o.workerIdle, "worker-idle", time.Minute, "window over which the idle worker's CPU is measured (make it span at least one periodic pass)")
	flag.DurationVar(&o.workerSettle, "worker-settle", 30*time.Second, "wait after the first upload before the idle window opens")
	flag.Var(&o.workerEnv, "worker-env", "an extra worker setting KEY=VALUE (repeatable), e.g. FLOTTA_WATCH=off for a baseline without events")
	o.ingressObjects = intList{100000}
	flag.Var(&o.ingressObjects, "worker-ingress-objects", "objects under the ingress prefix of each worker idle ingress scenario, comma-separated")
	flag.DurationVar(&o.ingressQuiet, "worker-ingress-quiet", 10*time.Minute, "quiet spell before the one object of the worker ingress quiet scenarios")
	flag.DurationVar(&o.ingressSettle, "worker-ingress-settle", 8*time.Minute, "wait after the first download before the idle ingress window opens (adaptive polling reaches its 5 min cap after about 8 min)")
	flag.DurationVar(&o.ingressIdle, "worker-ingress-idle", 10*time.Minute, "window over which the idle ingress worker's CPU is measured (two passes at the 5 min cap)")
	flag.BoolVar(&o.bw.run, "bwlimit", false, "also run the bandwidth limit scenarios (-only bwlimit runs only them)")
	flag.StringVar(&o.bw.rate, "bw-rate", "4M", "--bwlimit of the big-file bandwidth scenarios (both directions)")
	flag.StringVar(&o.bw.smallRate, "bw-small-rate", "1M", "--bwlimit of the small-file bandwidth scenarios (both directions)")
	flag.DurationVar(&o.bw.seconds, "bw-seconds", 40*time.Second, "about how long each limited transfer lasts (sets the data sizes)")
	flag.StringVar(&o.bw.baselineRev, "bw-baseline-rev", "", "git revision to build flotta-sync from for the unlimited comparison (none: this build only)")
	flag.BoolVar(&o.bw.timetable, "bw-timetable", true, "also check that a timetable change applies while a transfer runs (about a minute)")
	flag.StringVar(&o.baseline, "baseline", "", "repository root of another build (its bin/flotta-sync runs as tool \"baseline\", for before/after in one run)")
	flag.IntVar(&o.rounds, "rounds", 1, "repeat every scenario this many times, tools interleaved (the table shows medians and ranges)")
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

	var tools []tool
	if toolScenarioSelected(o) {
		if tools, err = selectTools(o, srv); err != nil {
			return err
		}
	}
	var results []result
	prepared := map[string]bool{}
	for round := 0; round < o.rounds; round++ {
		for _, sc := range scenarios(o) {
			if sc.once && round > 0 {
				continue
			}
			if o.only != "" && !strings.Contains(sc.name, o.only) {
				continue
			}
			if !prepared[sc.name] {
				if err := sc.prepare(o, srv); err != nil {
					return fmt.Errorf("prepare %s: %w", sc.name, err)
				}
				prepared[sc.name] = true
			}
			// Interleave: each round starts with another tool, so that no
			// tool always runs right after the same neighbour.
			for i := range tools {
				t := tools[(i+round)%len(tools)]
				if sc.only != "" && sc.only != t.name {
					continue
				}
				r, err := measure(o, srv, sc, t, round)
				if err != nil {
					return err
				}
				results = append(results, r)
				log.Printf("round %d %-34s %-7s %8.2fs %8d req %7.1f MiB cpu %6.2fs server cpu %6.2fs proxy cpu %6.2fs %s", round, sc.name, t.name,
					r.wall.Seconds(), r.requests, r.rssMiB, r.cpu.Seconds(), r.serverCPU.Seconds(), r.proxyCPU.Seconds(), r.err)
			}
		}
	}
	var workerText string
	if names := selectedWorkerScenarios(o); len(names) > 0 {
		if workerText, err = runWorkerScenarios(o, srv, names); err != nil {
			return err
		}
	}
	if bwSelected(o) {
		text, err := runBandwidth(o, srv)
		if err != nil {
			return err
		}
		workerText += text
	}
	return report(o, tools, results, workerText)
}

// toolScenarioSelected reports whether any tool-comparison scenario runs.
func toolScenarioSelected(o options) bool {
	for _, sc := range scenarios(o) {
		if o.only == "" || strings.Contains(sc.name, o.only) {
			return true
		}
	}
	return false
}

const gnuTime = "/usr/bin/time"

// result is one tool's run of one scenario.
type result struct {
	scenario, tool string
	round          int
	wall           time.Duration
	requests       int64
	rssMiB         float64
	cpu            time.Duration // the tool's user+system time
	serverCPU      time.Duration // versitygw's user+system time meanwhile
	proxyCPU       time.Duration // the bench process (counting proxy) meanwhile
	err            string
	skipped        bool
}

// measure runs one tool on one scenario as a child process, then checks that
// it did the whole job.
func measure(o options, srv *server, sc scenario, t tool, round int) (result, error) {
	args, env, err := sc.command(o, srv, t, round)
	if err != nil {
		return result{}, err
	}
	r := result{scenario: sc.name, tool: t.name, round: round}
	if args == nil {
		r.skipped = true
		return r, nil
	}
	// Peak RSS comes from GNU time, not from this process's rusage of the
	// child: Go starts children with vfork semantics (CLONE_VM), and the
	// kernel then charges the parent's own high-water RSS to the child's
	// ru_maxrss when it execs, so every small tool would show the bench's
	// size. GNU time fork()s, and is 1 MiB.
	usage := filepath.Join(o.workDir, "usage.txt")
	_ = os.Remove(usage)
	timed := args
	if _, err := os.Stat(gnuTime); err == nil {
		timed = append([]string{gnuTime, "-f", "%M %U %S", "-o", usage}, args...)
	}
	cmd := exec.Command(timed[0], timed[1:]...)
	cmd.Env = append(cleanEnv(), env...)
	var stderr strings.Builder
	cmd.Stdout = io.Discard
	cmd.Stderr = &stderr
	// Every tool starts with no dirty page left by the setup or by the tool
	// before it: else a tool that makes its files durable (syncfs, fsync)
	// would pay, inside its timed region, for writing back data it never
	// wrote, while tools that do not sync leave theirs to the next one.
	syscall.Sync()
	srv.proxy.reset()
	srvCPU0, selfCPU0 := srv.cpu(), selfCPU()
	start := time.Now()
	runErr := cmd.Run()
	r.wall = time.Since(start)
	r.requests = srv.proxy.count()
	r.serverCPU, r.proxyCPU = srv.cpu()-srvCPU0, selfCPU()-selfCPU0
	if ps := cmd.ProcessState; ps != nil {
		r.rssMiB = float64(maxRSSKiB(ps)) / 1024 // an upper bound, see above
		r.cpu = ps.UserTime() + ps.SystemTime()
	}
	if data, err := os.ReadFile(usage); err == nil {
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		var kib int64
		var user, sys float64
		if _, err := fmt.Sscanf(lines[len(lines)-1], "%d %f %f", &kib, &user, &sys); err == nil {
			r.rssMiB = float64(kib) / 1024
			r.cpu = time.Duration((user + sys) * float64(time.Second))
		}
	}
	if runErr != nil {
		msg := strings.TrimSpace(stderr.String())
		if len(msg) > 300 {
			msg = msg[len(msg)-300:]
		}
		r.err = fmt.Sprintf("%v: %s", runErr, msg)
		log.Printf("%s / %s failed: %s", sc.name, t.name, r.err)
	} else if sc.verify != nil {
		if err := sc.verify(o, srv, t, round); err != nil {
			r.err = err.Error()
			log.Printf("%s / %s: %s", sc.name, t.name, r.err)
		}
	}
	if sc.cleanup != nil {
		sc.cleanup(o, srv, t, round)
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

// summary is the runs of one tool on one scenario over all rounds.
type summary struct {
	scenario, tool string
	walls          []float64
	requests       int64 // of the median run
	rss            float64
	cpu, srvCPU    float64 // medians
	errs           []string
}

func (s *summary) median() float64 {
	w := slices.Clone(s.walls)
	slices.Sort(w)
	if len(w) == 0 {
		return 0
	}
	if len(w)%2 == 1 {
		return w[len(w)/2]
	}
	return (w[len(w)/2-1] + w[len(w)/2]) / 2
}

func medianOf(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[len(v)/2]
}

func report(o options, tools []tool, results []result, workerText string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "flotta-device-worker bench, %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine: %s\n", machine())
	if len(results) > 0 {
		srvDesc := fmt.Sprintf("versitygw (posix backend, keep-alive %v)", o.keepAlive)
		if o.server == "minio" {
			srvDesc = "MinIO (single drive)"
		}
		fmt.Fprintf(&b, "server: %s on 127.0.0.1 behind a counting proxy; concurrency %d for every tool; %d round(s), tools interleaved\n", srvDesc, o.concurrency, o.rounds)
		fmt.Fprintf(&b, "wall s: median (min-max over rounds); cpu s: the tool's user+sys; server cpu s: the server's meanwhile; x flotta: median wall / flotta's median wall\n\n")
	}

	var order []string
	byKey := map[[2]string]*summary{}
	for _, r := range results {
		if r.skipped {
			continue
		}
		k := [2]string{r.scenario, r.tool}
		s := byKey[k]
		if s == nil {
			s = &summary{scenario: r.scenario, tool: r.tool}
			byKey[k] = s
			if !slices.Contains(order, r.scenario) {
				order = append(order, r.scenario)
			}
		}
		if r.err != "" {
			s.errs = append(s.errs, r.err)
			continue
		}
		s.walls = append(s.walls, r.wall.Seconds())
		s.rss = max(s.rss, r.rssMiB)
		s.requests = max(s.requests, r.requests)
	}
	cpus := map[[2]string][2][]float64{}
	for _, r := range results {
		if r.skipped || r.err != "" {
			continue
		}
		k := [2]string{r.scenario, r.tool}
		c := cpus[k]
		c[0] = append(c[0], r.cpu.Seconds())
		c[1] = append(c[1], r.serverCPU.Seconds())
		cpus[k] = c
	}
	if len(results) == 0 {
		order = nil // only worker scenarios ran: no table
	}
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	if len(order) > 0 {
		fmt.Fprintln(w, "scenario\ttool\twall s\tS3 requests\tpeak RSS MiB\tcpu s\tserver cpu s\tx flotta\tnote\t")
	}
	for _, sc := range order {
		f := byKey[[2]string{sc, "flotta"}]
		for _, t := range tools {
			s := byKey[[2]string{sc, t.name}]
			if s == nil {
				continue
			}
			wall, ratio := "-", "-"
			if len(s.walls) > 0 {
				wall = fmt.Sprintf("%.2f", s.median())
				if len(s.walls) > 1 {
					wall += fmt.Sprintf(" (%.2f-%.2f)", slices.Min(s.walls), slices.Max(s.walls))
				}
				if f != nil && len(f.walls) > 0 && f.median() > 0 {
					ratio = fmt.Sprintf("%.2f", s.median()/f.median())
				}
			}
			c := cpus[[2]string{sc, t.name}]
			note := ""
			if len(s.errs) > 0 {
				note = fmt.Sprintf("%d/%d runs failed: %s", len(s.errs), len(s.errs)+len(s.walls), s.errs[0])
				if len(note) > 90 {
					note = note[:90] + "..."
				}
			}
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\t%.1f\t%.2f\t%.2f\t%s\t%s\t\n", sc, t.name, wall, s.requests, s.rss,
				medianOf(c[0]), medianOf(c[1]), ratio, note)
		}
	}
	w.Flush()
	b.WriteString(workerText)
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
