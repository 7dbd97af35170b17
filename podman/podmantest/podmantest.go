// Package podmantest starts a private, real podman service for tests.
//
// Start(t) needs `podman` (rootful: tests run as root), `runc` and a static
// /bin/busybox on the machine; on Debian: apt-get install podman runc
// busybox-static. Each service gets its own storage, run and temporary
// directories (vfs driver, under a fresh temporary directory), so test
// packages that run in parallel never see each other's pods or images, and
// the busybox image is imported into that storage once per service.
package podmantest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Image is the name of the local busybox image every service holds. Its tag is
// not "latest", so play kube does not try to pull a newer one.
const Image = "localhost/flotta-busybox:test"

// Packages names the Debian packages the service needs.
const Packages = "podman runc busybox-static catatonit"

// Service is a running podman service.
type Service struct {
	URI    string // connection URI for the bindings, unix://<Socket>
	Socket string // path of the service's unix socket
	Image  string // local image with /bin/sh (busybox), see Image
	Dir    string // private state of the service; removed in cleanup
	Env    []string
	// Env is what a podman CLI (or another process) needs to share this
	// service's configuration: CONTAINERS_CONF=<Dir>/containers.conf.

	global []string // podman global flags selecting the private storage
	cmd    *exec.Cmd
	exited chan struct{}
}

// Start starts a podman service for the test and stops it, with every pod
// and container it ran, when the test ends. It fails the test with a message
// naming the packages to install when podman is missing. Under -short (the
// Makefile's "tests that need no external service") it skips the test.
func Start(t testing.TB) *Service {
	t.Helper()
	return StartWithEnv(t)
}

// StartWithEnv is Start with extra environment for the service and the CLI,
// such as CONTAINERS_REGISTRIES_CONF=<file> for a test registry.
func StartWithEnv(t testing.TB, env ...string) *Service {
	t.Helper()
	if testing.Short() {
		t.Skip("podman service: skipped under -short (needs " + Packages + ")")
	}
	s, err := launch(env)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Logf("%v", err)
		}
	})
	return s
}

// Launch starts a private podman service outside of a test (the demo uses
// it); Close stops it. The error names the packages to install when podman
// is missing.
func Launch() (*Service, error) { return launch(nil) }

func launch(extraEnv []string) (*Service, error) {
	for _, bin := range []string{"podman", "runc"} {
		if _, err := exec.LookPath(bin); err != nil {
			return nil, fmt.Errorf("%s not found on PATH (%v): install the Debian packages %s", bin, err, Packages)
		}
	}
	// A short path: the socket's path must fit in 108 bytes.
	dir, err := os.MkdirTemp("", "podmantest-")
	if err != nil {
		return nil, fmt.Errorf("podman service: %w", err)
	}
	s := &Service{Dir: dir, Socket: filepath.Join(dir, "podman.sock"), Image: Image, exited: make(chan struct{})}
	s.URI = "unix://" + s.Socket
	s.global = []string{
		"--root", filepath.Join(dir, "storage"),
		"--runroot", filepath.Join(dir, "run"),
		"--tmpdir", filepath.Join(dir, "tmp"),
		"--storage-driver", "vfs",
	}
	conf, err := writeContainersConf(dir)
	if err == nil {
		s.Env = append([]string{"CONTAINERS_CONF=" + conf}, extraEnv...)
		err = s.start()
	}
	if err == nil {
		err = s.ensureImage()
	}
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("podman service: %w", err)
	}
	return s, nil
}

// writeContainersConf writes the configuration that works on these hosts:
// runc (crun fails on hybrid cgroups) and ulimits within the hard limit.
func writeContainersConf(dir string) (string, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return "", fmt.Errorf("read the open files limit: %w", err)
	}
	nofile := uint64(20000)
	if lim.Max < nofile {
		nofile = lim.Max
	}
	conf := fmt.Sprintf(`[containers]
default_ulimits = ["nofile=%d:%d", "nproc=4096:4096"]

[engine]
runtime = "runc"
`, nofile, nofile)
	path := filepath.Join(dir, "containers.conf")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return "", fmt.Errorf("write containers.conf: %w", err)
	}
	return path, nil
}

// start runs `podman system service` and waits until its socket answers.
func (s *Service) start() error {
	logf, err := os.Create(filepath.Join(s.Dir, "service.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append(append([]string{}, s.global...), "system", "service", "--time=0", s.URI)
	s.cmd = exec.Command("podman", args...)
	s.cmd.Env = append(os.Environ(), s.Env...)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start podman system service: %w", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.exited) }()

	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("podman system service exited early: %s", s.log())
		default:
		}
		if c, err := net.DialTimeout("unix", s.Socket, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("podman system service: socket %s not ready after 30s: %s", s.Socket, s.log())
}

// Podman runs the podman CLI on the service's storage and returns its
// combined output.
func (s *Service) Podman(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "podman", append(append([]string{}, s.global...), args...)...)
	cmd.Env = append(os.Environ(), s.Env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// ensureImage imports the busybox image unless the storage already has it.
func (s *Service) ensureImage() error {
	if _, err := s.Podman("image", "exists", s.Image); err == nil {
		return nil
	}
	tarPath := filepath.Join(s.Dir, "rootfs.tar")
	if err := writeBusyboxRootfs(tarPath); err != nil {
		return fmt.Errorf("build busybox rootfs: %w", err)
	}
	if _, err := s.Podman("import", "--change", `CMD ["/bin/sh"]`,
		"--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", tarPath, s.Image); err != nil {
		// Tolerate a concurrent import of the same image.
		if _, again := s.Podman("image", "exists", s.Image); again == nil {
			return nil
		}
		return fmt.Errorf("import busybox image: %w", err)
	}
	return nil
}

// log returns the end of the service's log, for error messages.
func (s *Service) log() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "service.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return strings.TrimSpace(string(b))
}

// Close removes every pod and container of the service, stops it and
// deletes its directory.
func (s *Service) Close() error {
	var errs []error
	if s.cmd != nil && s.cmd.Process != nil {
		if out, err := s.Podman("pod", "rm", "--all", "--force", "--time", "0"); err != nil {
			errs = append(errs, fmt.Errorf("podman service cleanup: %w: %s", err, out))
		}
		if out, err := s.Podman("rm", "--all", "--force", "--time", "0"); err != nil {
			errs = append(errs, fmt.Errorf("podman service cleanup: %w: %s", err, out))
		}
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-s.exited:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
		}
	}
	if err := os.RemoveAll(s.Dir); err != nil && !errors.Is(err, os.ErrNotExist) {
		errs = append(errs, fmt.Errorf("podman service cleanup: %w", err))
	}
	return errors.Join(errs...)
}
