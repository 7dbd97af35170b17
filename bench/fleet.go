package main

// The fleet simulation: N devices, each the real engine (datasync.Engine with
// its own journal, its own directories, one egress and one ingress mapping)
// in this process, against one MinIO on loopback; then the same devices as a
// model of the original agent (every 15 s, a LIST of each mapping's prefix,
// see legacyDevice). For each model it measures, at the server:
//
//   - the requests per second while the fleet is idle, by kind, counted by a
//     reverse proxy in front of MinIO that every device talks to (and
//     cross-checked against a counter in each device's own transport);
//   - MinIO's CPU over the same window (utime+stime from /proc/<pid>/stat);
//   - the time for one object put under the shared ingress prefix to reach
//     every device (its file appears in the device's ingress directory,
//     polled by this process), p50/p95/max, and the requests that burst
//     cost.
//
//	go run ./bench fleet [-fleet-n 200] [-fleet-idle 90s] [-out bench/results/x.txt]

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3server"
)

const fleetBucket = "fleet"

// fleetOptions are the flags of `bench fleet`.
type fleetOptions struct {
	n        int           // devices
	files    int           // files in each egress source
	shared   int           // objects seeded under the shared ingress prefix
	baseline time.Duration // MinIO's CPU with no client, measured before the devices start
	ramp     time.Duration // devices start spread over this long, as a fleet boots at random times
	settle   time.Duration // wait after the fleet is in sync before the idle window
	idle     time.Duration // the idle window
	wait     time.Duration // longest wait for the fleet to sync, and for the published object
	interval time.Duration // the legacy model's interval (the engine keeps its own default)
	models   string        // "engine,legacy" or one of them
	repo     string
	workDir  string
	out      string
}

func fleetMain(args []string) {
	var o fleetOptions
	fs := flag.NewFlagSet("fleet", flag.ExitOnError)
	fs.IntVar(&o.n, "fleet-n", 200, "simulated devices")
	fs.IntVar(&o.files, "fleet-files", 5, "files in each device's egress source")
	fs.IntVar(&o.shared, "fleet-shared", 5, "objects seeded under the shared ingress prefix (one LIST page holds 1,000)")
	fs.DurationVar(&o.baseline, "fleet-baseline", 20*time.Second, "window over which MinIO's CPU is measured with no client, before the devices start")
	fs.DurationVar(&o.ramp, "fleet-ramp", 15*time.Second, "devices start spread evenly over this long")
	fs.DurationVar(&o.settle, "fleet-settle", 20*time.Second, "wait after the fleet is in sync before the idle window opens")
	fs.DurationVar(&o.idle, "fleet-idle", 90*time.Second, "the idle window over which requests and server CPU are measured")
	fs.DurationVar(&o.wait, "fleet-wait", 10*time.Minute, "longest wait for the fleet to get in sync, and for the published object to reach every device")
	fs.DurationVar(&o.interval, "fleet-legacy-interval", 15*time.Second, "the legacy model's interval between LISTs of a mapping")
	fs.StringVar(&o.models, "fleet-models", "engine,legacy", "models to run: engine (datasync.Engine), legacy (the original agent's 2 LISTs per device every interval)")
	fs.StringVar(&o.repo, "repo", ".", "repository root (bin/minio lives there)")
	fs.StringVar(&o.workDir, "dir", "", "work directory (default: a new temporary directory, removed at the end)")
	fs.StringVar(&o.out, "out", "", "also write the table to this file")
	_ = fs.Parse(args)
	if err := runFleet(o); err != nil {
		log.Fatalf("bench fleet: %v", err)
	}
}

