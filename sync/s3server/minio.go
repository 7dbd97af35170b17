package s3server

import (
	"net"
	"strconv"
)

// StartMinIO runs MinIO (single drive on o.Dir) on loopback and waits until
// it is ready. MinIO serves bucket notifications, which versitygw does not;
// it is AGPL and only ever run as a test tool, never linked. The binary is
// o.Binary, else $MINIO, else <module root>/bin/minio, else minio on PATH
// (`make minio` builds the pinned, patched one). It does not serve TLS.
func StartMinIO(o Options) (*Server, error) {
	bin, err := findBinary(o.Binary, "MINIO", "minio")
	if err != nil {
		return nil, err
	}
	if o.TLS {
		return nil, errNoTLS("minio")
	}
	console, err := freePort()
	if err != nil {
		return nil, err
	}
	s := &Server{name: "minio", bin: bin, o: o, args: func(s *Server) []string {
		return []string{"server", "--quiet", "--address", s.Endpoint(),
			"--console-address", net.JoinHostPort(s.Host, strconv.Itoa(console)), s.Dir}
	}, env: func(s *Server) []string {
		return []string{"MINIO_ROOT_USER=" + s.o.Access, "MINIO_ROOT_PASSWORD=" + s.o.Secret,
			"MINIO_BROWSER=off", "MINIO_UPDATE=off", "MINIO_CALLHOME_ENABLE=off"}
	}, readyPath: "/minio/health/ready"}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}
