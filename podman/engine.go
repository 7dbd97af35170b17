package podman

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/containers/podman/v4/pkg/bindings"
	"github.com/containers/podman/v4/pkg/bindings/containers"
	"github.com/containers/podman/v4/pkg/bindings/kube"
	"github.com/containers/podman/v4/pkg/bindings/pods"
	"github.com/containers/podman/v4/pkg/bindings/secrets"
	"github.com/containers/podman/v4/pkg/errorhandling"
)

// podInfo is what the manager needs to know about one pod it owns.
type podInfo struct {
	ID         string
	Name       string
	Workload   string // LabelWorkload
	Hash       string // LabelManifestHash
	Status     string // podman's pod status, e.g. Running, Exited, Degraded
	Containers []containerInfo
}

// containerInfo is one non-infra container of a pod.
type containerInfo struct {
	ID       string
	Name     string
	State    string // created, running, exited, stopped, paused, dead, ...
	ExitCode int32
}

// engine is the part of podman the manager uses; bindingsEngine is the real one.
type engine interface {
	ListPods(ctx context.Context) ([]podInfo, error)
	// Play plays manifest; authFile, when not empty, is the path of the
	// registry auth file for its pulls.
	Play(ctx context.Context, manifest []byte, authFile string) error
	StartPod(ctx context.Context, id string) error
	RemovePod(ctx context.Context, id string) error
	// ListSecrets lists the names of the podman secrets starting with
	// SecretPrefix.
	ListSecrets(ctx context.Context) ([]string, error)
	CreateSecret(ctx context.Context, name string, data []byte) error
	RemoveSecret(ctx context.Context, name string) error
}

// Time limits for calls to the podman service. Play may pull images.
const (
	connectTimeout = 10 * time.Second
	callTimeout    = 60 * time.Second
	playTimeout    = 10 * time.Minute
	stopTimeout    = 10 // seconds a container gets to stop before it is killed
)

// bindingsEngine talks to the podman service through the v4 REST bindings. It
// connects lazily on first use and again after a failed attempt, so a service
// that is down at start-up is not fatal.
type bindingsEngine struct {
	socket string

	mu   sync.Mutex
	conn context.Context // carries the bindings connection; nil until connected
}

func newBindingsEngine(socket string) *bindingsEngine { return &bindingsEngine{socket: socket} }

// connect returns the connection context, dialling the service if needed.
func (e *bindingsEngine) connect(ctx context.Context) (context.Context, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.conn != nil {
		return e.conn, nil
	}
	// The bindings keep the context they connect with for every later call,
	// so connect with a long-lived one and bound only this attempt.
	base, cancel := context.WithCancel(context.Background())
	stopCaller := context.AfterFunc(ctx, cancel)
	timer := time.AfterFunc(connectTimeout, cancel)
	conn, err := bindings.NewConnection(base, e.socket)
	stopCaller()
	timer.Stop()
	if err == nil && base.Err() != nil {
		err = fmt.Errorf("timed out or cancelled: %w", base.Err())
	}
	if err != nil {
		cancel()
		if missingSocket(e.socket) {
			// The usual cause on a device: the socket unit is not started.
			return nil, fmt.Errorf("connect to podman at %s: no such socket: is podman.socket started? (%w)", e.socket, err)
		}
		return nil, fmt.Errorf("connect to podman at %s: %w", e.socket, err)
	}
	e.conn = conn
	return conn, nil
}

// missingSocket reports whether uri names a unix socket path that does not
// exist.
func missingSocket(uri string) bool {
	path, ok := strings.CutPrefix(uri, "unix://")
	if !ok {
		return false
	}
	_, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist)
}

// call returns a context for one request: the connection, bounded by timeout
// and by the caller's ctx.
func (e *bindingsEngine) call(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc, error) {
	conn, err := e.connect(ctx)
	if err != nil {
		return nil, nil, err
	}
	c, cancel := context.WithTimeout(conn, timeout)
	stop := context.AfterFunc(ctx, cancel)
	return c, func() { stop(); cancel() }, nil
}

// ListPods lists the pods labelled as managed by this worker, with their
// containers.
func (e *bindingsEngine) ListPods(ctx context.Context) ([]podInfo, error) {
	c, done, err := e.call(ctx, callTimeout)
	if err != nil {
		return nil, err
	}
	defer done()
	reports, err := pods.List(c, new(pods.ListOptions).WithFilters(map[string][]string{
		"label": {LabelManaged + "=true"},
	}))
	if err != nil {
		return nil, fmt.Errorf("list pods: %w", err)
	}
	if len(reports) == 0 {
		return nil, nil
	}
	out := make([]podInfo, 0, len(reports))
	byID := make(map[string]int, len(reports))
	ids := make([]string, 0, len(reports))
	for _, r := range reports {
		byID[r.Id] = len(out)
		ids = append(ids, r.Id)
		out = append(out, podInfo{
			ID: r.Id, Name: r.Name, Status: r.Status,
			Workload: r.Labels[LabelWorkload], Hash: r.Labels[LabelManifestHash],
		})
	}
	ctrs, err := containers.List(c, new(containers.ListOptions).WithAll(true).
		WithFilters(map[string][]string{"pod": ids}))
	if err != nil {
		return nil, fmt.Errorf("list containers of managed pods: %w", err)
	}
	for _, ct := range ctrs {
		i, ok := byID[ct.Pod]
		if !ok || ct.IsInfra {
			continue
		}
		out[i].Containers = append(out[i].Containers, containerInfo{
			ID: ct.ID, Name: strings.Join(ct.Names, ","), State: ct.State, ExitCode: ct.ExitCode,
		})
	}
	return out, nil
}

