package podman

import (
	corev1 "k8s.io/api/core/v1"
)

// observedState derives a workload's State from its pod. Init containers
// (named in m, nil when unknown) are ignored: they exit by design.
//
//   - crashed: a container died or exited with a non-zero code;
//   - deploying: no container yet, or one created but not started;
//   - running: otherwise, when at least one container runs;
//   - stopped: every container exited cleanly or was stopped.
func observedState(p podInfo, podName string, m *Manifest) State {
	var running, created, crashed, seen bool
	for _, c := range p.Containers {
		if m != nil && isInitContainer(c.Name, podName, m.InitContainers) {
			continue
		}
		seen = true
		switch c.State {
		case "running":
			running = true
		case "created", "configured", "initialized":
			created = true
		case "dead":
			crashed = true
		case "exited", "stopped":
			if c.ExitCode != 0 {
				crashed = true
			}
		}
	}
	switch {
	case crashed:
		return Crashed
	case !seen || (created && !running):
		return Deploying
	case running:
		return Running
	default:
		return Stopped
	}
}

// isInitContainer reports whether a container named name (podman names a
// kube container "<pod>-<container>") is one of the init containers.
func isInitContainer(name, podName string, inits []string) bool {
	for _, i := range inits {
		if name == podName+"-"+i {
			return true
		}
	}
	return false
}

// needsStart decides whether a pod in state s should be started (again):
// a pod whose containers were created but never started always is; a
// crashed one unless the policy is Never; a cleanly stopped one only under
// Always, the default.
func needsStart(s State, policy corev1.RestartPolicy) bool {
	switch s {
	case Deploying:
		return true
	case Crashed:
		return policy != corev1.RestartPolicyNever
	case Stopped:
		return policy == "" || policy == corev1.RestartPolicyAlways
	default:
		return false
	}
}
