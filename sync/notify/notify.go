// Package notify delivers the keys of objects created (and optionally
// removed) under a bucket's prefixes as they happen, through MinIO's bucket
// notification stream (the API minio-go's ListenBucketNotification uses).
//
// Support is detected, not configured: Listen returns ErrUnsupported at once
// when the server refuses the stream (versitygw, AWS, Ceph RGW), and the
// caller keeps polling. When an established stream drops, the listener
// reconnects with backoff and then sends a Resync event: events may have been
// missed, so the caller lists its prefixes again (what `mc mirror --watch`
// lacks). Notifications are best effort even on MinIO (a slow reader's events
// are dropped by the server), so polling stays as the safety net; it may
// just run far less often while the stream is up.
//
// The stream is read here rather than through ListenBucketNotification: that
// function reconnects by itself without telling the caller (no resync is
// possible) and pings only every 10 s, while MinIO sends the response headers
// with the first ping or event, so detecting support took up to 10 s.
// Requests are signed with minio-go's signer and parsed into its
// notification types.
package notify

import (
	"bufio"
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/minio/minio-go/v7/pkg/notification"
	"github.com/minio/minio-go/v7/pkg/s3utils"
	"github.com/minio/minio-go/v7/pkg/signer"
	"go.uber.org/zap"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
)

// ErrUnsupported says the server does not offer bucket notifications: the
// caller polls.
var ErrUnsupported = errors.New("bucket notifications not supported by the server")

// Kind says what an Event reports.
type Kind int

// Event kinds.
const (
	// Created: an object was written (put, copy, multipart completion).
	Created Kind = iota
	// Removed: an object was deleted (only with Config.Removed).
	Removed
	// Resync: events may have been missed (the stream dropped and is back,
	// or the channel was full): list the prefixes again.
	Resync
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case Created:
		return "created"
	case Removed:
		return "removed"
	default:
		return "resync"
	}
}

// Event is one notification.
type Event struct {
	Kind Kind
	Key  string // the object key; "" for Resync
	Size int64
	ETag string
	Time time.Time // when the server saw the change; zero if unknown
}

// Config says what to listen to.
type Config struct {
	// S3 reaches the server (the same settings as the engine's client).
	// Its progress timeout is raised above three pings.
	S3 s3client.Config
	// Bucket to listen to.
	Bucket string
	// Prefixes: only keys under one of them are delivered; none means the
	// whole bucket. One stream serves them all (the server filters on their
	// longest common prefix, the rest is filtered here).
	Prefixes []string
	// Removed also delivers removals.
	Removed bool
	// Buffer is the capacity of the Events channel; default 1024. When it
	// is full, events are dropped and a Resync follows once there is room.
	Buffer int
	// Ping is how often the server sends a keep-alive; default 5 s. A
	// stream silent for three pings is taken as dropped.
	Ping time.Duration
	// MinBackoff and MaxBackoff space reconnections; defaults 1 s and 30 s.
	MinBackoff, MaxBackoff time.Duration
	// Log receives reconnections and errors; default none.
	Log *zap.Logger
}

// Listener delivers events from one stream, reconnecting when it drops.
type Listener struct {
	cfg    Config
	rt     http.RoundTripper
	url    *url.URL
	out    chan Event
	done   chan struct{}
	err    error // why Events closed; read after done
	up     atomic.Bool
	timely atomic.Bool // the stream's pings arrive on schedule (see Timely)
	asked  time.Time   // when the current stream was requested (run's goroutine only)
	resync atomic.Bool // a Resync is owed to the caller
	log    *zap.Logger
}

// Listen opens the stream and returns once the server has answered: with
// the listener when it streams, ErrUnsupported (wrapped with the server's
// answer) when it does not, or another error when it could not be reached
// (the caller polls and may try again later). MinIO sends its answer with
// the first ping, so on MinIO Listen takes up to Config.Ping; call it from
// its own goroutine where that matters. The listener runs until ctx ends or
// the server stops supporting notifications; then Events is closed and Err
// says why.
func Listen(ctx context.Context, c Config) (*Listener, error) {
	if c.Bucket == "" {
		return nil, errors.New("notify: no bucket")
	}
	if c.Buffer <= 0 {
		c.Buffer = 1024
	}
	if c.Ping <= 0 {
		c.Ping = 5 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(30*time.Second, c.MinBackoff)
	}
	if c.Log == nil {
		c.Log = zap.NewNop()
	}
	s3 := c.S3
	s3.Timeouts.Progress = max(s3.Timeouts.Progress, 3*c.Ping)
	rt, err := s3client.RoundTripper(s3)
	if err != nil {
		return nil, fmt.Errorf("notify %s: %w", c.Bucket, err)
	}
	u, err := streamURL(c)
	if err != nil {
		return nil, err
	}
	l := &Listener{cfg: c, rt: rt, url: u, out: make(chan Event, c.Buffer), done: make(chan struct{}),
		log: c.Log.With(zap.String("bucket", c.Bucket))}
	body, err := l.connect(ctx)
	if err != nil {
		return nil, err
	}
	l.up.Store(true)
	go l.run(ctx, body)
	return l, nil
}

