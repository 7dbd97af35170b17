package s3server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// StartCephRGW runs a Ceph RADOS Gateway (radosgw over a one-monitor,
// one-OSD memstore cluster, Debian's Ceph packages) on loopback through the
// script ceph-rgw.sh, and waits until its S3 user authenticates (15 to 60 s:
// start one per test process and give each test a Tenant). The script is
// o.Binary, else $CEPH_RGW_SCRIPT, else <module root>/../shared/servers/ceph-rgw.sh, else
// <module root>/.ci/servers/ceph-rgw.sh
// (it installs the Debian packages when they are missing, unless
// CEPH_RGW_NO_INSTALL=1). Its memstore holds the objects in RAM, capped by
// $RGW_MEMSTORE_BYTES (2 GiB by default): a full one blocks writes. Stop
// removes the cluster and its data; Restart and Rotate are not offered.
func StartCephRGW(o Options) (*Server, error) {
	script, err := cephScript(o.Binary)
	if err != nil {
		return nil, err
	}
	if o.TLS {
		return nil, errNoTLS("ceph-rgw")
	}
	if o.Dir == "" {
		return nil, errors.New("ceph-rgw: no data directory")
	}
	if o.Access == "" {
		o.Access, o.Secret = AccessKey, SecretKey
	}
	s := &Server{name: "ceph-rgw", bin: script, o: o, Host: "127.0.0.1", Dir: o.Dir, Port: o.Port}
	if s.Port == 0 {
		if s.Port, err = freePort(); err != nil {
			return nil, err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// Through bash: a copy of the script may have lost its execute bit.
	cmd := exec.CommandContext(ctx, "bash", script, "start", o.Dir, strconv.Itoa(s.Port))
	cmd.Env = append(os.Environ(), "RGW_ACCESS_KEY="+o.Access, "RGW_SECRET_KEY="+o.Secret)
	if out, err := cmd.CombinedOutput(); err != nil {
		// A failed start stops what it started and keeps the logs; remove them.
		_ = exec.Command("bash", script, "stop", o.Dir).Run()
		return nil, fmt.Errorf("ceph-rgw: %s start: %v\n%s", script, err, lastLines(out, 40))
	}
	s.external = true
	for _, b := range o.Buckets {
		if err := s.MakeBucket(context.Background(), b); err != nil {
			s.Stop()
			return nil, err
		}
	}
	return s, nil
}

// AttachCephRGW is a Server for a Ceph RGW already started by ceph-rgw.sh in
// dir (by CI, once for every test package); Stop leaves it running.
func AttachCephRGW(dir string) (*Server, error) {
	script, err := cephScript("")
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "port"))
	if err != nil {
		return nil, fmt.Errorf("ceph-rgw: %s is not a running ceph-rgw.sh work dir: %w", dir, err)
	}
	port, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		return nil, fmt.Errorf("ceph-rgw: %s/port: %w", dir, err)
	}
	return &Server{name: "ceph-rgw", bin: script, Host: "127.0.0.1", Port: port, Dir: dir,
		o: Options{Dir: dir, Access: AccessKey, Secret: SecretKey}, external: true, attached: true}, nil
}

// Tenant creates an S3 user of its own tenant on a Ceph RGW: its buckets
// live in a namespace of their own, so tests sharing one cluster may all use
// the bucket "data". access may be "" for fresh keys. The returned Server
// talks to the same radosgw; its Stop deletes the user with its buckets and
// objects (memstore keeps them in RAM).
func (s *Server) Tenant(access, secret string) (*Server, error) {
	if s.name != "ceph-rgw" {
		return nil, fmt.Errorf("%s: tenants are a Ceph RGW feature", s.name)
	}
	id := randomHex(6)
	if access == "" {
		access, secret = "AK"+strings.ToUpper(randomHex(9)), randomHex(20)
	}
	tenant := "t" + id
	if out, err := s.radosgwAdmin("user", "create", "--tenant", tenant, "--uid", "u", "--display-name", tenant,
		"--access-key", access, "--secret", secret); err != nil {
		return nil, fmt.Errorf("ceph-rgw: create tenant user: %v\n%s", err, lastLines(out, 20))
	}
	t := &Server{name: "ceph-rgw", bin: s.bin, Host: s.Host, Port: s.Port, Dir: s.Dir,
		o: Options{Dir: s.Dir, Access: access, Secret: secret}, external: true, attached: true}
	t.stopHook = func() {
		_, _ = s.radosgwAdmin("user", "rm", "--tenant", tenant, "--uid", "u", "--purge-data")
	}
	return t, nil
}

func (s *Server) radosgwAdmin(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return exec.CommandContext(ctx, "radosgw-admin", append([]string{"-c", filepath.Join(s.Dir, "ceph.conf")}, args...)...).CombinedOutput()
}

// stopExternal ends a server that runs outside this process.
func (s *Server) stopExternal() {
	if s.stopHook != nil {
		s.stopHook()
		s.stopHook = nil
	}
	if s.attached || s.stopped {
		return
	}
	s.stopped = true
	if out, err := exec.Command("bash", s.bin, "stop", s.Dir).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "ceph-rgw: stop %s: %v\n%s", s.Dir, err, lastLines(out, 20))
	}
}

func cephScript(explicit string) (string, error) {
	if explicit != "" {
		return explicit, nil
	}
	if p := os.Getenv("CEPH_RGW_SCRIPT"); p != "" {
		return p, nil
	}
	if root, ok := moduleRoot(); ok {
		// The project lead's copy beside the checkout wins; a clone on its
		// own (CI) uses the one kept in .ci/servers.
		for _, p := range []string{
			filepath.Join(filepath.Dir(root), "shared", "servers", "ceph-rgw.sh"),
			filepath.Join(root, ".ci", "servers", "ceph-rgw.sh"),
		} {
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
	}
	return "", errors.New("ceph-rgw: ceph-rgw.sh not found (../shared/servers/ceph-rgw.sh or .ci/servers/ceph-rgw.sh): set $CEPH_RGW_SCRIPT")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func lastLines(out []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