// fleetResult is one model's figures.
type fleetResult struct {
	model     string
	syncWall  time.Duration    // start of the first device until the fleet was in sync
	idle      time.Duration    // the measured idle window
	idleReqs  map[string]int64 // requests by kind at the proxy over the window
	idleSum   int64            // requests the devices' own counters saw over the window
	serverCPU time.Duration    // MinIO's utime+stime over the window
	selfCPU   time.Duration    // this process (devices and proxy) over the window
	lat       []float64        // seconds, per device: publish until the file was seen, sorted
	missing   int              // devices the object did not reach within -fleet-wait
	burstReqs map[string]int64 // requests by kind from the publish until the last arrival
	burstCPU  time.Duration    // MinIO's CPU over the same time
	rssMiB    float64          // this process's resident set at the end of the window
	heapMiB   float64          //
	routines  int              // goroutines at the end of the window
	conns     int64            // connections the proxy accepted from the start of the model to the end of the window
	proxyErrs int64            // requests the proxy could not complete, same span
}

func runFleet(o fleetOptions) error {
	if o.n <= 0 || o.idle <= 0 || o.shared <= 0 {
		return errors.New("-fleet-n, -fleet-idle and -fleet-shared must be positive")
	}
	if o.workDir == "" {
		d, err := os.MkdirTemp("", "flotta-fleet-")
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
	srv, err := startFleetServer(o)
	if err != nil {
		return err
	}
	defer srv.stop()
	direct, err := srv.minio.Client() // straight at MinIO: not counted
	if err != nil {
		return err
	}
	for i := range o.shared {
		if err := putSmall(direct, fleetBucket, seedKey(i), []byte(seedKey(i)+"\n")); err != nil {
			return err
		}
	}
	// MinIO's own background work (scanner, metrics), to tell it apart
	// from what the devices cost.
	cpu0 := srv.cpu()
	time.Sleep(o.baseline)
	base := fleetBaseline{window: o.baseline, cpu: srv.cpu() - cpu0, reqs: total(srv.proxy.snapshot())}
	log.Printf("fleet: MinIO with no client used %s of CPU in %s", base.cpu, o.baseline)
	var results []fleetResult
	for _, model := range strings.Split(o.models, ",") {
		if model != "engine" && model != "legacy" {
			return fmt.Errorf("-fleet-models: unknown model %q", model)
		}
		log.Printf("fleet %s: %d devices", model, o.n)
		r, err := runFleetModel(o, srv, direct, model)
		if err != nil {
			return fmt.Errorf("%s: %w", model, err)
		}
		results = append(results, r)
		runtime.GC()
	}
	return fleetReport(o, base, results)
}

// fleetBaseline is MinIO with no client.
type fleetBaseline struct {
	window time.Duration
	cpu    time.Duration
	reqs   int64 // requests the proxy saw meanwhile (0: nothing but MinIO itself)
}

func seedKey(i int) string { return fmt.Sprintf("shared/seed-%05d", i) }

// device is one simulated device's directories and request counter.
type device struct {
	name     string
	root     string // its /export
	out, in  string // egress source, ingress destination
	stateDir string
	counter  *s3client.Counter
}

func runFleetModel(o fleetOptions, srv *fleetServer, direct *minio.Client, model string) (fleetResult, error) {
	r := fleetResult{model: model, idle: o.idle}
	devs := make([]*device, o.n)
	for i := range devs {
		// The counter exists before the device starts: the bench reads it
		// while the device's goroutines fill in Next.
		d := &device{name: fmt.Sprintf("dev-%04d", i), counter: &s3client.Counter{}}
		base := filepath.Join(o.workDir, model, d.name)
		d.root, d.stateDir = filepath.Join(base, "export"), filepath.Join(base, "state")
		d.out, d.in = filepath.Join(d.root, "out"), filepath.Join(d.root, "in")
		for _, dir := range []string{d.out, d.in, d.stateDir} {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return r, err
			}
		}
		for j := range o.files {
			if err := os.WriteFile(filepath.Join(d.out, fmt.Sprintf("f-%03d", j)), fmt.Appendf(nil, "%s %d\n", d.name, j), 0o644); err != nil {
				return r, err
			}
		}
		devs[i] = d
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var engines []*datasync.Engine
	var mu sync.Mutex
	stop := func() {
		cancel()
		wg.Wait()
		for _, e := range engines {
			_ = e.Close()
		}
	}
	defer stop()
	logger := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.Lock(os.Stderr), zap.WarnLevel))
	conns0, errs0 := srv.proxy.conns.Load(), srv.proxy.errs.Load()
	start := time.Now()
	for i, d := range devs {
		at := time.Duration(i) * o.ramp / time.Duration(o.n)
		wg.Go(func() {
			select {
			case <-time.After(time.Until(start.Add(at))):
			case <-ctx.Done():
				return
			}
			var err error
			if model == "engine" {
				var e *datasync.Engine
				if e, err = startEngineDevice(ctx, srv, d, logger); err == nil {
					mu.Lock()
					engines = append(engines, e)
					mu.Unlock()
					_ = e.Run(ctx)
				}
			} else {
				err = legacyDevice(ctx, srv, d, o.interval)
			}
			if err != nil {
				log.Printf("%s: %v", d.name, err)
			}
		})
	}

	// In sync: every device holds the seeded objects and every egress
	// object is in the bucket.
	deadline := start.Add(o.wait)
	for {
		n, err := countObjects(direct, "devices/"+model+"/")
		if err != nil {
			return r, err
		}
		have := allHave(devs, o.shared)
		if n == o.n*o.files && have == o.n {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("fleet not in sync after %s: %d of %d egress objects, %d of %d devices hold the shared objects",
				o.wait, n, o.n*o.files, have, o.n)
		}
		time.Sleep(500 * time.Millisecond)
	}
	r.syncWall = time.Since(start)
	log.Printf("fleet %s: in sync after %s; settling %s, then idle for %s", model, r.syncWall.Round(time.Millisecond), o.settle, o.idle)
	time.Sleep(o.settle)

	// The idle window.
	req0, sum0 := srv.proxy.snapshot(), sumCounters(devs)
	cpu0, self0 := srv.cpu(), selfCPU()
	time.Sleep(o.idle)
	r.idleReqs = diff(srv.proxy.snapshot(), req0)
	r.idleSum = sumCounters(devs) - sum0
	r.serverCPU, r.selfCPU = srv.cpu()-cpu0, selfCPU()-self0
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r.heapMiB, r.rssMiB, r.routines = float64(ms.HeapInuse)/(1<<20), selfRSSMiB(), runtime.NumGoroutine()
	r.conns, r.proxyErrs = srv.proxy.conns.Load()-conns0, srv.proxy.errs.Load()-errs0
	log.Printf("fleet %s: idle %s: %v requests, server cpu %s", model, o.idle, r.idleReqs, r.serverCPU)

	// One object published under the shared prefix, watched for on every
	// device.
	name := "pub-" + model
	req0, cpu0 = srv.proxy.snapshot(), srv.cpu()
	if err := putSmall(direct, fleetBucket, "shared/"+name, []byte("shared/"+name+"\n")); err != nil {
		return r, err
	}
	published := time.Now()
	seen := make([]time.Duration, o.n)
	left := o.n
	for left > 0 && time.Since(published) < o.wait {
		time.Sleep(50 * time.Millisecond)
		now := time.Since(published)
		for i, d := range devs {
			if seen[i] == 0 {
				if _, err := os.Stat(filepath.Join(d.in, name)); err == nil {
					seen[i] = now
					left--
				}
			}
		}
	}
	r.burstReqs, r.burstCPU = diff(srv.proxy.snapshot(), req0), srv.cpu()-cpu0
	for _, s := range seen {
		if s > 0 {
			r.lat = append(r.lat, s.Seconds())
		}
	}
	r.missing = left
	slices.Sort(r.lat)
	log.Printf("fleet %s: published object reached %d of %d devices; burst %v", model, len(r.lat), o.n, r.burstReqs)
	return r, nil
}

