// Command flotta-sync runs one pass of the device worker's sync engine:
//
//	flotta-sync push DIR s3://BUCKET/PREFIX   upload new and changed files
//	flotta-sync pull s3://BUCKET/PREFIX DIR   download new and changed objects
//	flotta-sync check DIR s3://BUCKET/PREFIX  compare, without the journal
//	flotta-sync help [COMMAND]                usage, and a command's flags
//
// It keeps the same journal as the worker (under --state), so a second run
// moves only what changed. --reconcile also compares with the other side
// (repairing objects or files deleted behind its back); --dry-run lists what
// a run would do and changes nothing. Credentials come from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY.
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// command is one of flotta-sync's commands: how it is called, what it does.
type command struct{ name, operands, what string }

// commands are listed by help in this order.
var commands = []command{
	{"push", "DIR s3://BUCKET/PREFIX", "upload new and changed files of DIR"},
	{"pull", "s3://BUCKET/PREFIX DIR", "download new and changed objects into DIR"},
	{"check", "DIR s3://BUCKET/PREFIX", "compare DIR with the prefix, without the journal"},
	{"help", "[COMMAND]", "print this help, or a command's flags"},
	{"version", "", "print the version"},
}

// version is stamped at build time (-ldflags "-X main.version=..."): the
// Makefile stamps the spec's Version.
var version = "dev"

func main() {
	// FLOTTA_SYNC_CPUPROFILE=FILE writes a CPU profile of the run (for
	// performance work: go tool pprof bin/flotta-sync FILE).
	if p := os.Getenv("FLOTTA_SYNC_CPUPROFILE"); p != "" {
		if f, err := os.Create(p); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				code := run(os.Args[1:], os.Stdout, os.Stderr)
				pprof.StopCPUProfile()
				f.Close()
				os.Exit(code)
			}
		}
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

type config struct {
	cmd         string
	dir         datasync.Direction
	local       string
	bucket      string
	prefix      string
	endpoint    string
	region      string
	caFile      string
	state       string
	concurrency int
	maxBytes    int64
	minFree     int64
	verbose     bool
	reconcile   bool
	dryRun      bool
	download    bool // check: hash objects whose ETag is no MD5 by downloading them
	bwlimit     string
	limit       bwlimit.Schedule  // parsed bwlimit
	timeouts    s3client.Timeouts // --silent-timeout, --floor-rate
}

// flags declares the flags of cmd into c; help prints them.
func flags(cmd string, c *config) *flag.FlagSet {
	fs := flag.NewFlagSet("flotta-sync "+cmd, flag.ContinueOnError)
	fs.Usage = func() {} // help goes to stdout, errors to stderr: run decides
	fs.StringVar(&c.endpoint, "endpoint", os.Getenv("AWS_ENDPOINT_URL"), "S3 endpoint URL, http:// or https:// (default $AWS_ENDPOINT_URL)")
	fs.StringVar(&c.region, "region", "us-east-1", "S3 region (\"\" discovers it)")
	fs.StringVar(&c.caFile, "ca-file", "", "PEM file of CA certificates trusted in addition to the system roots")
	fs.IntVar(&c.concurrency, "concurrency", 0, fmt.Sprintf("parallel transfers; 0 follows the link (%d to start, %d to %d)", datasync.DefaultConcurrency, datasync.MinConcurrency, datasync.DefaultMaxConcurrency))
	c.timeouts = s3client.DefaultTimeouts
	if d, err := time.ParseDuration(os.Getenv("FLOTTA_S3_SILENT_TIMEOUT")); err == nil && d > 0 {
		c.timeouts.Progress = d
	}
	if n, err := bytesize.Parse(os.Getenv("FLOTTA_S3_FLOOR_RATE")); err == nil && n > 0 {
		c.timeouts.FloorRate = n
	}
	fs.DurationVar(&c.timeouts.Progress, "silent-timeout", c.timeouts.Progress, "give a request up when the server moves nothing for this long (default $FLOTTA_S3_SILENT_TIMEOUT or 8s)")
	fs.Var(bytesize.NewValue(&c.timeouts.FloorRate), "floor-rate", "`rate` in bytes per second of the slowest link waited for: once a request is sent, its answer is awaited for --silent-timeout plus the bytes sent ahead of it at this rate (default $FLOTTA_S3_FLOOR_RATE or 16K)")
	fs.BoolVar(&c.verbose, "v", false, "log every decision (check: list matching files too)")
	if cmd == "push" || cmd == "pull" {
		fs.StringVar(&c.state, "state", "", "journal directory (default $XDG_STATE_HOME/flotta-sync or ~/.local/state/flotta-sync)")
		fs.BoolVar(&c.reconcile, "reconcile", false, "compare with the other side too: upload again objects deleted or replaced in the bucket (push), download again files deleted locally (pull); costs one LIST per 1,000 objects")
		fs.BoolVar(&c.dryRun, "dry-run", false, "list what would be uploaded, downloaded, refused or skipped for the disk guard, and change nothing")
		fs.StringVar(&c.bwlimit, "bwlimit", "", "bandwidth limit of the whole run, bytes per second on the wire: 512K, UP:DOWN as 1M:256K, or a timetable in local time as \"08:00,512K 19:00,10M 23:00,off\" (default none)")
	}
	switch cmd {
	case "pull":
		fs.Var(bytesize.NewValue(&c.maxBytes), "max-bytes", "`size` DIR may hold, e.g. 10G (0 or -1 = no quota)")
		fs.Var(bytesize.NewValue(&c.minFree), "min-free", "`size` to keep free on DIR's file system, e.g. 1G (0 = max(512M, 5%), -1 = no guard)")
	case "check":
		fs.BoolVar(&c.download, "download", false, "compare objects whose ETag is not an MD5 and records no part size by downloading and hashing them")
	}
	return fs
}

