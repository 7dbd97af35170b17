// Package s3test runs a real S3 server (versitygw, or MinIO for bucket
// notifications) on loopback for tests: the
// testing.TB face of sync/s3server, which the demo and the bench use directly.
//
// The binary is found through $VERSITYGW, <repo root>/bin/versitygw or PATH;
// when it is missing the test fails with a message saying how to install it.
package s3test

import (
	"context"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/project-flotta/flotta-device-worker/sync/s3server"
)

// AccessKey and SecretKey are the default root credentials of a server
// started here (see WithCredentials).
const (
	AccessKey = s3server.AccessKey
	SecretKey = s3server.SecretKey
	Region    = s3server.Region
)

// Option changes how Start runs the server.
type Option func(*s3server.Options)

// WithCredentials sets the server's root credentials instead of AccessKey and
// SecretKey (versitygw has a single root account).
func WithCredentials(access, secret string) Option {
	return func(o *s3server.Options) { o.Access, o.Secret = access, secret }
}

// WithBuckets creates these buckets once the server answers.
func WithBuckets(names ...string) Option {
	return func(o *s3server.Options) { o.Buckets = append(o.Buckets, names...) }
}

// WithTLS serves https with a certificate for 127.0.0.1 signed by a fresh CA (see Server.CAPEM).
func WithTLS() Option { return func(o *s3server.Options) { o.TLS = true } }

// Server is a running versitygw whose failures fail the test.
type Server struct {
	*s3server.Server
	t testing.TB
}

// Start runs versitygw on a free loopback port and stops it when the test
// ends. Under -short (the Makefile's "tests that need no external service",
// and the RPM's %check) it skips the test; `make test` never passes -short.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("S3 server: skipped under -short (needs versitygw: make versitygw)")
	}
	o := s3server.Options{Dir: t.TempDir(), CertDir: t.TempDir()}
	for _, opt := range opts {
		opt(&o)
	}
	srv, err := s3server.StartVersitygw(o)
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	t.Cleanup(srv.Stop)
	return &Server{Server: srv, t: t}
}

// StartMinIO runs MinIO as released (see s3server.StartMinIO) on a free
// loopback port and stops it when the test ends; it takes WithBuckets and
// WithCredentials (not WithTLS). Under -short it skips the test, as Start
// does.
func StartMinIO(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return startMinIO(t, s3server.StartMinIO, opts)
}

// StartMinIOPush runs the MinIO whose notification stream works (see
// s3server.StartMinIOPush), for the tests of push ingress, as StartMinIO.
func StartMinIOPush(t testing.TB, opts ...Option) *Server {
	t.Helper()
	return startMinIO(t, s3server.StartMinIOPush, opts)
}

func startMinIO(t testing.TB, start func(s3server.Options) (*s3server.Server, error), opts []Option) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("MinIO: skipped under -short (needs minio: make minio)")
	}
	o := s3server.Options{Dir: t.TempDir()}
	for _, opt := range opts {
		opt(&o)
	}
	srv, err := start(o)
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	t.Cleanup(srv.Stop)
	return &Server{Server: srv, t: t}
}

// Restart starts the server again on the same port and data directory.
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.Server.Restart(); err != nil {
		s.t.Fatalf("s3test: restart: %v", err)
	}
}

// Rotate restarts the server on the same port and data with new root
// credentials: clients holding the old keys are refused from then on.
func (s *Server) Rotate(access, secret string) {
	s.t.Helper()
	if err := s.Server.Rotate(access, secret); err != nil {
		s.t.Fatalf("s3test: rotate credentials: %v", err)
	}
}

// CreateBucket makes a bucket through the S3 API.
func (s *Server) CreateBucket(name string) {
	s.t.Helper()
	if err := s.MakeBucket(context.Background(), name); err != nil {
		s.t.Fatalf("s3test: %v", err)
	}
}

// Client is a minio-go client with the current root credentials, for arranging and
// inspecting test data.
func (s *Server) Client() *minio.Client {
	s.t.Helper()
	c, err := s.Server.Client()
	if err != nil {
		s.t.Fatalf("s3test: client: %v", err)
	}
	return c
}
