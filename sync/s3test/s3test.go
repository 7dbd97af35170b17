// Package s3test runs a real S3 server (versitygw) on loopback for tests.
//
// The binary is found through $VERSITYGW, <repo root>/bin/versitygw or PATH;
// when it is missing the test fails with a message saying how to install it.
package s3test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
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

// AccessKey and SecretKey are the root credentials of every server started here.
const (
	AccessKey = "minioadmin"
	SecretKey = "minioadmin"
	Region    = "us-east-1"
)

// Option changes how Start runs the server.
type Option func(*config)

type config struct {
	buckets        []string
	tls            bool
	access, secret string
}

// WithBuckets creates these buckets once the server answers.
func WithBuckets(names ...string) Option {
	return func(c *config) { c.buckets = append(c.buckets, names...) }
}

// WithCredentials runs the server with these root credentials instead of
// AccessKey and SecretKey (e.g. distinctive ones a test greps logs for).
func WithCredentials(access, secret string) Option {
	return func(c *config) { c.access, c.secret = access, secret }
}

// WithTLS serves https with a certificate for 127.0.0.1 signed by a fresh CA (see Server.CAPEM).
func WithTLS() Option { return func(c *config) { c.tls = true } }

// Server is a running versitygw.
type Server struct {
	t       testing.TB
	bin     string
	Host    string // "127.0.0.1"
	Port    int
	Dir     string // the posix backend's root: one directory per bucket
	CAPEM   []byte // the CA that signed the server certificate (TLS only)
	tls     bool
	access  string
	secret  string
	certDir string
	cmd     *exec.Cmd
	done    chan struct{}
}

// Start runs versitygw on a free loopback port and stops it when the test
// ends. Under -short (the Makefile's "tests that need no external service",
// and the RPM's %check) it skips the test; `make test` never passes -short.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("S3 server: skipped under -short (needs versitygw: make versitygw)")
	}
	c := config{access: AccessKey, secret: SecretKey}
	for _, o := range opts {
		o(&c)
	}
	s := &Server{t: t, bin: findBinary(t), Host: "127.0.0.1", Dir: t.TempDir(), tls: c.tls,
		access: c.access, secret: c.secret}
	if c.tls {
		s.certDir = t.TempDir()
		s.CAPEM = writeCerts(t, s.certDir)
	}
	s.Port = freePort(t)
	s.start()
	t.Cleanup(s.Stop)
	for _, b := range c.buckets {
		s.CreateBucket(b)
	}
	return s
}

// Credentials are the server's root access and secret keys.
func (s *Server) Credentials() (access, secret string) { return s.access, s.secret }

// Secure reports whether the server speaks https.
func (s *Server) Secure() bool { return s.tls }

// Endpoint is host:port, as minio-go wants it.
func (s *Server) Endpoint() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// URL is the endpoint with its scheme.
func (s *Server) URL() string {
	if s.tls {
		return "https://" + s.Endpoint()
	}
	return "http://" + s.Endpoint()
}

// Stop kills the server; the data directory stays for Restart.
func (s *Server) Stop() {
	if s.cmd == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port and data directory.
func (s *Server) Restart() {
	s.t.Helper()
	s.Stop()
	s.start()
}

// CreateBucket makes a bucket through the S3 API.
func (s *Server) CreateBucket(name string) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Client().MakeBucket(ctx, name, minio.MakeBucketOptions{Region: Region}); err != nil {
		s.t.Fatalf("s3test: create bucket %s: %v", name, err)
	}
}

// Client is a minio-go client with the root credentials, for arranging and
// inspecting test data.
func (s *Server) Client() *minio.Client {
	s.t.Helper()
	c, err := minio.New(s.Endpoint(), &minio.Options{
		Creds:     credentials.NewStaticV4(s.access, s.secret, ""),
		Secure:    s.tls,
		Transport: s.HTTPClient().Transport,
		Region:    Region,
	})
	if err != nil {
		s.t.Fatalf("s3test: client: %v", err)
	}
	return c
}

// HTTPClient trusts the server's CA when it speaks TLS.
func (s *Server) HTTPClient() *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if s.tls {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(s.CAPEM)
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (s *Server) start() {
	s.t.Helper()
	args := []string{"--port", s.Endpoint(), "--access", s.access, "--secret", s.secret, "--quiet"}
	if s.tls {
		args = append(args, "--cert", filepath.Join(s.certDir, "server.pem"), "--key", filepath.Join(s.certDir, "server.key"))
	}
	args = append(args, "posix", s.Dir)
	cmd := exec.Command(s.bin, args...)
	out, err := os.Create(filepath.Join(s.t.TempDir(), "versitygw.log"))
	if err != nil {
		s.t.Fatalf("s3test: log file: %v", err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		s.t.Fatalf("s3test: start %s: %v", s.bin, err)
	}
	s.cmd, s.done = cmd, make(chan struct{})
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); out.Close(); close(s.done) }()

	client := s.HTTPClient()
	client.Timeout = time.Second
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case err := <-exited:
			log, _ := os.ReadFile(out.Name())
			s.cmd = nil
			s.t.Fatalf("s3test: versitygw exited at start: %v\n%s", err, log)
		default:
		}
		resp, err := client.Get(s.URL() + "/")
		if err == nil {
			resp.Body.Close()
			return // any HTTP answer (403 for anonymous) means it serves
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("s3test: versitygw did not answer on %s: %v", s.URL(), err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func findBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("VERSITYGW"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		t.Fatalf("versitygw not found at $VERSITYGW=%s: run `make versitygw`", p)
	}
	if dir, err := os.Getwd(); err == nil {
		for ; ; dir = filepath.Dir(dir) {
			if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
				p := filepath.Join(dir, "bin", "versitygw")
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
	if p, err := exec.LookPath("versitygw"); err == nil {
		return p
	}
	t.Fatal("versitygw not found: run `make versitygw` (or set $VERSITYGW)")
	return ""
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("s3test: free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// writeCerts writes server.pem/server.key for 127.0.0.1 and returns the CA PEM.
func writeCerts(t testing.TB, dir string) []byte {
	t.Helper()
	must := func(err error) {
		if err != nil {
			t.Fatalf("s3test: certificates: %v", err)
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "s3test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(err)
	ca, err := x509.ParseCertificate(caDER)
	must(err)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(err)
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	must(err)
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	must(err)
	must(os.WriteFile(filepath.Join(dir, "server.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvDER}), 0o600))
	must(os.WriteFile(filepath.Join(dir, "server.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600))
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
}

// String describes the server for test logs.
func (s *Server) String() string { return fmt.Sprintf("versitygw %s (data %s)", s.URL(), s.Dir) }
