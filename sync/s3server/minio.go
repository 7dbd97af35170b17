package s3server

import (
	"net"
	"strconv"
)

// StartMinIO runs MinIO as released (single drive on o.Dir) on loopback and
// waits until it is ready. It is AGPL and only ever run as a test tool, never
// linked. The binary is o.Binary, else $MINIO, else <module root>/bin/minio,
// else minio on PATH (`make minio` builds the pinned version). Its bucket
// notification stream sends nothing until 4 KiB pile up (upstream PR 21651
// dropped Flush): see StartMinIOPush. It does not serve TLS.
func StartMinIO(o Options) (*Server, error) {
	return startMinIO(o, "MINIO", "minio")
}

// StartMinIOPush runs a MinIO whose bucket notifications arrive at once: the
// pinned version with .ci/minio-flush.patch, standing in for the releases
// before upstream PR 21651, which the module proxy does not serve here. The
// binary is o.Binary, else $MINIO_PUSH, else <module root>/bin/minio-push,
// else minio-push on PATH (`make minio` builds it beside bin/minio).
func StartMinIOPush(o Options) (*Server, error) {
	return startMinIO(o, "MINIO_PUSH", "minio-push")
}

func startMinIO(o Options, envVar, name string) (*Server, error) {
	bin, err := findBinary(o.Binary, envVar, name)
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
	s := &Server{name: name, bin: bin, o: o, args: func(s *Server) []string {
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
