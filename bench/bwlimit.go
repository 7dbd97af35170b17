package main

import (
	"fmt"
	"log"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
)

// The bandwidth scenarios (-only bwlimit, or -bwlimit) measure how closely
// flotta-sync --bwlimit holds the bytes on the wire to the limit: the
// counting proxy counts the bytes of every TCP connection (requests in,
// responses out: what the client's paced connections carry, headers and
// all), corrected by the kernel's socket queues so that the figures are what
// the client wrote and read (sockqueue.go), sampled every 100 ms, and every
// 10 s window inside the transfer (from its first byte to its last) is
// compared with the limit. Small files
// and one big file (multipart parts) go up, then come down. Without a
// limit, the same transfers are timed with this flotta-sync and, given
// -bw-baseline-rev, with flotta-sync built from that revision, interleaved
// round by round.

// bwOptions are the bandwidth scenarios' flags.
type bwOptions struct {
	run         bool          // -bwlimit
	rate        string        // limit of the big-file scenarios
	smallRate   string        // limit of the small-file scenarios
	seconds     time.Duration // target duration of each limited transfer
	baselineRev string        // git revision to build the unlimited baseline from
	timetable   bool          // also run a timetable switch while running
}

// bwSelected reports whether the bandwidth scenarios run.
func bwSelected(o options) bool { return o.bw.run || strings.Contains(o.only, "bwlimit") }

// byteCounter counts the bytes of every connection the proxy accepts.
type byteCounter struct{ up, down atomic.Int64 }

type countingListener struct {
	net.Listener
	c *byteCounter
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countedConn{c, l.c}, nil
}

type countedConn struct {
	net.Conn
	c *byteCounter
}

func (c countedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.c.up.Add(int64(n))
	return n, err
}

func (c countedConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.c.down.Add(int64(n))
	return n, err
}

// sample is the proxy's byte counts at t since the start of a run.
type sample struct {
	t        time.Duration
	up, down int64
}

// sampler records the counts every 100 ms until stopped.
type sampler struct {
	stop    chan struct{}
	done    sync.WaitGroup
	samples []sample
	dropped int // samples that took too long to take
}

// startSampler samples what the clients of port wrote (up) and read (down):
// the proxy's counts corrected by the kernel's socket queues.
func startSampler(c *byteCounter, port uint16) *sampler {
	s := &sampler{stop: make(chan struct{})}
	start := time.Now()
	take := func() {
		t := time.Since(start)
		up, down := c.up.Load(), c.down.Load()
		q, err := socketQueues(port)
		if err != nil {
			log.Printf("bwlimit: socket queues: %v (counting at the proxy only)", err)
		}
		// A sample taken over more than 10 ms (this process descheduled on
		// a loaded machine) does not say where the counts were at t: drop it.
		if time.Since(start)-t > 10*time.Millisecond {
			s.dropped++
			return
		}
		s.samples = append(s.samples, sample{t, up + q.serverRecv + q.clientSend, down - q.serverSend - q.clientRecv})
	}
	take()
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-s.stop:
				take()
				return
			case <-t.C:
				take()
			}
		}
	}()
	return s
}

func (s *sampler) finish() []sample {
	close(s.stop)
	s.done.Wait()
	return s.samples
}

// windowStats are the 10 s windows of one direction of one run.
type windowStats struct {
	windows        int
	min, max       float64 // bytes per second
	average        float64 // over the whole transfer
	active         time.Duration
	total          int64
	minDev, maxDev float64 // relative to the limit, in %
}

const window = 10 * time.Second

// windows computes the 10 s windows of direction down (else up) between
// the first and the last byte, sliding by one sample.
func windows(samples []sample, down bool, limit float64) windowStats {
	at := func(i int) int64 {
		if down {
			return samples[i].down
		}
		return samples[i].up
	}
	last := len(samples) - 1
	first := 0
	for first < last && at(first+1) == at(0) {
		first++ // the last sample before the first byte
	}
	end := last
	for end > 0 && at(end-1) == at(last) {
		end-- // the first sample after the last byte
	}
	ws := windowStats{min: math.Inf(1), max: math.Inf(-1), total: at(end) - at(first), active: samples[end].t - samples[first].t}
	if ws.active > 0 {
		ws.average = float64(ws.total) / ws.active.Seconds()
	}
	for i := first; i <= end; i++ {
		j := i
		for j <= end && samples[j].t-samples[i].t < window {
			j++
		}
		if j > end {
			break
		}
		r := float64(at(j)-at(i)) / (samples[j].t - samples[i].t).Seconds()
		ws.windows++
		ws.min, ws.max = min(ws.min, r), max(ws.max, r)
	}
	if ws.windows > 0 && limit > 0 {
		ws.minDev, ws.maxDev = (ws.min/limit-1)*100, (ws.max/limit-1)*100
	}
	return ws
}