// startEngineDevice configures one device's engine: the options set here
// are the ones a fleet device differs in (its own state, a counted
// transport); everything else is the engine's default.
func startEngineDevice(ctx context.Context, srv *fleetServer, d *device, logger *zap.Logger) (*datasync.Engine, error) {
	e, err := datasync.New(datasync.Options{
		StateDir:      d.stateDir,
		WrapTransport: d.counter.Wrap,
	}, logger.With(zap.String("device", d.name)))
	if err != nil {
		return nil, err
	}
	ep := &datasync.Endpoint{Host: srv.host, Port: srv.port, Region: s3server.Region, AccessKey: accessKey, SecretKey: secretKey}
	err = e.Configure(ep, []datasync.Mapping{
		{ID: d.name + "-out", Direction: datasync.Egress, Root: d.root, LocalDir: d.out, Bucket: fleetBucket, Prefix: "devices/engine/" + d.name},
		{ID: d.name + "-in", Direction: datasync.Ingress, Root: d.root, LocalDir: d.in, Bucket: fleetBucket, Prefix: "shared"},
	})
	if err != nil {
		_ = e.Close()
		return nil, err
	}
	return e, nil
}

// legacyDevice models the original agent: every interval (from its start,
// which -fleet-ramp spreads, plus up to 10% jitter) it lists the egress prefix and uploads the
// local files missing there, and lists the shared ingress prefix and
// downloads the objects it does not hold yet: 1 LIST per mapping per
// interval, 2 per device, and per new object the HEAD and GET of minio-go's
// FGetObject.
func legacyDevice(ctx context.Context, srv *fleetServer, d *device, interval time.Duration) error {
	c, err := minio.New(net.JoinHostPort(srv.host, fmt.Sprint(srv.port)), &minio.Options{
		Creds: credentials.NewStaticV4(accessKey, secretKey, ""), Region: s3server.Region, Transport: d.counter.Wrap(http.DefaultTransport.(*http.Transport).Clone()),
	})
	if err != nil {
		return err
	}
	egress := "devices/legacy/" + d.name + "/"
	held := map[string]string{} // ingress key -> ETag downloaded
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		if err := legacyEgress(ctx, c, d, egress); err != nil && ctx.Err() == nil {
			log.Printf("%s egress: %v", d.name, err)
		}
		if err := legacyIngress(ctx, c, d, held); err != nil && ctx.Err() == nil {
			log.Printf("%s ingress: %v", d.name, err)
		}
		timer.Reset(interval + time.Duration(rand.Int64N(int64(interval)/10+1)))
	}
}

