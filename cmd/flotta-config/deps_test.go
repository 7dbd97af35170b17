package main

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestLinksNoSyncEngine keeps the message model apart from the engine:
// building configuration messages needs neither an S3 client nor the journal.
func TestLinksNoSyncEngine(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	require.NoError(t, err)
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/minio/minio-go", "go.etcd.io/bbolt", "/sync/datasync", "/podman"} {
			require.NotContains(t, dep, banned, "flotta-config links %s", dep)
		}
	}
}