// usage writes the help of cmd, or of every command when cmd is "".
func usage(w io.Writer, cmd string) {
	fmt.Fprintln(w, "usage:")
	for _, c := range commands {
		if cmd == "" || cmd == c.name {
			fmt.Fprintf(w, "  flotta-sync %-30s %s\n", strings.TrimSpace(c.name+" "+c.operands), c.what)
		}
	}
	switch cmd {
	case "":
		fmt.Fprint(w, `
Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY. Sizes are
bytes or a number with K, M, G or T (binary: 1K = 1024; 1Ki, 1KiB, 1KB too).
Exit status: 0 done, 1 something failed or differs, 2 usage error.
"flotta-sync help COMMAND" lists a command's flags.
`)
	case "help", "version":
	default:
		fmt.Fprintln(w, "\nflags:")
		fs := flags(cmd, &config{})
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
}

// errHelp means help was asked for and printed: exit 0.
var errHelp = errors.New("help printed")

func isHelp(arg string) bool {
	return arg == "help" || arg == "-h" || arg == "-help" || arg == "--help"
}

func known(cmd string) bool {
	return slices.ContainsFunc(commands, func(c command) bool { return c.name == cmd })
}

func parse(args []string, stdout, stderr io.Writer) (*config, error) {
	if len(args) == 0 {
		usage(stderr, "")
		return nil, errors.New("missing command")
	}
	c := &config{cmd: args[0]}
	switch {
	case isHelp(c.cmd) && len(args) > 1 && known(args[1]):
		usage(stdout, args[1])
		return nil, errHelp
	case isHelp(c.cmd):
		usage(stdout, "")
		return nil, errHelp
	case c.cmd == "version" || c.cmd == "--version" || c.cmd == "-version":
		fmt.Fprintln(stdout, "flotta-sync", version)
		return nil, errHelp
	case !known(c.cmd):
		usage(stderr, "")
		return nil, fmt.Errorf("unknown command %q", c.cmd)
	}
	fs := flags(c.cmd, c)
	fs.SetOutput(io.Discard) // the error is printed once, by run
	// Flags may come before, between or after the two operands.
	var pos []string
	rest := args[1:]
	for {
		err := fs.Parse(rest)
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout, c.cmd)
			return nil, errHelp
		}
		if err != nil {
			return nil, fmt.Errorf("%w (flotta-sync help %s lists the flags)", err, c.cmd)
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		rest = fs.Args()[1:]
	}
	if len(pos) != 2 {
		usage(stderr, c.cmd)
		return nil, fmt.Errorf("%s needs two operands, got %d", c.cmd, len(pos))
	}
	var s3url string
	switch c.cmd {
	case "push", "check":
		c.dir, c.local, s3url = datasync.Egress, pos[0], pos[1]
	case "pull":
		c.dir, s3url, c.local = datasync.Ingress, pos[0], pos[1]
	}
	u, err := url.Parse(s3url)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, fmt.Errorf("%q is not s3://BUCKET/PREFIX", s3url)
	}
	c.bucket, c.prefix = u.Host, strings.Trim(u.Path, "/")
	if c.local, err = filepath.Abs(c.local); err != nil {
		return nil, err
	}
	if c.endpoint == "" {
		return nil, errors.New("--endpoint is required")
	}
	if c.limit, err = bwlimit.ParseSetting("--bwlimit", c.bwlimit); err != nil {
		return nil, err
	}
	return c, nil
}