// bwRun is one flotta-sync run of the bandwidth scenarios.
type bwRun struct {
	name    string
	binary  string // which flotta-sync
	limit   string // --bwlimit, "" for none
	push    bool
	src     string // push: directory; pull: prefix in the source bucket
	prefix  string // push: the prefix it uploaded to
	files   int
	bytes   int64
	wall    time.Duration
	samples []sample
	dropped int
}

func runBandwidth(o options, srv *server) (string, error) {
	bo := o.bw
	rate, err := bwlimit.ParseRate(bo.rate)
	if err != nil {
		return "", fmt.Errorf("-bw-rate: %w", err)
	}
	smallRate, err := bwlimit.ParseRate(bo.smallRate)
	if err != nil {
		return "", fmt.Errorf("-bw-small-rate: %w", err)
	}
	// Sizes for about bo.seconds at the limit: a 4 KiB PUT or GET carries
	// about 1 KiB of headers besides its body.
	smallN := int(float64(smallRate) * bo.seconds.Seconds() / float64(o.fileSize+1024))
	bigBytes := int64(float64(rate)*bo.seconds.Seconds()) &^ (1<<20 - 1)
	small := filepath.Join(o.workDir, "bw", fmt.Sprintf("small-%d", smallN))
	big := filepath.Join(o.workDir, "bw", fmt.Sprintf("big-%d", bigBytes>>20))
	log.Printf("bwlimit: preparing %d x %d B and one %d MiB file", smallN, o.fileSize, bigBytes>>20)
	if err := makeFiles(small, smallN, o.fileSize); err != nil {
		return "", err
	}
	if err := makeBigFile(filepath.Join(big, "big.bin"), bigBytes); err != nil {
		return "", err
	}
	current := filepath.Join(o.repo, "bin", "flotta-sync")
	if _, err := os.Stat(current); err != nil {
		return "", fmt.Errorf("bwlimit: %w (run make build)", err)
	}
	baseline := ""
	if bo.baselineRev != "" {
		if baseline, err = buildBaseline(o, bo.baselineRev); err != nil {
			return "", err
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "\nbandwidth limit: bin/flotta-sync --bwlimit through the counting proxy, which counts the bytes of every TCP connection\n")
	fmt.Fprintf(&b, "(requests in = up, responses out = down: headers included, as the limiter paces them), corrected by the kernel's socket\n")
	fmt.Fprintf(&b, "queues (inet_diag) to what the client itself wrote and read, sampled every 100 ms (a sample that took over 10 ms is dropped);\n")
	fmt.Fprintf(&b, "windows: every 10 s window (sliding by 100 ms) between the first and the last byte of the run; deviation from the limit\n")
	fmt.Fprintf(&b, "concurrency %d; %d small files of %d B (%s), one big file of %d MiB (multipart, %s)\n\n", o.concurrency, smallN, o.fileSize, bo.smallRate, bigBytes>>20, bo.rate)

	// Limited: small files up, then down (from what went up), then the big file.
	limited := []bwRun{
		{name: "push small files", limit: bo.smallRate, push: true, src: small, files: smallN, bytes: int64(smallN) * int64(o.fileSize)},
		{name: "pull small files", limit: bo.smallRate, files: smallN, bytes: int64(smallN) * int64(o.fileSize)},
		{name: "push big file", limit: bo.rate, push: true, src: big, files: 1, bytes: bigBytes},
		{name: "pull big file", limit: bo.rate, files: 1, bytes: bigBytes},
	}
	type limitedResult struct {
		ws  windowStats
		lim float64
	}
	var lres []limitedResult
	for i := range limited {
		r := &limited[i]
		r.binary = current
		if err := bwExecute(o, srv, r, "bw-source"); err != nil {
			return "", err
		}
		if r.push {
			limited[i+1].src = r.prefix // the pull that follows downloads what went up
		}
		lim := float64(smallRate)
		if strings.Contains(r.name, "big") {
			lim = float64(rate)
		}
		ws := windows(r.samples, !r.push, lim)
		lres = append(lres, limitedResult{ws, lim})
		log.Printf("bwlimit %-18s %s: %d windows, %s..%s (%+.2f%% .. %+.2f%%), wall %s", r.name, r.limit, ws.windows,
			rateStr(ws.min), rateStr(ws.max), ws.minDev, ws.maxDev, r.wall.Round(time.Millisecond))
	}
	var timetableText string
	if bo.timetable {
		if timetableText, err = bwTimetable(o, srv, current, big, bigBytes); err != nil {
			return "", err
		}
	}

	// Unlimited: the same transfers without --bwlimit, this build against
	// the baseline, alternating which goes first.
	bins := []struct{ name, path string }{{"this build", current}}
	if baseline != "" {
		bins = append(bins, struct{ name, path string }{"baseline " + bo.baselineRev, baseline})
	}
	type key struct{ scenario, bin string }
	walls := map[key][]float64{}
	rates := map[key][]float64{}
	var order []string
	for round := 0; round < o.rounds; round++ {
		for _, proto := range limited {
			if !slices.Contains(order, proto.name) {
				order = append(order, proto.name)
			}
			for k := range bins {
				bin := bins[(k+round)%len(bins)]
				r := proto
				r.binary, r.limit = bin.path, ""
				if err := bwExecute(o, srv, &r, "bw-source"); err != nil {
					return "", err
				}
				ws := windows(r.samples, !r.push, 0)
				kk := key{r.name, bin.name}
				walls[kk] = append(walls[kk], r.wall.Seconds())
				rates[kk] = append(rates[kk], ws.average)
				log.Printf("bwlimit unlimited round %d %-18s %-22s wall %s, %s on the wire", round, r.name, bin.name, r.wall.Round(time.Millisecond), rateStr(ws.average))
			}
		}
	}
	// The limited runs, with the headroom: how much faster this build goes
	// without a limit (below 1, the limit is not what holds it back).
	tw := newTable(&b, "limited run", "limit", "direction", "wall s", "active s", "MiB moved", "average", "10 s windows", "min", "max", "min dev %", "max dev %", "unlimited/limit", "samples dropped")
	for i, r := range limited {
		ws := lres[i].ws
		dir := map[bool]string{true: "up", false: "down"}[r.push]
		tw.row(r.name, r.limit, dir, secs(r.wall), secs(ws.active), mib(ws.total), rateStr(ws.average), fmt.Sprint(ws.windows),
			rateStr(ws.min), rateStr(ws.max), fmt.Sprintf("%+.2f", ws.minDev), fmt.Sprintf("%+.2f", ws.maxDev),
			fmt.Sprintf("%.1f", medianOf(rates[key{r.name, bins[0].name}])/lres[i].lim), fmt.Sprintf("%d/%d", r.dropped, r.dropped+len(r.samples)))
	}
	tw.flush()
	b.WriteString(timetableText)

	fmt.Fprintf(&b, "\nwithout a limit, %d round(s), binaries interleaved: wall s and wire rate, median (min-max)\n", o.rounds)
	hdr := []string{"unlimited run"}
	for _, bin := range bins {
		hdr = append(hdr, bin.name+" wall s", bin.name+" rate")
	}
	if len(bins) > 1 {
		hdr = append(hdr, "this/baseline wall")
	}
	tw = newTable(&b, hdr...)
	for _, sc := range order {
		row := []string{sc}
		for _, bin := range bins {
			w, r := walls[key{sc, bin.name}], rates[key{sc, bin.name}]
			row = append(row, fmt.Sprintf("%.2f (%.2f-%.2f)", medianOf(w), slices.Min(w), slices.Max(w)),
				fmt.Sprintf("%s (%s-%s)", rateStr(medianOf(r)), rateStr(slices.Min(r)), rateStr(slices.Max(r))))
		}
		if len(bins) > 1 {
			row = append(row, fmt.Sprintf("%.2f", medianOf(walls[key{sc, bins[0].name}])/medianOf(walls[key{sc, bins[1].name}])))
		}
		tw.row(row...)
	}
	tw.flush()
	return b.String(), nil
}

// bwExecute runs r once: a push into a new prefix of bucket (verified, then
// removed unless it is the limited run that seeds the pulls), or a pull of
// bucket/r.src into a new directory (verified, then removed).
func bwExecute(o options, srv *server, r *bwRun, bucket string) error {
	if err := srv.makeBucket(bucket); err != nil {
		return err
	}
	state, err := os.MkdirTemp(o.workDir, "bw-state-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(state)
	seed := r.limit != "" // the limited pushes seed the pulls
	prefix := fmt.Sprintf("%s-%d", filepath.Base(r.src), time.Now().UnixNano())
	r.prefix = prefix
	dst := filepath.Join(o.workDir, "bw-download", fmt.Sprintf("%d", time.Now().UnixNano()))
	args := []string{r.binary}
	if r.push {
		args = append(args, "push", r.src, "s3://"+bucket+"/"+prefix)
	} else {
		args = append(args, "pull", "s3://"+bucket+"/"+r.src, dst, "--min-free", "-1")
	}
	args = append(args, "--endpoint", srv.url, "--region", "us-east-1", "--state", state, "--concurrency", fmt.Sprint(o.concurrency))
	if r.limit != "" {
		args = append(args, "--bwlimit", r.limit)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(cleanEnv(), credentialsEnv()...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	sm := startSampler(srv.bytes, uint16(srv.ln.Addr().(*net.TCPAddr).Port))
	start := time.Now()
	runErr := cmd.Run()
	r.wall = time.Since(start)
	r.samples = sm.finish()
	r.dropped = sm.dropped
	if runErr != nil {
		return fmt.Errorf("%s: %v: %s", r.name, runErr, strings.TrimSpace(stderr.String()))
	}
	if r.push {
		if err := srv.verifyPrefix(bucket, prefix, r.files, r.bytes); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
		if !seed {
			_ = os.RemoveAll(filepath.Join(srv.root, bucket, prefix))
		}
		return nil
	}
	defer os.RemoveAll(dst)
	if err := verifyDir(dst, r.files, r.bytes); err != nil {
		return fmt.Errorf("%s: %w", r.name, err)
	}
	return nil
}

// bwTimetable uploads the big file under a timetable that halves the limit
// about 20 s into the run (at the next minute boundary at least 20 s away),
// and reports the 10 s windows before and after the change: the limiter
// follows the timetable while running.
func bwTimetable(o options, srv *server, bin, big string, bigBytes int64) (string, error) {
	rate, _ := bwlimit.ParseRate(o.bw.rate)
	half := rate / 2
	now := time.Now()
	switchAt := now.Truncate(time.Minute).Add(time.Minute)
	if switchAt.Sub(now) < 20*time.Second {
		switchAt = switchAt.Add(time.Minute)
	}
	before := now.Truncate(time.Minute)
	setting := fmt.Sprintf("%s,%s %s,%s", before.Format("15:04"), rate, switchAt.Format("15:04"), half)
	if before.Day() != switchAt.Day() || switchAt.Add(time.Minute).Day() != switchAt.Day() {
		return "", fmt.Errorf("timetable scenario: too close to midnight, run it again later")
	}
	// Enough data to run 20 s past the switch at the halved rate.
	need := int64((switchAt.Sub(now) + 25*time.Second).Seconds() * float64(rate))
	copies := int((need + bigBytes - 1) / bigBytes)
	dir := filepath.Join(o.workDir, "bw", fmt.Sprintf("timetable-%dx%d", copies, bigBytes>>20))
	for i := 0; i < copies; i++ {
		p := filepath.Join(dir, fmt.Sprintf("big-%d.bin", i))
		if _, err := os.Stat(p); err == nil {
			continue
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return "", err
		}
		if err := os.Link(filepath.Join(big, "big.bin"), p); err != nil { // the same content under other names: one object each
			return "", err
		}
	}
	r := bwRun{name: "push timetable", binary: bin, limit: setting, push: true, src: dir, files: copies, bytes: int64(copies) * bigBytes}
	if err := bwExecute(o, srv, &r, "bw-timetable"); err != nil {
		return "", err
	}
	_ = os.RemoveAll(filepath.Join(srv.root, "bw-timetable"))
	// The run started just after now; the switch is at switchAt - start.
	at := switchAt.Sub(now)
	var pre, post []sample
	for _, s := range r.samples {
		switch {
		case s.t <= at-500*time.Millisecond:
			pre = append(pre, s)
		case s.t >= at+time.Second:
			post = append(post, s)
		}
	}
	if len(pre) < 2 || len(post) < 2 {
		return "", fmt.Errorf("timetable scenario: the run did not span the switch")
	}
	last := func(ss []sample) float64 { // the last 10 s of ss
		j := len(ss) - 1
		i := j
		for i > 0 && ss[j].t-ss[i].t < window {
			i--
		}
		return float64(ss[j].up-ss[i].up) / (ss[j].t - ss[i].t).Seconds()
	}
	firstW := func(ss []sample) float64 { // the first 10 s of ss
		j := 0
		for j < len(ss)-1 && ss[j].t-ss[0].t < window {
			j++
		}
		return float64(ss[j].up-ss[0].up) / (ss[j].t - ss[0].t).Seconds()
	}
	b := &strings.Builder{}
	fmt.Fprintf(b, "\ntimetable while running: push of %d x %d MiB with --bwlimit %q (local time; the limit halves at %s, %.1f s into the run):\n",
		copies, bigBytes>>20, setting, switchAt.Format("15:04:05"), at.Seconds())
	fmt.Fprintf(b, "  last 10 s before the switch: %s (%+.2f %% of %s); first 10 s from 1 s after it: %s (%+.2f %% of %s); wall %.2f s\n",
		rateStr(last(pre)), (last(pre)/float64(rate)-1)*100, rate, rateStr(firstW(post)), (firstW(post)/float64(half)-1)*100, half, r.wall.Seconds())
	log.Printf("bwlimit timetable: before %s, after %s", rateStr(last(pre)), rateStr(firstW(post)))
	return b.String(), nil
}

// buildBaseline builds flotta-sync from rev (git archive of this repository)
// into the work directory, for the unlimited comparison.
func buildBaseline(o options, rev string) (string, error) {
	dir := filepath.Join(o.workDir, "baseline-"+rev)
	bin := filepath.Join(dir, "flotta-sync")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	log.Printf("bwlimit: building the baseline flotta-sync from %s", rev)
	archive := exec.Command("sh", "-c", "git -C \"$1\" archive \"$2\" | tar -x -C \"$3\"", "sh", o.repo, rev, src)
	if out, err := archive.CombinedOutput(); err != nil {
		return "", fmt.Errorf("git archive %s: %v: %s", rev, err, out)
	}
	build := exec.Command("go", "build", "-o", bin, "./cmd/flotta-sync")
	build.Dir = src
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build the baseline: %v: %s", err, out)
	}
	return bin, nil
}

// table is a tab-aligned table written to b.
type table struct{ w *tabwriter.Writer }

func newTable(b *strings.Builder, header ...string) table {
	t := table{tabwriter.NewWriter(b, 0, 0, 2, ' ', tabwriter.AlignRight)}
	t.row(header...)
	return t
}

func (t table) row(cells ...string) { fmt.Fprintln(t.w, strings.Join(cells, "\t")+"\t") }
func (t table) flush()              { t.w.Flush() }

func secs(d time.Duration) string { return fmt.Sprintf("%.2f", d.Seconds()) }
func mib(n int64) string          { return fmt.Sprintf("%.1f", float64(n)/(1<<20)) }

// rateStr formats bytes per second as MiB/s (or KiB/s below 1 MiB/s).
func rateStr(r float64) string {
	if math.IsInf(r, 0) || math.IsNaN(r) {
		return "-"
	}
	if r < 1<<20 {
		return fmt.Sprintf("%.1f KiB/s", r/(1<<10))
	}
	return fmt.Sprintf("%.3f MiB/s", r/(1<<20))
}
