package s3test

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/project-flotta/flotta-device-worker/sync/s3server"
)

// Starter starts a server for one test (Start, StartMinIO, StartCephRGW).
type Starter func(testing.TB, ...Option) *Server

// Named is a server of the matrix with the name its subtests take.
type Named struct {
	Name  string
	Start Starter
}

// Matrix is the set of servers the S3 integration tests run on: versitygw,
// MinIO as released and Ceph RGW, in that order.
func Matrix() []Named {
	return []Named{{"versitygw", Start}, {"minio", StartMinIO}, {"ceph-rgw", StartCephRGW}}
}

// CephRGWDirEnv names a ceph-rgw.sh work dir whose cluster the tests share
// instead of starting their own (.ci/run starts one for every package).
const CephRGWDirEnv = "FLOTTA_CEPH_RGW_DIR"

var rgw struct {
	sync.Mutex
	srv    *s3server.Server
	err    error
	tmp    string // the directory of the cluster this process started
	inMain bool
}

// Main runs a package's tests and then stops the Ceph RGW cluster this
// process started, if any: a package whose tests call StartCephRGW has
// `func TestMain(m *testing.M) { s3test.Main(m) }`.
func Main(m *testing.M) {
	rgw.Lock()
	rgw.inMain = true
	rgw.Unlock()
	code := m.Run()
	rgw.Lock()
	if rgw.srv != nil {
		rgw.srv.Stop()
	}
	if rgw.tmp != "" {
		_ = os.RemoveAll(rgw.tmp)
	}
	rgw.Unlock()
	os.Exit(code)
}

// StartCephRGW gives the test a user of its own tenant (and so a bucket
// namespace of its own) on the Ceph RGW cluster of the test process: the one
// named by $FLOTTA_CEPH_RGW_DIR, else one started at the first call (about
// 20 s) and stopped by Main. The tenant and its data are removed when the
// test ends. It takes WithBuckets and WithCredentials, not WithTLS. Under
// -short it skips the test, as Start does.
func StartCephRGW(t testing.TB, opts ...Option) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("Ceph RGW: skipped under -short (needs Debian's ceph packages: see docs/s3-servers.md)")
	}
	o := s3server.Options{}
	for _, opt := range opts {
		opt(&o)
	}
	if o.TLS {
		t.Fatal("s3test: the Ceph RGW launcher does not serve TLS")
	}
	cluster, err := cephCluster()
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	srv, err := cluster.Tenant(o.Access, o.Secret)
	if err != nil {
		t.Fatalf("s3test: %v", err)
	}
	t.Cleanup(srv.Stop)
	s := &Server{Server: srv, t: t}
	for _, b := range o.Buckets {
		s.CreateBucket(b)
	}
	return s
}

func cephCluster() (*s3server.Server, error) {
	rgw.Lock()
	defer rgw.Unlock()
	if rgw.srv != nil || rgw.err != nil {
		return rgw.srv, rgw.err
	}
	if dir := os.Getenv(CephRGWDirEnv); dir != "" {
		rgw.srv, rgw.err = s3server.AttachCephRGW(dir)
		return rgw.srv, rgw.err
	}
	if !rgw.inMain {
		// The cluster's daemons outlive the process unless Main stops them.
		return nil, fmt.Errorf("ceph-rgw: the package needs `func TestMain(m *testing.M) { s3test.Main(m) }` (or $%s)", CephRGWDirEnv)
	}
	dir, err := os.MkdirTemp("", "flotta-ceph-rgw-")
	if err != nil {
		return nil, err
	}
	rgw.srv, rgw.err = s3server.StartCephRGW(s3server.Options{Dir: filepath.Join(dir, "rgw")})
	rgw.tmp = dir
	return rgw.srv, rgw.err
}
