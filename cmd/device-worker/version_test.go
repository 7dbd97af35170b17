package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/project-flotta/flotta-device-worker/sync/bwlimit"
	"github.com/project-flotta/flotta-device-worker/sync/bytesize"
)

const buildTags = "remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp"

// TestBinaryVersionHelpAndSizes builds the worker with a stamped version, as
// the Makefile and the RPM do, and runs it without any yggd around: it
// prints its version and help, and refuses a wrong size naming the setting.
func TestBinaryVersionHelpAndSizes(t *testing.T) {
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

	cmd = exec.Command(bin)
	cmd.Env = []string{"YGG_SOCKET_ADDR=unix:@flotta-test-nobody", "FLOTTA_MIN_FREE=1 gigabyte", "FLOTTA_DATA_DIR=" + t.TempDir()}
	out, err = cmd.CombinedOutput()
	var exit *exec.ExitError
	require.ErrorAs(t, err, &exit, "%s", out)
	assert.Equal(t, 2, exit.ExitCode())
	assert.Contains(t, string(out), `FLOTTA_MIN_FREE, --min-free) "1 gigabyte"`)
	assert.Contains(t, string(out), bytesize.Forms)

	cmd = exec.Command(bin)
	cmd.Env = []string{"YGG_SOCKET_ADDR=unix:@flotta-test-nobody", "FLOTTA_BWLIMIT=10 mbit", "FLOTTA_DATA_DIR=" + t.TempDir()}
	out, err = cmd.CombinedOutput()
	require.ErrorAs(t, err, &exit, "%s", out)
	assert.Equal(t, 2, exit.ExitCode(), "a malformed bandwidth limit stops the worker at start")
	assert.Contains(t, string(out), `FLOTTA_BWLIMIT / --bwlimit="10 mbit"`)
	assert.Contains(t, string(out), bwlimit.Forms)
}
