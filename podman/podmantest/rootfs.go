package podmantest

import (
	"archive/tar"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// busyboxPaths are where a static busybox may be installed (busybox-static).
var busyboxPaths = []string{"/bin/busybox", "/usr/bin/busybox"}

// applets get a symlink to busybox in the image's /bin.
var applets = []string{
	"sh", "cat", "echo", "env", "false", "id", "kill", "ls", "mkdir", "ps",
	"rm", "sleep", "test", "touch", "true", "wc",
}

// writeBusyboxRootfs writes a tar of a minimal root file system: /bin/busybox
// from the host, applet symlinks, and empty /tmp, /proc, /sys, /dev, /etc.
func writeBusyboxRootfs(path string) error {
	src, err := findBusybox()
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	st, err := in.Stat()
	if err != nil {
		return err
	}
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	defer out.Close()
	tw := tar.NewWriter(out)
	now := time.Now()
	for _, d := range []string{"bin", "dev", "etc", "proc", "sys", "tmp"} {
		mode := int64(0o755)
		if d == "tmp" {
			mode = 0o1777
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: d + "/", Mode: mode, ModTime: now}); err != nil {
			return err
		}
	}
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: st.Size(), ModTime: now}); err != nil {
		return err
	}
	if _, err := io.Copy(tw, in); err != nil {
		return err
	}
	for _, a := range applets {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeSymlink, Name: "bin/" + a, Linkname: "busybox", Mode: 0o777, ModTime: now}); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return out.Close()
}

func findBusybox() (string, error) {
	for _, p := range busyboxPaths {
		if _, err := os.Stat(p); err == nil {
			return filepath.Clean(p), nil
		}
	}
	return "", fmt.Errorf("no busybox at %v: install the Debian packages %s", busyboxPaths, Packages)
}