func legacyEgress(ctx context.Context, c *minio.Client, d *device, prefix string) error {
	remote := map[string]int64{}
	for obj := range c.ListObjects(ctx, fleetBucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		remote[strings.TrimPrefix(obj.Key, prefix)] = obj.Size
	}
	entries, err := os.ReadDir(d.out)
	if err != nil {
		return err
	}
	for _, ent := range entries {
		info, err := ent.Info()
		if err != nil || !info.Mode().IsRegular() {
			continue
		}
		if size, ok := remote[ent.Name()]; ok && size == info.Size() {
			continue
		}
		if _, err := c.FPutObject(ctx, fleetBucket, prefix+ent.Name(), filepath.Join(d.out, ent.Name()), minio.PutObjectOptions{}); err != nil {
			return err
		}
	}
	return nil
}

func legacyIngress(ctx context.Context, c *minio.Client, d *device, held map[string]string) error {
	for obj := range c.ListObjects(ctx, fleetBucket, minio.ListObjectsOptions{Prefix: "shared/", Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		if held[obj.Key] == obj.ETag {
			continue
		}
		rel := strings.TrimPrefix(obj.Key, "shared/")
		tmp := filepath.Join(d.in, "."+rel+".part")
		if err := c.FGetObject(ctx, fleetBucket, obj.Key, tmp, minio.GetObjectOptions{}); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(d.in, rel)); err != nil {
			return err
		}
		held[obj.Key] = obj.ETag
	}
	return nil
}

// fleetServer is MinIO with a request-classifying proxy in front of it.
type fleetServer struct {
	minio *s3server.Server
	proxy *classifyingProxy
	ln    net.Listener
	host  string // the proxy's address: what every device talks to
	port  int
}

