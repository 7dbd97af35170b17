package notify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap/zaptest"

	"github.com/project-flotta/flotta-device-worker/sync/s3client"
	"github.com/project-flotta/flotta-device-worker/sync/s3test"
)

func TestMain(m *testing.M) { s3test.Main(m) }

func TestCommonPrefix(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
	}{
		{nil, ""},
		{[]string{"a/b/"}, "a/b/"},
		{[]string{"in/a/", "in/b/"}, "in/"},
		{[]string{"in/ab/", "in/a/"}, "in/a"},
		{[]string{"x/", "y/"}, ""},
		{[]string{"", "y/"}, ""},
	} {
		if got := commonPrefix(c.in); got != c.want {
			t.Errorf("commonPrefix(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func s3config(host string, port int, access, secret string, count *s3client.Counter) s3client.Config {
	c := s3client.Config{Host: host, Port: port, AccessKey: access, SecretKey: secret, Region: s3test.Region}
	if count != nil {
		c.Wrap = count.Wrap
	}
	return c
}

// Servers without MinIO's listen API say so at the first request.
func TestUnsupportedAtOnce(t *testing.T) {
	for _, server := range []s3test.Named{{Name: "versitygw", Start: s3test.Start}, {Name: "ceph-rgw", Start: s3test.StartCephRGW}} {
		t.Run(server.Name, func(t *testing.T) { testUnsupportedAtOnce(t, server.Start(t, s3test.WithBuckets("data"))) })
	}
}

func testUnsupportedAtOnce(t *testing.T, srv *s3test.Server) {
	access, secret := srv.Credentials()
	count := &s3client.Counter{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	start := time.Now()
	l, err := Listen(ctx, Config{S3: s3config(srv.Host, srv.Port, access, secret, count), Bucket: "data", Prefixes: []string{"in/"}, Log: zaptest.NewLogger(t)})
	took := time.Since(start)
	if !errors.Is(err, ErrUnsupported) || l != nil {
		t.Fatalf("Listen: %v, %v; want ErrUnsupported", l, err)
	}
	t.Logf("%v after %s", err, took)
	if took > 2*time.Second {
		t.Errorf("detecting no support took %s", took)
	}
	time.Sleep(300 * time.Millisecond)
	if n := count.Requests(); n != 1 {
		t.Errorf("%d requests: want exactly one, no retry loop", n)
	}
}

func TestServerAnswers(t *testing.T) {
	for _, c := range []struct {
		status      int
		contentType string
		body        string
		unsupported bool
	}{
		{http.StatusNotImplemented, "application/xml", "<Error><Code>NotImplemented</Code></Error>", true},
		{http.StatusMethodNotAllowed, "application/xml", "<Error><Code>MethodNotAllowed</Code></Error>", true},
		{http.StatusForbidden, "application/xml", "<Error><Code>AccessDenied</Code></Error>", true},
		{http.StatusBadRequest, "application/xml", "<Error><Code>InvalidArgument</Code></Error>", true},
		{http.StatusOK, "application/xml", "<ListBucketResult></ListBucketResult>", true},
		{http.StatusServiceUnavailable, "application/xml", "<Error><Code>SlowDown</Code></Error>", false},
	} {
		t.Run(strconv.Itoa(c.status)+c.contentType, func(t *testing.T) {
			hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", c.contentType)
				w.WriteHeader(c.status)
				fmt.Fprint(w, c.body)
			}))
			defer hs.Close()
			host, port, _ := net.SplitHostPort(hs.Listener.Addr().String())
			p, _ := strconv.Atoi(port)
			cfg := Config{S3: s3config(host, p, "a", "b", nil), Bucket: "data"}
			_, err := Listen(context.Background(), cfg)
			if err == nil {
				t.Fatal("no error")
			}
			if errors.Is(err, ErrUnsupported) != c.unsupported {
				t.Errorf("%v: unsupported %v, want %v", err, errors.Is(err, ErrUnsupported), c.unsupported)
			}
		})
	}
}