// Play creates and starts the pod described by manifest. The bindings
// read authFile and send its credentials with this request only
// (X-Registry-Auth), so they serve this workload's pulls and no other's.
func (e *bindingsEngine) Play(ctx context.Context, manifest []byte, authFile string) error {
	c, done, err := e.call(ctx, playTimeout)
	if err != nil {
		return err
	}
	defer done()
	opts := new(kube.PlayOptions).WithStart(true)
	if authFile != "" {
		opts.WithAuthfile(authFile)
	}
	report, err := kube.PlayWithBody(c, bytes.NewReader(manifest), opts)
	if err != nil {
		return fmt.Errorf("play pod: %w", err)
	}
	var errs []string
	for _, p := range report.Pods {
		errs = append(errs, p.ContainerErrors...)
	}
	if len(errs) > 0 {
		return fmt.Errorf("play pod: start containers: %s", strings.Join(errs, "; "))
	}
	return nil
}

// StartPod starts the stopped containers of pod id.
func (e *bindingsEngine) StartPod(ctx context.Context, id string) error {
	c, done, err := e.call(ctx, callTimeout)
	if err != nil {
		return err
	}
	defer done()
	report, err := pods.Start(c, id, nil)
	if err != nil {
		return fmt.Errorf("start pod %s: %w", id, err)
	}
	if len(report.Errs) > 0 {
		return fmt.Errorf("start pod %s: %w", id, errors.Join(report.Errs...))
	}
	return nil
}

// RemovePod stops pod id (containers get stopTimeout seconds) and removes it
// with its containers. A pod that is already gone is not an error. Removal is
// tried a few times: podman 4.3 can still hold a just-stopped container's
// mounts ("device or resource busy") while its cleanup runs.
func (e *bindingsEngine) RemovePod(ctx context.Context, id string) error {
	c, done, err := e.call(ctx, callTimeout)
	if err != nil {
		return err
	}
	defer done()
	// Stop first so containers get a graceful shutdown; whatever fails to stop
	// is killed by the forced removal below, so a stop error is not fatal.
	_, _ = pods.Stop(c, id, new(pods.StopOptions).WithTimeout(stopTimeout))
	for attempt := 1; ; attempt++ {
		err = removePod(c, id)
		if err == nil || attempt == removeAttempts {
			return err
		}
		select {
		case <-c.Done():
			return err
		case <-time.After(time.Duration(attempt) * 500 * time.Millisecond):
		}
	}
}

// removeAttempts bounds RemovePod's tries.
const removeAttempts = 4

func removePod(c context.Context, id string) error {
	report, err := pods.Remove(c, id, new(pods.RemoveOptions).WithForce(true))
	if err != nil {
		if isNotFound(err) {
			return nil
		}
		return fmt.Errorf("remove pod %s: %w", id, err)
	}
	if report != nil && report.Err != nil {
		return fmt.Errorf("remove pod %s: %w", id, report.Err)
	}
	return nil
}

// isNotFound reports whether err is the service's "no such object" answer.
func isNotFound(err error) bool {
	var em *errorhandling.ErrorModel
	return errors.As(err, &em) && em.ResponseCode == http.StatusNotFound
}

// ListSecrets lists the podman secrets this worker owns (SecretPrefix).
func (e *bindingsEngine) ListSecrets(ctx context.Context) ([]string, error) {
	c, done, err := e.call(ctx, callTimeout)
	if err != nil {
		return nil, err
	}
	defer done()
	reports, err := secrets.List(c, nil)
	if err != nil {
		return nil, fmt.Errorf("list secrets: %w", err)
	}
	var names []string
	for _, r := range reports {
		if strings.HasPrefix(r.Spec.Name, SecretPrefix) {
			names = append(names, r.Spec.Name)
		}
	}
	return names, nil
}

// CreateSecret creates podman secret name holding data. Errors never carry
// data.
func (e *bindingsEngine) CreateSecret(ctx context.Context, name string, data []byte) error {
	c, done, err := e.call(ctx, callTimeout)
	if err != nil {
		return err
	}
	defer done()
	if _, err := secrets.Create(c, bytes.NewReader(data), new(secrets.CreateOptions).WithName(name)); err != nil {
		return fmt.Errorf("create secret %s: %w", name, err)
	}
	return nil
}

// RemoveSecret removes podman secret name; a missing one is not an error.
func (e *bindingsEngine) RemoveSecret(ctx context.Context, name string) error {
	c, done, err := e.call(ctx, callTimeout)
	if err != nil {
		return err
	}
	defer done()
	if err := secrets.Remove(c, name); err != nil && !isNotFound(err) {
		return fmt.Errorf("remove secret %s: %w", name, err)
	}
	return nil
}