// Events delivers the notifications; it is closed when the listener stops.
func (l *Listener) Events() <-chan Event { return l.out }

// Done is closed when the listener has stopped.
func (l *Listener) Done() <-chan struct{} { return l.done }

// Err says why the listener stopped: ctx's error, ErrUnsupported when a
// reconnection found the server no longer supports notifications, or the
// timeout of a reconnection the server did not answer. It is nil while the
// listener runs.
func (l *Listener) Err() error {
	select {
	case <-l.done:
		return l.err
	default:
		return nil
	}
}

// Connected reports whether the stream is up now; while it is not, the
// caller should poll at its base interval.
func (l *Listener) Connected() bool { return l.up.Load() }

// Timely reports whether the stream is up and proven to deliver at once:
// two pings in a row arrived on their own, on schedule (between half and
// twice Config.Ping after the line before), and no gap since was longer
// than twice Ping. A server that holds its stream back until a buffer fills
// (MinIO as released: 4 KiB) delivers its pings in bursts or not at all, so
// its stream never becomes timely; events from it are still delivered, but
// the caller should keep polling.
func (l *Listener) Timely() bool { return l.up.Load() && l.timely.Load() }

func streamURL(c Config) (*url.URL, error) {
	scheme := "http"
	if c.S3.Secure {
		scheme = "https"
	}
	host := c.S3.Host
	if c.S3.Port != 0 {
		host = net.JoinHostPort(c.S3.Host, strconv.Itoa(c.S3.Port))
	}
	q := url.Values{}
	q.Set("ping", strconv.Itoa(max(1, int(c.Ping/time.Second))))
	q.Set("prefix", commonPrefix(c.Prefixes))
	q.Set("suffix", "")
	q["events"] = []string{"s3:ObjectCreated:*"}
	if c.Removed {
		q["events"] = append(q["events"], "s3:ObjectRemoved:*")
	}
	u, err := url.Parse(scheme + "://" + host + "/" + c.Bucket + "?" + s3utils.QueryEncode(q))
	if err != nil {
		return nil, fmt.Errorf("notify %s: endpoint: %w", c.Bucket, err)
	}
	return u, nil
}

// commonPrefix is the longest prefix shared by all of ps ("" for none).
func commonPrefix(ps []string) string {
	if len(ps) == 0 {
		return ""
	}
	p := ps[0]
	for _, s := range ps[1:] {
		for !strings.HasPrefix(s, p) {
			p = p[:len(p)-1]
		}
	}
	return p
}

// unsupportedError keeps the server's answer beside ErrUnsupported.
type unsupportedError struct{ detail string }

func (e *unsupportedError) Error() string { return ErrUnsupported.Error() + ": " + e.detail }
func (e *unsupportedError) Is(target error) bool {
	return target == ErrUnsupported
}

// connect opens the stream and waits for the server's answer.
func (l *Listener) connect(ctx context.Context) (io.ReadCloser, error) {
	l.asked = time.Now() // MinIO answers with its first ping, a Ping later
	region := l.cfg.S3.Region
	if region == "" || region == "ignore" {
		region = "us-east-1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.url.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("notify %s: request: %w", l.cfg.Bucket, err)
	}
	req.Header.Set("X-Amz-Content-Sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") // empty body
	req = signer.SignV4(*req, l.cfg.S3.AccessKey, l.cfg.S3.SecretKey, "", region)
	resp, err := l.rt.RoundTrip(req)
	if err != nil {
		return nil, fmt.Errorf("notify %s: connect to %s: %w", l.cfg.Bucket, l.url.Host, err)
	}
	ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode == http.StatusOK && ct == "text/event-stream" {
		return resp.Body, nil
	}
	snippet, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		// versitygw answers with a listing of the bucket.
		return nil, &unsupportedError{fmt.Sprintf("%s answered 200 with %q, not an event stream", l.url.Host, ct)}
	}
	var e struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	_ = xml.Unmarshal(snippet, &e)
	detail := fmt.Sprintf("%s answered %s %s %s", l.url.Host, resp.Status, e.Code, e.Message)
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented {
		return nil, fmt.Errorf("notify %s: %s", l.cfg.Bucket, detail) // transient
	}
	return nil, &unsupportedError{detail}
}