func startFleetServer(o fleetOptions) (*fleetServer, error) {
	m, err := s3server.StartMinIO(s3server.Options{
		Binary:  filepath.Join(o.repo, "bin", "minio"),
		Dir:     filepath.Join(o.workDir, "minio"),
		Buckets: []string{fleetBucket},
	})
	if err != nil {
		return nil, err
	}
	target, _ := url.Parse(m.URL())
	p := &classifyingProxy{rp: httputil.NewSingleHostReverseProxy(target)}
	p.rp.Transport = &http.Transport{MaxIdleConnsPerHost: 1024, DisableCompression: true}
	p.rp.FlushInterval = -1 // notification streams pass through as they come
	p.rp.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		// Mostly a client that gave up on a request (its progress
		// deadline under load): counted, not logged one by one.
		p.errs.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		m.Stop()
		return nil, err
	}
	hs := &http.Server{Handler: p, ConnState: func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			p.conns.Add(1)
		}
	}}
	go hs.Serve(ln)
	a := ln.Addr().(*net.TCPAddr)
	return &fleetServer{minio: m, proxy: p, ln: ln, host: a.IP.String(), port: a.Port}, nil
}

// cpu is MinIO's user+system time so far.
func (s *fleetServer) cpu() time.Duration {
	d, err := procCPU(s.minio.Pid())
	if err != nil {
		log.Printf("server cpu: %v", err)
	}
	return d
}

func (s *fleetServer) stop() {
	s.ln.Close()
	s.minio.Stop()
}

// requestKinds are what classifyingProxy counts, in report order.
var requestKinds = []string{"LIST", "GET", "HEAD", "PUT", "POST", "DELETE", "LISTEN", "other"}

// classifyingProxy forwards to the server and counts what it forwards, by
// kind: LIST (ListObjects), LISTEN (a bucket notification stream), GET,
// HEAD, PUT, POST, DELETE of objects, other (bucket-level requests).
type classifyingProxy struct {
	rp    *httputil.ReverseProxy
	n     [8]atomic.Int64 // by index in requestKinds
	conns atomic.Int64    // connections accepted
	errs  atomic.Int64    // requests not completed (client gone, server unreachable)
}

func (p *classifyingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.n[slices.Index(requestKinds, requestKind(r))].Add(1)
	p.rp.ServeHTTP(w, r)
}

func requestKind(r *http.Request) string {
	q := r.URL.Query()
	object := strings.Count(strings.Trim(r.URL.Path, "/"), "/") > 0 // /bucket/key
	switch {
	case q.Has("events"):
		return "LISTEN"
	case r.Method == http.MethodGet && !object && (q.Has("list-type") || q.Has("prefix") || len(q) == 0):
		return "LIST"
	case !object:
		return "other"
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodPost, http.MethodDelete:
		return r.Method
	}
	return "other"
}

func (p *classifyingProxy) snapshot() map[string]int64 {
	m := map[string]int64{}
	for i, k := range requestKinds {
		m[k] = p.n[i].Load()
	}
	return m
}

func diff(a, b map[string]int64) map[string]int64 {
	m := map[string]int64{}
	for k, v := range a {
		if d := v - b[k]; d != 0 {
			m[k] = d
		}
	}
	return m
}

func total(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func sumCounters(devs []*device) int64 {
	var n int64
	for _, d := range devs {
		n += d.counter.Requests()
	}
	return n
}

// allHave counts the devices whose ingress directory holds at least files
// files (temporary files of a download in flight start with a dot).
func allHave(devs []*device, files int) int {
	n := 0
	for _, d := range devs {
		entries, _ := os.ReadDir(d.in)
		have := 0
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				have++
			}
		}
		if have >= files {
			n++
		}
	}
	return n
}

func countObjects(c *minio.Client, prefix string) (int, error) {
	n := 0
	for obj := range c.ListObjects(context.Background(), fleetBucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return 0, obj.Err
		}
		n++
	}
	return n, nil
}

func selfRSSMiB() float64 {
	data, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			var kib float64
			fmt.Sscanf(strings.TrimSpace(v), "%f", &kib)
			return kib / 1024
		}
	}
	return 0
}

