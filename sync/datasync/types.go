package datasync

import (
	"fmt"
	"net/http"
	"time"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// Direction says which way a mapping moves data.
type Direction string

const (
	// Egress uploads a local directory to a bucket prefix.
	Egress Direction = "egress"
	// Ingress downloads a bucket prefix into a local directory.
	Ingress Direction = "ingress"
)

// Endpoint is how to reach the S3 server and who to be there.
type Endpoint struct {
	Host      string // host name or IP address, without scheme
	Port      int    // 0 means the scheme's default port
	Secure    bool   // https when true
	Region    string // "" or "ignore" lets the client discover it
	AccessKey string
	SecretKey string
	CAPEM     []byte // extra trusted CA certificates (PEM), added to the system roots
}

// String describes the endpoint without its secrets, for logs.
func (e Endpoint) String() string {
	scheme := "http"
	if e.Secure {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s:%d (region %q)", scheme, e.Host, e.Port, e.Region)
}

// Mapping is one directory kept in sync with one bucket prefix.
type Mapping struct {
	ID        string    // stable identity across configurations; keys the journal
	Direction Direction //
	Root      string    // absolute directory nothing may be read from or written to outside of (the workload's /export)
	LocalDir  string    // absolute directory inside Root
	Bucket    string    //
	Prefix    string    // object key prefix, without leading or trailing slash
	MaxBytes  int64     // ingress quota for LocalDir in bytes; 0 means Options.DefaultQuota
	// MaxStaleness (egress) overrides Options.MaxStaleness for this
	// mapping; 0 keeps the engine's.
	MaxStaleness time.Duration
	// Retention (egress) says which uploaded files are removed from
	// LocalDir (retention.go); the zero value keeps every file.
	Retention Retention
	// Order (egress) is the order a backlog is uploaded in (order.go); the
	// zero value is key order.
	Order Order
}

// Retention is what an egress mapping keeps of the files it uploaded. A
// file is removed only once its object is confirmed (the server's ETag is
// the MD5, or multipart ETag, of what was read) and only while it is still
// the file that was read (inode, size, mtime, ctime); a file not yet
// uploaded is never removed. With several limits set, a file goes as soon
// as one of them says so.
type Retention struct {
	// RemoveAfterUpload removes every file once its object is confirmed
	// (rclone's move).
	RemoveAfterUpload bool
	// KeepBytes bounds the bytes of uploaded files kept; the oldest (by
	// modification time) go first. 0: no bound.
	KeepBytes int64
	// KeepAge removes uploaded files modified longer ago than this. 0: no
	// bound.
	KeepAge time.Duration
}

// Active reports whether the retention may ever remove a file. A mapping
// with an active retention also sheds its oldest uploaded files when its
// file system is short of space (Options.MinFreeBytes, MinFreePercent).
func (r Retention) Active() bool { return r.RemoveAfterUpload || r.KeepBytes > 0 || r.KeepAge > 0 }

// Order is the order an egress backlog is uploaded in.
type Order string

const (
	// KeyOrder uploads in key order (the walk's order); no sorting cost.
	KeyOrder Order = ""
	// OldestFirst uploads the least recently modified files first.
	OldestFirst Order = "oldest-first"
	// NewestFirst uploads the most recently modified files first, for
	// telemetry where fresh data matters most after an outage.
	NewestFirst Order = "newest-first"
)

// Options tune an Engine. Zero values take the documented defaults.
type Options struct {
	StateDir string        // where the journal lives (required)
	Interval time.Duration // time between passes of a mapping; default 15s
	// WatchedInterval is the time between full passes of a mapping whose
	// changes a healthy watcher reports (Engine.SetWatched); default 5m,
	// never less than Interval.
	WatchedInterval time.Duration
	// ReconcileInterval is the time between reconcile passes (both sides
	// compared, see PassOptions.Reconcile) in Run; default 1h, negative
	// for none.
	ReconcileInterval time.Duration
	// PollMax caps the adaptive interval of an ingress mapping's passes
	// (poll.go): doubled after each pass that finds nothing new; default
	// 5m, never less than Interval.
	PollMax time.Duration
	// PollFast is the wait before an ingress mapping's next pass after one
	// that found a change (poll.go), when shorter than Interval; default
	// 2s, negative for Interval.
	PollFast time.Duration
	// NoNotify turns bucket notifications off: ingress only polls. By
	// default, where the server offers them (MinIO), an ingress mapping
	// downloads new objects as they are announced (notify.go).
	NoNotify bool
	// Concurrency fixes the number of transfers in flight; 0 (the
	// default) lets it follow the link (flow.go): it starts at
	// DefaultConcurrency and moves between MinConcurrency and
	// MaxConcurrency by the goodput it measures.
	Concurrency int
	// MaxConcurrency caps the adaptive number of transfers in flight;
	// default DefaultMaxConcurrency.
	MaxConcurrency int
	DefaultQuota   int64             // ingress bytes per mapping when the mapping sets none; 0 = unlimited
	MinFreeBytes   int64             // ingress keeps at least this much free on the file system
	MinFreePercent float64           // ... and at least this share of it
	Transport      http.RoundTripper // optional, for tests (counting requests)
	// Timeouts bound each S3 request's dial, TLS handshake and progress
	// (never its total time: see s3client.Timeouts); zero fields take
	// s3client.DefaultTimeouts. Not used with Transport.
	Timeouts s3client.Timeouts
	// WrapTransport, when set, wraps the transport the engine builds (or
	// Transport), e.g. to count requests while keeping the engine's TLS setup.
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// NoWatch turns the file-system watchers off: egress mappings then get
	// their full pass every Interval and no change events (see watchers.go).
	NoWatch bool
	// KeepUnknownMappings keeps the journal of mappings that Configure does not
	// name; by default it is dropped (the mapping was removed). The CLI, which
	// configures one mapping per run, keeps them.
	KeepUnknownMappings bool
	// MaxStaleness bounds how long a change of a file that never settles
	// (a log held open and appended to) waits before a snapshot of it is
	// uploaded; default DefaultMaxStaleness (30s), negative: such files wait
	// until they settle (see growing.go).
	MaxStaleness time.Duration
	// Limiter, when set, paces every connection to the server: one
	// bandwidth limit for all mappings and transfers together. Not applied
	// with Transport (which makes its own connections).
	Limiter *bwlimit.Limiter
}

// Defaults of Options.
const (
	DefaultInterval          = 15 * time.Second
	DefaultWatchedInterval   = 5 * time.Minute
	DefaultReconcileInterval = time.Hour
	DefaultPollMax           = 5 * time.Minute
	DefaultPollFast          = 2 * time.Second
	DefaultConcurrency       = 8         // transfers in flight to start with (adaptive), or with a fixed limit
	DefaultMaxConcurrency    = 64        // the adaptive limit's cap: small files on a long round trip
	MinConcurrency           = 2         // the adaptive limit's floor
	DefaultMinFreeBytes      = 512 << 20 // MinFreeBytes 0 means this; negative means none
	DefaultMinFreePercent    = 5.0       // MinFreePercent 0 means this; negative means none
)

// MappingStatus is what a mapping has done, for heartbeats and the CLI.
type MappingStatus struct {
	ID        string    `json:"id"`
	Direction Direction `json:"direction"`
	LocalDir  string    `json:"local_dir"`
	Bucket    string    `json:"bucket"`
	Prefix    string    `json:"prefix"`

	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	// FilesTotal and BytesTotal count what moved since the engine started.
	FilesTotal int64 `json:"files_total"`
	BytesTotal int64 `json:"bytes_total"`
	// FilesLastPass and BytesLastPass count what moved in the last pass.
	FilesLastPass int64 `json:"files_last_pass"`
	BytesLastPass int64 `json:"bytes_last_pass"`
	// Pending counts files known to differ and not yet moved.
	Pending int64 `json:"pending"`
	// Refused counts files the disk guard or the key checks would not write.
	Refused   int64  `json:"refused"`
	LastError string `json:"last_error,omitempty"`
	// OldestPending is when the oldest change not yet synced was first seen.
	OldestPending time.Time `json:"oldest_pending,omitzero"`
	// Unreadable counts entries the last pass skipped because they could
	// not be read or named (a directory or file without permission, a name
	// that is not UTF-8); they are retried every pass.
	Unreadable int64 `json:"unreadable,omitempty"`
	// Throttled says a transfer of the mapping is in flight and waiting on
	// the engine's bandwidth limit (Options.Limiter) right now.
	Throttled bool `json:"throttled,omitempty"`
	// Ingress says whether an ingress mapping is pushed new objects by the
	// server's notifications or polls, and why (nil for egress).
	Ingress *IngressMode `json:"ingress,omitempty"`
	// Conflicts counts, since the engine started, the ingress files changed
	// both on the device and in the bucket whose device version was kept as
	// a conflict copy (keys.ConflictName) before the object was written.
	Conflicts int64 `json:"conflicts,omitempty"`
	// OldestUnsent is when the oldest change not yet in the bucket was made
	// or first seen (growing files: when their last snapshot started;
	// pending files: OldestPending); zero when nothing waits. A time, not
	// an age, so that the status only changes when something happens.
	OldestUnsent time.Time `json:"oldest_unsent,omitzero"`
	// BytesSavedByPartCopy counts, since the engine started, the bytes of
	// growing and rotated files copied server-side instead of sent.
	BytesSavedByPartCopy int64 `json:"bytes_saved_by_part_copy,omitempty"`

	// Retention (egress): KeptBytes and KeptFiles are the uploaded files
	// still on the device after the last full pass, LocalBytes all the
	// files there (uploaded or not); RemovedFiles and RemovedBytes count
	// what retention removed since the engine started.
	KeptFiles    int64 `json:"kept_files,omitempty"`
	KeptBytes    int64 `json:"kept_bytes,omitempty"`
	LocalBytes   int64 `json:"local_bytes,omitempty"`
	RemovedFiles int64 `json:"removed_files,omitempty"`
	RemovedBytes int64 `json:"removed_bytes,omitempty"`
	// ShortOfSpace (egress), when not empty, says the file system of the
	// mapping's directory is below the free-space floor (Options.MinFreeBytes,
	// MinFreePercent) and nothing more may be removed: what is left has not
	// been uploaded (or retention is off).
	ShortOfSpace string `json:"short_of_space,omitempty"`
}