// run reads streams, reconnecting with backoff, until ctx ends or the
// server no longer supports notifications.
func (l *Listener) run(ctx context.Context, body io.ReadCloser) {
	// done closes before out, so that Err is set for whoever saw out close.
	defer close(l.out)
	defer close(l.done)
	backoff := l.cfg.MinBackoff
	for {
		started := time.Now()
		err := l.read(ctx, body)
		l.up.Store(false)
		if ctx.Err() != nil {
			l.err = ctx.Err()
			return
		}
		l.resync.Store(true) // whatever happened while down is unknown
		l.log.Info("notification stream dropped; reconnecting", zap.Error(err))
		if time.Since(started) > time.Minute {
			backoff = l.cfg.MinBackoff
		}
		for {
			wait := jitter(backoff)
			backoff = min(2*backoff, l.cfg.MaxBackoff)
			select {
			case <-ctx.Done():
				l.err = ctx.Err()
				return
			case <-time.After(wait):
			}
			body, err = l.connect(ctx)
			if err == nil {
				break
			}
			if errors.Is(err, ErrUnsupported) {
				l.log.Warn("notifications no longer supported; stopping", zap.Error(err))
				l.err = err
				return
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				// Reached but silent: a server holding its stream back (MinIO
				// as released) would cost a request every MaxBackoff forever.
				l.log.Info("notification stream: the server answers nothing; stopping", zap.Error(err))
				l.err = err
				return
			}
			if ctx.Err() != nil {
				l.err = ctx.Err()
				return
			}
			l.log.Info("notification stream: reconnect failed", zap.Error(err), zap.Duration("next", backoff))
		}
		l.up.Store(true)
		l.log.Info("notification stream back; resync owed")
		l.flushResync()
	}
}

func jitter(d time.Duration) time.Duration {
	return d - d/5 + time.Duration(rand.Int64N(int64(d/5)*2+1))
}

// read delivers the events of one stream until it ends.
func (l *Listener) read(ctx context.Context, body io.ReadCloser) error {
	defer body.Close()
	stop := context.AfterFunc(ctx, func() { body.Close() })
	defer stop()
	defer l.timely.Store(false)
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	ping := l.cfg.Ping
	last, onTime := l.asked, 0
	for sc.Scan() {
		line := sc.Bytes()
		now := time.Now()
		gap := now.Sub(last)
		last = now
		if gap > 2*ping {
			l.timely.Store(false)
			onTime = 0
		}
		l.flushResync()
		var info notification.Info
		if len(strings.TrimSpace(string(line))) > 0 {
			if err := json.Unmarshal(line, &info); err != nil {
				l.log.Warn("notification stream: unreadable line", zap.Error(err))
				l.owe()
				continue
			}
		}
		if len(info.Records) == 0 { // a ping: {"Records":null}
			if gap >= ping/2 && gap <= 2*ping {
				if onTime++; onTime >= 2 {
					l.timely.Store(true)
				}
			} else {
				onTime = 0
			}
			continue
		}
		for _, r := range info.Records {
			ev, ok := l.event(r)
			if ok {
				l.send(ev)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return err
	}
	return io.EOF
}

func (l *Listener) event(r notification.Event) (Event, bool) {
	var kind Kind
	switch {
	case strings.HasPrefix(r.EventName, "s3:ObjectCreated:"):
		kind = Created
	case strings.HasPrefix(r.EventName, "s3:ObjectRemoved:") && l.cfg.Removed:
		kind = Removed
	default:
		return Event{}, false
	}
	if r.S3.Bucket.Name != "" && r.S3.Bucket.Name != l.cfg.Bucket {
		return Event{}, false
	}
	// MinIO escapes keys for its notification targets but publishes them
	// as they are on the listen stream.
	key := r.S3.Object.Key
	if !underAny(key, l.cfg.Prefixes) {
		return Event{}, false
	}
	ev := Event{Kind: kind, Key: key, Size: r.S3.Object.Size, ETag: strings.Trim(r.S3.Object.ETag, `"`)}
	if t, err := time.Parse(time.RFC3339Nano, r.EventTime); err == nil {
		ev.Time = t
	}
	return ev, true
}

func underAny(key string, prefixes []string) bool {
	if len(prefixes) == 0 {
		return true
	}
	for _, p := range prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// send delivers ev without blocking the stream: when the channel is full the
// event is dropped and a Resync is owed. Only the run goroutine sends.
func (l *Listener) send(ev Event) {
	select {
	case l.out <- ev:
	default:
		l.resync.Store(true)
	}
}

// owe records that events may have been lost.
func (l *Listener) owe() { l.resync.Store(true) }

// flushResync sends the owed Resync when there is room (at every line of
// the stream, pings included, and after a reconnection).
func (l *Listener) flushResync() {
	if !l.resync.Load() {
		return
	}
	select {
	case l.out <- Event{Kind: Resync}:
		l.resync.Store(false)
	default:
	}
}
