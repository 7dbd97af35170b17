package main

import (
	"strings"

	"github.com/project-flotta/flotta-device-worker/podman/podmantest"
)

// podmanService is the demo's private podman service.
type podmanService struct {
	svc *podmantest.Service
}

func startPodman(o options) (*podmanService, error) {
	svc, err := podmantest.Launch()
	if err != nil {
		return nil, err
	}
	// Prove a container can run here before promising one.
	if out, err := svc.Podman("run", "--rm", svc.Image, "true"); err != nil {
		_ = svc.Close()
		return nil, firstLine(out, err)
	}
	return &podmanService{svc: svc}, nil
}

func (p *podmanService) stop() {
	if err := p.svc.Close(); err != nil {
		say("podman cleanup: %v", err)
	}
}

// exec runs a command in the workload's container.
func (p *podmanService) exec(args ...string) (string, error) {
	out, err := p.svc.Podman(append([]string{"exec", workload + "-stats-collector"}, args...)...)
	return strings.TrimSpace(out), err
}

type lineError struct{ s string }

func (e lineError) Error() string { return e.s }

func firstLine(out string, err error) error {
	line, _, _ := strings.Cut(strings.TrimSpace(out), "\n")
	if line == "" {
		return err
	}
	return lineError{line}
}
