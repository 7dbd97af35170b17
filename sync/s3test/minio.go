package s3test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// MinIO is a running MinIO server (a test tool only: MinIO is AGPL and is
// never linked into the project). It serves bucket notifications, which
// versitygw does not.
//
// The binary is found through $MINIO, <repo root>/bin/minio or PATH; when it
// is missing the test fails with a message saying `make minio`.
type MinIO struct {
	t           testing.TB
	bin         string
	Host        string // "127.0.0.1"
	Port        int
	ConsolePort int
	Dir         string // the data directory
	access      string
	secret      string
	cmd         *exec.Cmd
	done        chan struct{}
	logPath     string
}

// StartMinIO runs MinIO on free loopback ports and stops it when the test
// ends. It takes WithBuckets and WithCredentials (not WithTLS). Under -short
// it skips the test, as Start does.
func StartMinIO(t testing.TB, opts ...Option) *MinIO {
	t.Helper()
	if testing.Short() {
		t.Skip("MinIO: skipped under -short (needs minio: make minio)")
	}
	c := config{access: AccessKey, secret: SecretKey}
	for _, o := range opts {
		o(&c)
	}
	if c.tls {
		t.Fatal("s3test: StartMinIO does not serve TLS")
	}
	m := &MinIO{t: t, bin: findTool(t, "minio", "MINIO", "make minio"), Host: "127.0.0.1", Dir: t.TempDir(), access: c.access, secret: c.secret}
	m.Port, m.ConsolePort = freePort(t), freePort(t)
	for m.ConsolePort == m.Port {
		m.ConsolePort = freePort(t)
	}
	m.logPath = filepath.Join(t.TempDir(), "minio.log")
	m.start()
	t.Cleanup(m.Stop)
	for _, b := range c.buckets {
		m.CreateBucket(b)
	}
	return m
}

// Endpoint is host:port, as minio-go wants it.
func (m *MinIO) Endpoint() string { return net.JoinHostPort(m.Host, strconv.Itoa(m.Port)) }

// URL is the endpoint with its scheme.
func (m *MinIO) URL() string { return "http://" + m.Endpoint() }

// Secure is false: StartMinIO serves plain http.
func (m *MinIO) Secure() bool { return false }

// Credentials are the server's root access and secret keys.
func (m *MinIO) Credentials() (access, secret string) { return m.access, m.secret }

// String describes the server for test logs.
func (m *MinIO) String() string { return fmt.Sprintf("minio %s (data %s)", m.URL(), m.Dir) }

// Log returns what the server printed so far.
func (m *MinIO) Log() string {
	b, _ := os.ReadFile(m.logPath)
	return string(b)
}

// Stop kills the server; the data directory stays for Restart.
func (m *MinIO) Stop() {
	if m.cmd == nil {
		return
	}
	_ = m.cmd.Process.Kill()
	<-m.done
	m.cmd = nil
}

// Restart starts the server again on the same ports and data directory.
func (m *MinIO) Restart() {
	m.t.Helper()
	m.Stop()
	m.start()
}

// Client is a minio-go client with the root credentials, for arranging and
// inspecting test data.
func (m *MinIO) Client() *minio.Client {
	m.t.Helper()
	c, err := minio.New(m.Endpoint(), &minio.Options{Creds: credentials.NewStaticV4(m.access, m.secret, ""), Region: Region})
	if err != nil {
		m.t.Fatalf("s3test: minio client: %v", err)
	}
	return c
}

// CreateBucket makes a bucket through the S3 API.
func (m *MinIO) CreateBucket(name string) {
	m.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Client().MakeBucket(ctx, name, minio.MakeBucketOptions{Region: Region}); err != nil {
		m.t.Fatalf("s3test: minio: create bucket %s: %v", name, err)
	}
}

func (m *MinIO) start() {
	m.t.Helper()
	cmd := exec.Command(m.bin, "server", "--quiet",
		"--address", m.Endpoint(),
		"--console-address", net.JoinHostPort(m.Host, strconv.Itoa(m.ConsolePort)),
		m.Dir)
	cmd.Env = append(os.Environ(),
		"MINIO_ROOT_USER="+m.access, "MINIO_ROOT_PASSWORD="+m.secret,
		"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CALLHOME_ENABLE=off")
	out, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		m.t.Fatalf("s3test: minio log file: %v", err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		out.Close()
		m.t.Fatalf("s3test: start %s: %v", m.bin, err)
	}
	m.cmd, m.done = cmd, make(chan struct{})
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); out.Close(); close(m.done) }()

	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case err := <-exited:
			m.cmd = nil
			m.t.Fatalf("s3test: minio exited at start: %v\n%s", err, m.Log())
		default:
		}
		resp, err := client.Get(m.URL() + "/minio/health/live")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			m.t.Fatalf("s3test: minio not live on %s after 60s: %v\n%s", m.URL(), err, m.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// findTool finds a test server's binary through $env, <repo root>/bin/name
// or PATH, and fails the test saying how to install it.
func findTool(t testing.TB, name, env, install string) string {
	t.Helper()
	if p := os.Getenv(env); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		t.Fatalf("%s not found at $%s=%s: run `%s`", name, env, p, install)
	}
	if dir, err := os.Getwd(); err == nil {
		for ; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, "bin", name)
				if _, err := os.Stat(p); err == nil {
					return p
				}
				break
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	t.Fatalf("%s not found: run `%s` (or set $%s)", name, install, env)
	return ""
}
