package podmantest

import (
	"strings"
	"testing"
)

func TestStartRunsAServiceWithTheImage(t *testing.T) {
	s := Start(t)
	out, err := s.Podman("run", "--rm", s.Image, "sh", "-c", "echo hello-from-busybox")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "hello-from-busybox") {
		t.Fatalf("unexpected output %q", out)
	}
}
