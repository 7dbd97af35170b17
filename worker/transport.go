package worker

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	yggdrasil "github.com/project-flotta/flotta-device-worker/proto"
)

// SocketPath turns a yggd socket address into what net.Dial/net.Listen
// take for network "unix": "unix:@name" and "@name" are abstract sockets,
// "unix:/path", "unix:///path" and "/path" are files.
func SocketPath(addr string) (string, error) {
	p := addr
	switch {
	case strings.HasPrefix(p, "unix://"):
		p = strings.TrimPrefix(p, "unix://")
	case strings.HasPrefix(p, "unix:"):
		p = strings.TrimPrefix(p, "unix:")
	case strings.Contains(p, "://"):
		return "", fmt.Errorf("socket address %q: only unix sockets are supported", addr)
	}
	if p == "" || p == "@" {
		return "", fmt.Errorf("socket address %q: empty path", addr)
	}
	if !strings.HasPrefix(p, "@") && !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("socket address %q: want unix:@abstract or unix:/absolute/path", addr)
	}
	return p, nil
}

// Dial connects to a gRPC service on a unix socket address such as yggd's
// "unix:@yggd-dispatcher-abc123" or a worker's "@ygg-device-xyz". The
// connection is made lazily.
func Dial(addr string) (*grpc.ClientConn, error) {
	path, err := SocketPath(addr)
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	conn, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}))
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	return conn, nil
}

// Register announces the worker under handler and returns the address it
// must listen on.
func Register(ctx context.Context, d yggdrasil.DispatcherClient, handler string) (string, error) {
	resp, err := d.Register(ctx, &yggdrasil.RegistrationRequest{Handler: handler, Pid: int64(os.Getpid())})
	if err != nil {
		return "", fmt.Errorf("register handler %q with yggd: %w", handler, err)
	}
	if !resp.GetRegistered() {
		return "", fmt.Errorf("register handler %q with yggd: refused (is another worker registered as %q?)", handler, handler)
	}
	if resp.GetAddress() == "" {
		return "", errors.New("register with yggd: no address in the answer")
	}
	return resp.GetAddress(), nil
}

// Listen listens on the address yggd gave at registration ("@name" for an
// abstract socket, or a path).
func Listen(addr string) (net.Listener, error) {
	path, err := SocketPath(addr)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	l, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	return l, nil
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return b
}
