package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
	"github.com/project-flotta/flotta-device-worker/sync/datasync"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// transferSpec describes a command that runs one pass of the engine over one
// mapping (push, pull).
type transferSpec struct {
	use, short, long string
	dir              datasync.Direction
	// localFirst says the operands are DIR s3://... (else s3://... DIR).
	localFirst bool
	// flags adds the command's own flags.
	flags func(fs *pflag.FlagSet, c *transferConfig)
	// pass sets the pass options the command's flags ask for.
	pass func(c *transferConfig, po *datasync.PassOptions)
	// mapping sets what the command's flags ask of the mapping.
	mapping func(c *transferConfig, m *datasync.Mapping)
}

// transferConfig is what a transfer command's flags and operands say.
type transferConfig struct {
	*options
	spec                  transferSpec
	cmd                   string
	local, bucket, prefix string
	state                 string
	reconcile, dryRun     bool
	restore               bool
	bwlimit               string
	limit                 bwlimit.Schedule
	maxBytes, minFree     int64
	progress              bool
	stats                 time.Duration
	orderBy               string
	order                 datasync.Order // parsed orderBy
}

var pushSpec = transferSpec{
	use:   "push DIR s3://BUCKET/PREFIX",
	short: "upload new and changed files of DIR",
	long: `Upload the files of DIR that are new or changed since the last run to
s3://BUCKET/PREFIX. Objects are never deleted. With --reconcile the prefix is
listed too, and objects deleted or replaced in the bucket are uploaded again.`,
	dir:        datasync.Egress,
	localFirst: true,
	flags:      orderByFlag,
	pass:       func(*transferConfig, *datasync.PassOptions) {},
	mapping:    func(c *transferConfig, m *datasync.Mapping) { m.Order = c.order },
}

var moveSpec = transferSpec{
	use:   "move DIR s3://BUCKET/PREFIX",
	short: "push, then remove the files of DIR whose upload is confirmed",
	long: `Upload the files of DIR as push does, then remove each file whose object the
server confirmed (its ETag matches what was read) and that is still the file
that was read (same inode, size, mtime and ctime): a file rewritten meanwhile
stays and goes up on the next run. Directories stay. A run killed at any point
never removes a file whose upload is not confirmed; the next run removes the
confirmed ones it left.`,
	dir:        datasync.Egress,
	localFirst: true,
	flags:      orderByFlag,
	pass:       func(*transferConfig, *datasync.PassOptions) {},
	mapping: func(c *transferConfig, m *datasync.Mapping) {
		m.Order = c.order
		m.Retention = datasync.Retention{RemoveAfterUpload: true}
	},
}

// orderByFlag adds rclone's --order-by to an upload command.
func orderByFlag(fs *pflag.FlagSet, c *transferConfig) {
	fs.StringVar(&c.orderBy, "order-by", "", "upload order of the backlog: modtime,ascending (oldest first) or modtime,descending (newest first); default key order")
}

// parseOrderBy reads rclone's --order-by spelling: modtime, then optionally
// ascending (asc) or descending (desc).
func parseOrderBy(v string) (datasync.Order, error) {
	if v == "" {
		return datasync.KeyOrder, nil
	}
	key, dir, _ := strings.Cut(v, ",")
	if key != "modtime" {
		return "", fmt.Errorf("--order-by %q: only modtime is supported (modtime,ascending or modtime,descending)", v)
	}
	switch dir {
	case "", "ascending", "asc":
		return datasync.OldestFirst, nil
	case "descending", "desc":
		return datasync.NewestFirst, nil
	}
	return "", fmt.Errorf("--order-by %q: want modtime,ascending or modtime,descending", v)
}

var pullSpec = transferSpec{
	use:   "pull s3://BUCKET/PREFIX DIR",
	short: "download new and changed objects into DIR",
	long: `Download the objects under s3://BUCKET/PREFIX that are new or changed since
the last run into DIR, and restore files deleted from DIR since they were
downloaded (found from the journal and a local stat each: no extra request).
Local files are never deleted; a file changed both locally and in the bucket
is kept beside the new version as a conflict copy.`,
	dir: datasync.Ingress,
	flags: func(fs *pflag.FlagSet, c *transferConfig) {
		fs.Var(bytesize.NewValue(&c.maxBytes), "max-bytes", "size DIR may hold, e.g. 10G (0 or -1 = no quota)")
		fs.Var(bytesize.NewValue(&c.minFree), "min-free", "size to keep free on DIR's file system, e.g. 1G (0 = max(512M, 5%), -1 = no guard)")
		fs.BoolVar(&c.restore, "restore", true, "download again files deleted locally whose object did not change (--restore=false leaves them deleted)")
	},
	pass:    func(c *transferConfig, po *datasync.PassOptions) { po.Restore = c.restore },
	mapping: func(*transferConfig, *datasync.Mapping) {},
}