func put(t *testing.T, c *minio.Client, bucket, key string) time.Time {
	t.Helper()
	start := time.Now()
	if _, err := c.PutObject(context.Background(), bucket, key, bytes.NewReader([]byte(key)), int64(len(key)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	return start
}

func next(t *testing.T, l *Listener, within time.Duration) Event {
	t.Helper()
	select {
	case ev, ok := <-l.Events():
		if !ok {
			t.Fatalf("events closed: %v", l.Err())
		}
		return ev
	case <-time.After(within):
		t.Fatalf("no event within %s", within)
	}
	return Event{}
}

func listenMinIO(t *testing.T, m *s3test.Server, cfg Config) (*Listener, context.CancelFunc) {
	access, secret := m.Credentials()
	cfg.S3 = s3config(m.Host, m.Port, access, secret, nil)
	cfg.Bucket = "data"
	cfg.Log = zaptest.NewLogger(t)
	ctx, cancel := context.WithCancel(context.Background())
	start := time.Now()
	l, err := Listen(ctx, cfg)
	if err != nil {
		cancel()
		t.Fatalf("Listen on MinIO: %v", err)
	}
	t.Logf("stream up after %s", time.Since(start))
	if !l.Connected() {
		t.Error("not connected")
	}
	return l, cancel
}

func TestMinIOPushEventsArriveAtOnce(t *testing.T) {
	m := s3test.StartMinIOPush(t, s3test.WithBuckets("data"))
	l, cancel := listenMinIO(t, m, Config{Prefixes: []string{"in/a/", "in/b/"}, Removed: true, Ping: time.Second})
	c := m.Client()
	var worst time.Duration
	for _, key := range []string{"in/a/one.txt", "in/b/sp ace+plus%25 é.bin", "in/a/deep/er/x"} {
		put(t, c, "data", "in/c/not-mine")
		sent := put(t, c, "data", key)
		ev := next(t, l, time.Second)
		lat := time.Since(sent)
		worst = max(worst, lat)
		if ev.Kind != Created || ev.Key != key || ev.Size != int64(len(key)) || ev.ETag == "" || ev.Time.IsZero() {
			t.Errorf("event %+v, want created %q", ev, key)
		}
	}
	t.Logf("worst latency put -> event: %s", worst)
	if err := c.RemoveObject(context.Background(), "data", "in/a/one.txt", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, l, time.Second); ev.Kind != Removed || ev.Key != "in/a/one.txt" {
		t.Errorf("event %+v, want removed", ev)
	}
	// Multipart completion is an ObjectCreated event too.
	big := bytes.Repeat([]byte("m"), 6<<20)
	if _, err := c.PutObject(context.Background(), "data", "in/b/multi", bytes.NewReader(big), int64(len(big)), minio.PutObjectOptions{PartSize: 5 << 20}); err != nil {
		t.Fatal(err)
	}
	if ev := next(t, l, time.Second); ev.Kind != Created || ev.Key != "in/b/multi" || ev.Size != int64(len(big)) {
		t.Errorf("event %+v, want the multipart object", ev)
	}
	cancel()
	select {
	case _, ok := <-l.Events():
		for ok {
			_, ok = <-l.Events()
		}
	case <-time.After(2 * time.Second):
		t.Fatal("events not closed after cancel")
	}
	if !errors.Is(l.Err(), context.Canceled) {
		t.Errorf("Err() = %v", l.Err())
	}
}

func TestMinIOPushRestartMeansResync(t *testing.T) {
	m := s3test.StartMinIOPush(t, s3test.WithBuckets("data"))
	l, cancel := listenMinIO(t, m, Config{Prefixes: []string{"in/"}, Ping: time.Second, MinBackoff: 200 * time.Millisecond, MaxBackoff: time.Second})
	defer cancel()
	m.Stop()
	deadline := time.Now().Add(5 * time.Second)
	for l.Connected() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if l.Connected() {
		t.Fatal("still connected with the server stopped")
	}
	m.Restart()
	if ev := next(t, l, 15*time.Second); ev.Kind != Resync {
		t.Fatalf("first event after the restart: %+v, want resync", ev)
	}
	if !l.Connected() {
		t.Error("not connected after resync")
	}
	sent := put(t, m.Client(), "data", "in/after")
	if ev := next(t, l, time.Second); ev.Kind != Created || ev.Key != "in/after" {
		t.Errorf("event %+v", ev)
	}
	t.Logf("latency after reconnect: %s", time.Since(sent))
}

func TestMinIOPushFullChannelMeansResync(t *testing.T) {
	m := s3test.StartMinIOPush(t, s3test.WithBuckets("data"))
	l, cancel := listenMinIO(t, m, Config{Buffer: 2, Ping: time.Second})
	defer cancel()
	c := m.Client()
	for i := 0; i < 6; i++ {
		put(t, c, "data", fmt.Sprintf("k%d", i))
	}
	time.Sleep(300 * time.Millisecond)
	var kinds []Kind
	deadline := time.After(4 * time.Second)
	for len(kinds) == 0 || kinds[len(kinds)-1] != Resync {
		select {
		case ev := <-l.Events():
			kinds = append(kinds, ev.Kind)
		case <-deadline:
			t.Fatalf("no resync after dropped events; got %v", kinds)
		}
	}
	if len(kinds) < 3 || kinds[0] != Created || kinds[1] != Created {
		t.Errorf("events %v, want two created then a resync", kinds)
	}
}

// TestSilentStreamIsDroppedAndResynced: a server that opens the stream and
// then sends nothing (no ping) is taken as gone after three pings' time;
// the listener reconnects and owes a resync.
func TestSilentStreamIsDroppedAndResynced(t *testing.T) {
	var conns atomic.Int64
	release := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := conns.Add(1)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(http.StatusOK)
		fmt.Fprintln(w, `{"Records":null}`)
		w.(http.Flusher).Flush()
		if n == 1 {
			select { // silent from now on
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		for { // then a healthy stream with one event
			fmt.Fprintln(w, `{"Records":[{"eventName":"s3:ObjectCreated:Put","s3":{"bucket":{"name":"data"},"object":{"key":"in/x","size":1}}}]}`)
			w.(http.Flusher).Flush()
			select {
			case <-time.After(time.Second):
			case <-r.Context().Done():
				return
			case <-release:
				return
			}
		}
	}))
	defer hs.Close()
	defer close(release)
	host, port, _ := net.SplitHostPort(hs.Listener.Addr().String())
	p, _ := strconv.Atoi(port)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	l, err := Listen(ctx, Config{S3: s3config(host, p, "a", "b", nil), Bucket: "data", Prefixes: []string{"in/"},
		Ping: 500 * time.Millisecond, MinBackoff: 100 * time.Millisecond, Log: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if ev := next(t, l, 5*time.Second); ev.Kind != Resync {
		t.Fatalf("first event %+v, want resync", ev)
	}
	t.Logf("silent stream dropped and back after %s", time.Since(start))
	if ev := next(t, l, 2*time.Second); ev.Kind != Created || ev.Key != "in/x" {
		t.Errorf("event %+v", ev)
	}
	if conns.Load() < 2 {
		t.Errorf("%d connections", conns.Load())
	}
}
