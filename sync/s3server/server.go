// Package s3server runs a real S3 server on loopback as a child process, for
// the tests (through sync/s3test), the demo (cmd/flotta-demo) and the bench
// (bench/). What every server shares (ports, certificates, start, readiness,
// stop) is in this file; each server has a file of its own saying how it is
// started (versitygw.go, minio.go).
package s3server

import (
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Default root credentials and region of a server started here.
const (
	AccessKey = "minioadmin"
	SecretKey = "minioadmin"
	Region    = "us-east-1"
)

// Options say how to run a server. Zero values take the documented defaults.
type Options struct {
	Dir    string // data directory (required); created when missing
	Binary string // the server's binary; "" looks for it (see each server)
	Port   int    // loopback port; 0 picks a free one
	// Access and Secret are the root credentials; default AccessKey and
	// SecretKey.
	Access, Secret string
	// TLS serves https with a certificate for 127.0.0.1 and localhost signed
	// by a fresh CA (Server.CAPEM), written under CertDir (default
	// Dir + ".certs").
	TLS     bool
	CertDir string
	Buckets []string  // created once the server answers
	Log     io.Writer // the server's output; nil keeps its last lines for errors
	// KeepAlive keeps connections open between requests (versitygw closes
	// each one after its response unless told otherwise; MinIO always keeps
	// them).
	KeepAlive bool
}

// Server is a running S3 server.
type Server struct {
	Host  string // "127.0.0.1"
	Port  int    //
	Dir   string // data directory
	CAPEM []byte // the CA that signed the server certificate (TLS only)

	name string                   // for messages: "versitygw"
	bin  string                   //
	args func(s *Server) []string // command line, from the current credentials
	env  func(s *Server) []string // extra environment; may be nil
	// readyPath is polled until it answers 200; "" takes any HTTP answer
	// from "/" as ready.
	readyPath string
	o         Options       // Access and Secret are the current ones
	log       io.Writer     //
	mu        sync.Mutex    // guards cmd and done
	cmd       *exec.Cmd     //
	done      chan struct{} // closed when cmd has exited
	exitErr   error         // why cmd exited, once done is closed
	tail      *tailBuffer   // last output lines when Options.Log is nil
	// external: the server runs outside this process (Ceph RGW's daemons);
	// attached: someone else stops it; stopHook runs at Stop (a tenant's
	// removal).
	external, attached, stopped bool
	stopHook                    func()
}

// start fills the defaults of s.o, then starts the server and waits until
// it answers and the buckets exist.
func (s *Server) start() error {
	if s.o.Dir == "" {
		return fmt.Errorf("%s: no data directory", s.name)
	}
	if s.o.Access == "" {
		s.o.Access, s.o.Secret = AccessKey, SecretKey
	}
	if err := os.MkdirAll(s.o.Dir, 0o755); err != nil {
		return err
	}
	s.Host, s.Dir = "127.0.0.1", s.o.Dir
	if s.Port = s.o.Port; s.Port == 0 {
		p, err := freePort()
		if err != nil {
			return err
		}
		s.Port = p
	}
	if s.o.TLS {
		if s.o.CertDir == "" {
			s.o.CertDir = s.o.Dir + ".certs"
		}
		ca, err := writeCerts(s.o.CertDir)
		if err != nil {
			return fmt.Errorf("%s: certificates: %w", s.name, err)
		}
		s.CAPEM = ca
	}
	s.log = s.o.Log
	if s.log == nil {
		s.tail = &tailBuffer{max: 8 << 10}
		s.log = s.tail
	}
	if err := s.run(); err != nil {
		return err
	}
	for _, b := range s.o.Buckets {
		if err := s.MakeBucket(context.Background(), b); err != nil {
			s.Stop()
			return err
		}
	}
	return nil
}

// run starts the process and waits until it answers HTTP.
func (s *Server) run() error {
	cmd := exec.Command(s.bin, s.args(s)...)
	if s.env != nil {
		cmd.Env = append(os.Environ(), s.env(s)...)
	}
	cmd.Stdout, cmd.Stderr = s.log, s.log
	// The server dies with the process that started it, even on kill -9.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", s.bin, err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	go func() { s.exitErr = cmd.Wait(); close(done) }()

	client := s.HTTPClient()
	client.Timeout = time.Second
	// MinIO formats its drive at the first start: give it time.
	deadline := time.Now().Add(60 * time.Second)
	path := s.readyPath
	if path == "" {
		path = "/"
	}
	for {
		select {
		case <-done:
			s.mu.Lock()
			s.cmd = nil
			s.mu.Unlock()
			return fmt.Errorf("%s exited at start: %v%s", s.name, s.exitErr, s.tail)
		default:
		}
		resp, err := client.Get(s.URL() + path)
		if err == nil {
			resp.Body.Close()
			if s.readyPath == "" || resp.StatusCode == http.StatusOK {
				return nil // any HTTP answer (403 for anonymous) means it serves
			}
			err = fmt.Errorf("%s: %s", path, resp.Status)
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("%s did not answer on %s: %v%s", s.name, s.URL(), err, s.tail)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Secure reports whether the server speaks https.
func (s *Server) Secure() bool { return s.o.TLS }

// Endpoint is host:port, as minio-go wants it.
func (s *Server) Endpoint() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// URL is the endpoint with its scheme.
func (s *Server) URL() string {
	if s.o.TLS {
		return "https://" + s.Endpoint()
	}
	return "http://" + s.Endpoint()
}

// Credentials are the server's current root access and secret keys.
func (s *Server) Credentials() (access, secret string) { return s.o.Access, s.o.Secret }

// Pid is the server's process id, 0 when it is stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// Stop kills the server and waits for it; the data stays for Restart.
func (s *Server) Stop() {
	if s.external {
		s.stopExternal()
		return
	}
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd = nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts the server again on the same port and data.
func (s *Server) Restart() error {
	if s.external {
		return fmt.Errorf("%s: restart is not offered", s.name)
	}
	s.Stop()
	return s.run()
}

// Rotate restarts the server on the same port and data with new root
// credentials: clients holding the old keys are refused from then on.
func (s *Server) Rotate(access, secret string) error {
	if s.external {
		return fmt.Errorf("%s: rotating the root credentials is not offered", s.name)
	}
	s.Stop()
	s.o.Access, s.o.Secret = access, secret
	return s.run()
}

// Client is a minio-go client with the current root credentials.
func (s *Server) Client() (*minio.Client, error) {
	return minio.New(s.Endpoint(), &minio.Options{
		Creds:     credentials.NewStaticV4(s.o.Access, s.o.Secret, ""),
		Secure:    s.o.TLS,
		Transport: s.HTTPClient().Transport,
		Region:    Region,
	})
}

// HTTPClient trusts the server's CA when it speaks TLS.
func (s *Server) HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.o.TLS {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.CAPEM)
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// MakeBucket creates a bucket through the S3 API.
func (s *Server) MakeBucket(ctx context.Context, name string) error {
	c, err := s.Client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := c.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: Region}); err != nil {
		return fmt.Errorf("%s: create bucket %s: %w", s.name, name, err)
	}
	return nil
}

// String describes the server for logs.
func (s *Server) String() string { return fmt.Sprintf("%s %s (data %s)", s.name, s.URL(), s.Dir) }

// findBinary returns explicit when set, else $envVar, else <module
// root>/bin/name, else name on PATH.
func findBinary(explicit, envVar, name string) (string, error) {
	if explicit != "" {
		if _, err := os.Stat(explicit); err != nil {
			return "", fmt.Errorf("%s not found at %s: run `make %s`", name, explicit, name)
		}
		return explicit, nil
	}
	if p := os.Getenv(envVar); p != "" {
		if _, err := os.Stat(p); err != nil {
			return "", fmt.Errorf("%s not found at $%s=%s: run `make %s`", name, envVar, p, name)
		}
		return p, nil
	}
	if root, ok := moduleRoot(); ok {
		p := filepath.Join(root, "bin", name)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	if p, err := exec.LookPath(name); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("%s not found: run `make %s` (or set $%s)", name, name, envVar)
}

// moduleRoot is the nearest directory above the working one holding go.mod.
func moduleRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for ; ; dir = filepath.Dir(dir) {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, true
		}
		if dir == filepath.Dir(dir) {
			return "", false
		}
	}
}

func errNoTLS(name string) error { return fmt.Errorf("%s: TLS is not served by this launcher", name) }

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = append(t.b[:0], t.b[over:]...)
	}
	return len(p), nil
}

// String is the kept output as the end of an error message ("" when none).
func (t *tailBuffer) String() string {
	if t == nil {
		return ""
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.b) == 0 {
		return ""
	}
	return "\n" + string(t.b)
}