func endpoint(c *config) (*datasync.Endpoint, error) {
	u, err := url.Parse(c.endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, fmt.Errorf("--endpoint %q: want http://HOST[:PORT] or https://HOST[:PORT]", c.endpoint)
	}
	ep := &datasync.Endpoint{Host: u.Hostname(), Secure: u.Scheme == "https", Region: c.region,
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY")}
	if p := u.Port(); p != "" {
		if ep.Port, err = strconv.Atoi(p); err != nil {
			return nil, fmt.Errorf("--endpoint port %q: %w", p, err)
		}
	}
	if ep.AccessKey == "" || ep.SecretKey == "" {
		return nil, errors.New("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set")
	}
	if c.caFile != "" {
		if ep.CAPEM, err = os.ReadFile(c.caFile); err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
	}
	return ep, nil
}

func stateDir(c *config) (string, error) {
	if c.state != "" {
		return c.state, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "flotta-sync"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no --state and no home directory: %w", err)
	}
	return filepath.Join(home, ".local", "state", "flotta-sync"), nil
}

// run runs the command; a dry run's list, check's report and help go to
// stdout, everything else to stderr. It returns the exit code: 0 done, 1
// failed or differs, 2 bad usage.
func run(args []string, stdout, stderr io.Writer) int {
	c, err := parse(args, stdout, stderr)
	if errors.Is(err, errHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "flotta-sync:", err)
		return 2
	}
	ep, err := endpoint(c)
	if err != nil {
		fmt.Fprintln(stderr, "flotta-sync:", err)
		return 2
	}
	if c.cmd == "check" {
		return runCheck(c, ep, stdout, stderr)
	}
	state, err := stateDir(c)
	if err != nil {
		fmt.Fprintln(stderr, "flotta-sync:", err)
		return 2
	}
	if c.dir == datasync.Egress {
		// The worker waits for a source its workload has not written yet;
		// for a command, a source that is not there is a mistake.
		if fi, err := os.Stat(c.local); err != nil {
			fmt.Fprintf(stderr, "flotta-sync: push: source %s: %v\n", c.local, errors.Unwrap(err))
			return 2
		} else if !fi.IsDir() {
			fmt.Fprintf(stderr, "flotta-sync: push: source %s is not a directory\n", c.local)
			return 2
		}
	}
	if c.dryRun {
		// A dry run writes no journal: without one yet, plan against an
		// empty one that is thrown away.
		if _, err := os.Stat(filepath.Join(state, "sync-journal.db")); err != nil {
			tmp, err := os.MkdirTemp("", "flotta-sync-dry-run-")
			if err != nil {
				fmt.Fprintln(stderr, "flotta-sync:", err)
				return 1
			}
			defer os.RemoveAll(tmp)
			state = tmp
		}
	}
	level := zapcore.WarnLevel
	if c.verbose {
		level = zapcore.InfoLevel
	}
	log := zap.New(zapcore.NewCore(zapcore.NewConsoleEncoder(zap.NewDevelopmentEncoderConfig()),
		zapcore.AddSync(stderr), level))
	defer func() { _ = log.Sync() }()

	counter := &s3client.Counter{}
	opts := datasync.Options{
		StateDir:            state,
		Concurrency:         c.concurrency,
		Timeouts:            c.timeouts,
		KeepUnknownMappings: true,
		WrapTransport:       counter.Wrap,
	}
	if !c.limit.Unlimited() {
		opts.Limiter = bwlimit.New(c.limit)
	}
	opts.DefaultQuota, opts.MinFreeBytes, opts.MinFreePercent = bytesize.DiskGuard(c.maxBytes, c.minFree)
	eng, err := datasync.New(opts, log)
	if err != nil {
		fmt.Fprintln(stderr, "flotta-sync:", err)
		return 1
	}
	defer eng.Close()
	id := mappingID(c, ep)
	m := datasync.Mapping{ID: id, Direction: c.dir, Root: c.local, LocalDir: c.local, Bucket: c.bucket, Prefix: c.prefix}
	if err := eng.Configure(ep, []datasync.Mapping{m}); err != nil {
		fmt.Fprintln(stderr, "flotta-sync:", err)
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	done := make(chan struct{})
	if isTerminal(stderr) {
		go progress(stderr, counter, start, done)
	}
	if c.dryRun {
		return dryRun(ctx, eng, id, c, stdout, stderr, done)
	}
	err = eng.Sync(ctx, datasync.PassOptions{Reconcile: c.reconcile}, id)
	close(done)

	st := eng.Status()[0]
	verb := map[datasync.Direction]string{datasync.Egress: "uploaded", datasync.Ingress: "downloaded"}[c.dir]
	fmt.Fprintf(stderr, "%s %d files, %s; %d S3 requests; %s", verb, st.FilesLastPass, humanBytes(st.BytesLastPass),
		counter.Requests(), time.Since(start).Round(time.Millisecond))
	if st.Pending > 0 {
		fmt.Fprintf(stderr, "; %d pending", st.Pending)
	}
	if st.Refused > 0 {
		fmt.Fprintf(stderr, "; %d refused", st.Refused)
	}
	if st.Conflicts > 0 {
		fmt.Fprintf(stderr, "; %d local edits kept as conflict copies (*.flotta-conflict-*)", st.Conflicts)
	}
	fmt.Fprintln(stderr)
	switch {
	case err != nil:
		fmt.Fprintln(stderr, "flotta-sync:", err)
		return 1
	case st.Pending > 0 || st.Refused > 0:
		fmt.Fprintln(stderr, "flotta-sync:", st.LastError)
		return 1
	}
	return 0
}

// dryRun plans one pass, lists its actions on stdout and a summary on stderr.
func dryRun(ctx context.Context, eng *datasync.Engine, id string, c *config, stdout, stderr io.Writer, done chan struct{}) int {
	counts := map[string]int{}
	var bytes int64
	var unreadable int64
	var mu sync.Mutex
	err := eng.Sync(ctx, datasync.PassOptions{Reconcile: c.reconcile, DryRun: true, Report: func(p datasync.Planned) {
		mu.Lock()
		defer mu.Unlock()
		if p.Action == "summary" {
			unreadable = p.Size
			return
		}
		counts[p.Action]++
		if p.Action == "upload" || p.Action == "adopt" || p.Action == "download" || p.Action == "conflict" {
			bytes += p.Size
		}
		path := p.Key
		if c.dir == datasync.Ingress {
			path = p.Key + " -> " + filepath.Join(c.local, filepath.FromSlash(p.Path))
		}
		fmt.Fprintf(stdout, "%-10s %s (%s): %s\n", p.Action, path, humanBytes(p.Size), p.Why)
	}}, id)
	close(done)
	move := counts["upload"] + counts["adopt"]
	verb := "upload"
	if c.dir == datasync.Ingress {
		move, verb = counts["download"]+counts["conflict"], "download"
	}
	fmt.Fprintf(stderr, "dry run: would %s %d files, %s", verb, move, humanBytes(bytes))
	if n := counts["adopt"]; n > 0 {
		fmt.Fprintf(stderr, " (%d of them kept as they are if the bucket already holds them)", n)
	}
	if n := counts["conflict"]; n > 0 {
		fmt.Fprintf(stderr, " (%d of them over a local edit, kept as a conflict copy)", n)
	}
	fmt.Fprintf(stderr, "; %d refused; %d skipped for the disk guard; %d journal rows to forget", counts["refuse"]+counts["refused"],
		counts["disk-guard"], counts["prune"])
	if unreadable > 0 {
		fmt.Fprintf(stderr, "; %d entries could not be read", unreadable)
	}
	fmt.Fprintln(stderr, "; nothing changed")
	if err != nil {
		fmt.Fprintln(stderr, "flotta-sync:", err)
		return 1
	}
	return 0
}

// mappingID names the journal of one (direction, server, bucket, prefix, dir).
func mappingID(c *config, ep *datasync.Endpoint) string {
	h := sha256.Sum256([]byte(strings.Join([]string{string(c.dir), ep.Host, strconv.Itoa(ep.Port), c.bucket, c.prefix, c.local}, "\x00")))
	return "cli-" + hex.EncodeToString(h[:8])
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func progress(w io.Writer, c *s3client.Counter, start time.Time, done <-chan struct{}) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-done:
			fmt.Fprint(w, "\r\033[K")
			return
		case <-t.C:
			fmt.Fprintf(w, "\r\033[K%d S3 requests, %s", c.Requests(), time.Since(start).Round(time.Second))
		}
	}
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