// newTransferCmd builds the command of spec.
func newTransferCmd(o *options, spec transferSpec) *cobra.Command {
	c := &transferConfig{options: o, spec: spec}
	cmd := &cobra.Command{
		Use:   spec.use,
		Short: spec.short,
		Long:  spec.long,
		Args:  twoOperands,
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if (len(args) == 0) == spec.localFirst {
				return nil, cobra.ShellCompDirectiveFilterDirs
			}
			return nil, cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			c.cmd = cmd.Name()
			return c.run(args)
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&c.state, "state", "", "journal directory (default $XDG_STATE_HOME/flotta-sync or ~/.local/state/flotta-sync)")
	fs.BoolVar(&c.reconcile, "reconcile", false, "compare with the other side too: upload again objects deleted or replaced in the bucket (push), download again files deleted locally even without a journal row (pull); costs one LIST per 1,000 objects")
	fs.BoolVarP(&c.dryRun, "dry-run", "n", false, "list what would be uploaded, downloaded, refused or skipped for the disk guard, and change nothing")
	fs.StringVar(&c.bwlimit, "bwlimit", "", `bandwidth limit of the whole run, bytes per second on the wire: 512K, UP:DOWN as 1M:256K, or a timetable in local time as "08:00,512K 19:00,10M 23:00,off" (default none)`)
	fs.BoolVarP(&c.progress, "progress", "P", false, "show the progress on the terminal: files and bytes done of the total, rate, ETA, transfers in flight (without a terminal, or one of unknown size: a line a second)")
	fs.DurationVar(&c.stats, "stats", 0, "print a progress line on stderr at this interval, e.g. 10s (for logs and pipes)")
	spec.flags(fs, c)
	_ = cmd.MarkFlagDirname("state")
	return cmd
}

// parse checks the operands and the settings: any mistake is a usage error.
func (c *transferConfig) parse(args []string) (*datasync.Endpoint, error) {
	local, s3url := args[1], args[0]
	if c.spec.localFirst {
		local, s3url = args[0], args[1]
	}
	u, err := url.Parse(s3url)
	if err != nil || u.Scheme != "s3" || u.Host == "" {
		return nil, usageError("%q is not s3://BUCKET/PREFIX", s3url)
	}
	c.bucket, c.prefix = u.Host, strings.Trim(u.Path, "/")
	if c.local, err = filepath.Abs(local); err != nil {
		return nil, usageError("%v", err)
	}
	if c.limit, err = bwlimit.ParseSetting("--bwlimit", c.bwlimit); err != nil {
		return nil, usageError("%v", err)
	}
	if c.stats < 0 {
		return nil, usageError("--stats %s: want a positive duration such as 10s", c.stats)
	}
	if c.order, err = parseOrderBy(c.orderBy); err != nil {
		return nil, usageError("%v", err)
	}
	return endpoint(c.options)
}

// endpoint reads the server settings; a mistake is a usage error.
func endpoint(o *options) (*datasync.Endpoint, error) {
	if o.endpoint == "" {
		return nil, usageError("--endpoint is required")
	}
	if o.logFormat != "text" && o.logFormat != "json" {
		return nil, usageError("--log-format %q: want text or json", o.logFormat)
	}
	u, err := url.Parse(o.endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" {
		return nil, usageError("--endpoint %q: want http://HOST[:PORT] or https://HOST[:PORT]", o.endpoint)
	}
	ep := &datasync.Endpoint{Host: u.Hostname(), Secure: u.Scheme == "https", Region: o.region,
		AccessKey: os.Getenv("AWS_ACCESS_KEY_ID"), SecretKey: os.Getenv("AWS_SECRET_ACCESS_KEY")}
	if p := u.Port(); p != "" {
		if ep.Port, err = strconv.Atoi(p); err != nil {
			return nil, usageError("--endpoint port %q: %v", p, err)
		}
	}
	if ep.AccessKey == "" || ep.SecretKey == "" {
		return nil, usageError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set")
	}
	if o.caFile != "" {
		if ep.CAPEM, err = os.ReadFile(o.caFile); err != nil {
			return nil, usageError("--ca-file: %v", err)
		}
	}
	return ep, nil
}

func (c *transferConfig) stateDir() (string, error) {
	if c.state != "" {
		return c.state, nil
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "flotta-sync"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", usageError("no --state and no home directory: %v", err)
	}
	return filepath.Join(home, ".local", "state", "flotta-sync"), nil
}

