package s3server

import "path/filepath"

// StartVersitygw runs versitygw (posix backend on o.Dir, one directory per
// bucket) on loopback and waits until it answers. The binary is o.Binary,
// else $VERSITYGW, else <module root>/bin/versitygw, else versitygw on PATH
// (`make versitygw` installs it). Stop it with Server.Stop.
func StartVersitygw(o Options) (*Server, error) {
	bin, err := findBinary(o.Binary, "VERSITYGW", "versitygw")
	if err != nil {
		return nil, err
	}
	s := &Server{name: "versitygw", bin: bin, o: o, args: versitygwArgs}
	if err := s.start(); err != nil {
		return nil, err
	}
	return s, nil
}

func versitygwArgs(s *Server) []string {
	args := []string{"--port", s.Endpoint(), "--access", s.o.Access, "--secret", s.o.Secret, "--quiet"}
	if s.o.KeepAlive {
		args = append(args, "--keep-alive")
	}
	if s.o.TLS {
		args = append(args, "--cert", filepath.Join(s.o.CertDir, "server.pem"), "--key", filepath.Join(s.o.CertDir, "server.key"))
	}
	return append(args, "posix", s.Dir)
}
