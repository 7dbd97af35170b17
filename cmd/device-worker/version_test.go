package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const buildTags = "remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp"

// TestBinaryVersion builds the worker with a stamped version, as the Makefile
// and the RPM do, and asks it for its version without any yggd around.
func TestBinaryVersion(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "device-worker")
	build := exec.Command("go", "build", "-tags", buildTags, "-ldflags", "-X main.version=1.2.3-4.test", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	cmd := exec.Command(bin, "--version")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err = cmd.Output()
	require.NoError(t, err)
	assert.Equal(t, "device-worker 1.2.3-4.test\n", string(out))

	out, err = exec.Command(bin, "--help").CombinedOutput()
	require.NoError(t, err, "help exits 0")
	assert.Contains(t, string(out), "-min-free")
}