// run runs one pass and reports it.
func (c *transferConfig) run(args []string) error {
	ep, err := c.parse(args)
	if err != nil {
		return err
	}
	state, err := c.stateDir()
	if err != nil {
		return err
	}
	if c.spec.dir == datasync.Egress {
		// The worker waits for a source its workload has not written yet;
		// for a command, a source that is not there is a mistake.
		if fi, err := os.Stat(c.local); err != nil {
			return usageError("%s: source %s: %v", c.cmd, c.local, errors.Unwrap(err))
		} else if !fi.IsDir() {
			return usageError("%s: source %s is not a directory", c.cmd, c.local)
		}
	}
	if c.dryRun {
		// A dry run writes no journal: without one yet, plan against an
		// empty one that is thrown away.
		if _, err := os.Stat(filepath.Join(state, "sync-journal.db")); err != nil {
			tmp, err := os.MkdirTemp("", "flotta-sync-dry-run-")
			if err != nil {
				return failed(err)
			}
			defer os.RemoveAll(tmp)
			state = tmp
		}
	}
	logOut := &switchWriter{w: c.stderr}
	log := newLogger(c.options, logOut)
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
		return failed(err)
	}
	defer eng.Close()
	id := mappingID(c, ep)
	m := datasync.Mapping{ID: id, Direction: c.spec.dir, Root: c.local, LocalDir: c.local, Bucket: c.bucket, Prefix: c.prefix}
	c.spec.mapping(c, &m)
	if err := eng.Configure(ep, []datasync.Mapping{m}); err != nil {
		return usageError("%v", err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	start := time.Now()
	po := datasync.PassOptions{Reconcile: c.reconcile, Progress: &datasync.Progress{}}
	c.spec.pass(c, &po)
	if c.dryRun {
		return c.dryRunPass(ctx, eng, id, po, counter, start)
	}
	wire := counter.Sent
	if c.spec.dir == datasync.Ingress {
		wire = counter.Received
	}
	show := startProgress(c, po.Progress, wire, counter, start, logOut)
	err = eng.Sync(ctx, po, id)
	show.stop()

	st := eng.Status()[0]
	p := po.Progress.Snapshot()
	s := summary{
		Command: c.cmd, Files: st.FilesLastPass, Bytes: st.BytesLastPass, BytesOnWire: wire(),
		Requests: counter.Requests(), Unreadable: st.Unreadable, Refused: st.Refused,
		Vanished: p.Vanished, Changed: p.Changed, Pending: st.Pending, Conflicts: st.Conflicts,
		Errors: p.Failed, Took: time.Since(start), RemovedFiles: st.RemovedFiles, RemovedBytes: st.RemovedBytes,
	}
	return c.report(s, err, st.LastError)
}

// dryRunPass plans one pass, lists its actions on stdout (unless --json)
// and a summary on stderr.
func (c *transferConfig) dryRunPass(ctx context.Context, eng *datasync.Engine, id string, po datasync.PassOptions,
	counter *s3client.Counter, start time.Time) error {
	counts := map[string]int64{}
	var bytes, unreadable int64
	var mu sync.Mutex
	po.DryRun = true
	po.Report = func(p datasync.Planned) {
		mu.Lock()
		defer mu.Unlock()
		if p.Action == "summary" {
			unreadable = p.Size
			return
		}
		counts[p.Action]++
		if p.Action == "upload" || p.Action == "download" || p.Action == "conflict" ||
			(p.Action == "adopt" && c.spec.dir == datasync.Egress) { // an ingress adopt moves nothing
			bytes += p.Size
		}
		if c.json {
			return
		}
		path := p.Key
		if c.spec.dir == datasync.Ingress {
			path = p.Key + " -> " + filepath.Join(c.local, filepath.FromSlash(p.Path))
		}
		fmt.Fprintf(c.stdout, "%-10s %s (%s): %s\n", p.Action, path, bytesize.Format(p.Size), p.Why)
	}
	err := eng.Sync(ctx, po, id)
	move := counts["upload"] + counts["adopt"]
	verb := "upload"
	if c.spec.dir == datasync.Ingress {
		move, verb = counts["download"]+counts["conflict"], "download"
	}
	if c.json {
		s := summary{Command: c.cmd, DryRun: true, Files: move, Bytes: bytes, Requests: counter.Requests(),
			Unreadable: unreadable, Refused: counts["refuse"] + counts["refused"] + counts["disk-guard"],
			Conflicts: counts["conflict"], Took: time.Since(start)}
		return c.report(s, err, "")
	}
	fmt.Fprintf(c.stderr, "dry run: would %s %d files, %s", verb, move, bytesize.Format(bytes))
	if n := counts["adopt"]; n > 0 && c.spec.dir == datasync.Egress {
		fmt.Fprintf(c.stderr, " (%d of them kept as they are if the bucket already holds them)", n)
	}
	if n := counts["conflict"]; n > 0 {
		fmt.Fprintf(c.stderr, " (%d of them over a local edit, kept as a conflict copy)", n)
	}
	if n := counts["adopt"]; n > 0 && c.spec.dir == datasync.Ingress {
		fmt.Fprintf(c.stderr, "; %d local files already hold their object (kept, not downloaded)", n)
	}
	fmt.Fprintf(c.stderr, "; %d refused; %d skipped for the disk guard; %d journal rows to forget", counts["refuse"]+counts["refused"],
		counts["disk-guard"], counts["prune"])
	if unreadable > 0 {
		fmt.Fprintf(c.stderr, "; %d entries could not be read", unreadable)
	}
	fmt.Fprintln(c.stderr, "; nothing changed")
	if err != nil {
		return failed(err)
	}
	return nil
}

// mappingID names the journal of one (direction, server, bucket, prefix, dir).
func mappingID(c *transferConfig, ep *datasync.Endpoint) string {
	h := sha256.Sum256([]byte(strings.Join([]string{string(c.spec.dir), ep.Host, strconv.Itoa(ep.Port), c.bucket, c.prefix, c.local}, "\x00")))
	return "cli-" + hex.EncodeToString(h[:8])
}