// pct is percentile, 0 when no device got the object.
func pct(sorted []float64, p int) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return percentile(sorted, p)
}

func fleetReport(o fleetOptions, base fleetBaseline, results []fleetResult) error {
	var b strings.Builder
	fmt.Fprintf(&b, "flotta-device-worker fleet simulation, %s\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "machine: %s; load average at the end: %s\n", machine(), loadAvg())
	fmt.Fprintf(&b, "server: one MinIO (single drive) on 127.0.0.1 behind a counting reverse proxy; %d devices in one process, started over %s;\n", o.n, o.ramp)
	fmt.Fprintf(&b, "each device: 1 egress mapping (%d files of its own) + 1 ingress mapping (one shared prefix, %d objects seeded);\n", o.files, o.shared)
	fmt.Fprintf(&b, "idle window %s, opened %s after the fleet was in sync; engine: datasync defaults; legacy: LIST of each mapping every %s + up to 10%% jitter\n\n", o.idle, o.settle, o.interval)
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "model\tidle req/s\tLIST/s\tby kind (idle window)\tdevice counters\treq/device/day\tserver cpu % of a core\tbench cpu %\tpublish p50 s\tp95 s\tmax s\tmissing\tburst requests\tburst server cpu s\t")
	for _, r := range results {
		secs := r.idle.Seconds()
		reqs := total(r.idleReqs)
		var kinds []string
		for _, k := range requestKinds {
			if v := r.idleReqs[k]; v > 0 {
				kinds = append(kinds, fmt.Sprintf("%s %d", k, v))
			}
		}
		var burst []string
		for _, k := range requestKinds {
			if v := r.burstReqs[k]; v > 0 {
				burst = append(burst, fmt.Sprintf("%s %d", k, v))
			}
		}
		fmt.Fprintf(w, "%s\t%.2f\t%.2f\t%s\t%d\t%.0f\t%.2f\t%.1f\t%.2f\t%.2f\t%.2f\t%d\t%s\t%.2f\t\n", r.model,
			float64(reqs)/secs, float64(r.idleReqs["LIST"])/secs, strings.Join(kinds, ", "), r.idleSum,
			float64(reqs)/secs*86400/float64(o.n), 100*r.serverCPU.Seconds()/secs, 100*r.selfCPU.Seconds()/secs,
			pct(r.lat, 50), pct(r.lat, 95), pct(r.lat, 100), r.missing,
			strings.Join(burst, ", "), r.burstCPU.Seconds())
	}
	w.Flush()
	baseCore := base.cpu.Seconds() / base.window.Seconds()
	fmt.Fprintf(&b, "\nMinIO with no client (before the devices started, %d requests meanwhile): %.2f s of CPU in %s = %.2f %% of a core\n",
		base.reqs, base.cpu.Seconds(), base.window, 100*baseCore)
	for _, r := range results {
		if n := total(r.idleReqs); n > 0 {
			net := r.serverCPU.Seconds() - baseCore*r.idle.Seconds()
			fmt.Fprintf(&b, "  %s: server CPU per idle request, net of that: %.2f ms (%.2f ms gross)\n", r.model,
				1000*net/float64(n), 1000*r.serverCPU.Seconds()/float64(n))
		}
	}
	b.WriteString("\nbench process at the end of each idle window (all devices and the proxy):\n")
	for _, r := range results {
		fmt.Fprintf(&b, "  %s: in sync %.1f s after the first start; RSS %.0f MiB, heap in use %.0f MiB, %d goroutines, %d connections accepted by the proxy, %d requests not completed (client gave up)\n",
			r.model, r.syncWall.Seconds(), r.rssMiB, r.heapMiB, r.routines, r.conns, r.proxyErrs)
	}
	fmt.Print(b.String())
	if o.out != "" {
		if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(o.out, []byte(b.String()), 0o644)
	}
	return nil
}

func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(data))
	return strings.Join(f[:min(3, len(f))], " ")
}
