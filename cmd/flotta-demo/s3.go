package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// s3Server is the demo's versitygw.
type s3Server struct {
	cmd    *exec.Cmd
	port   int
	url    string
	client *minio.Client
}

func startS3(ctx context.Context, o options) (*s3Server, error) {
	bin := filepath.Join(o.binDir, "versitygw")
	if _, err := os.Stat(bin); err != nil {
		return nil, fmt.Errorf("versitygw not found at %s: run `make versitygw`", bin)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	root := filepath.Join(o.workDir, "s3")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(o.workDir, "versitygw.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(bin, "--port", fmt.Sprintf("127.0.0.1:%d", port), "--access", accessKey, "--secret", secretKey, "--quiet", "posix", root)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start versitygw: %w", err)
	}
	s := &s3Server{cmd: cmd, port: port, url: fmt.Sprintf("http://127.0.0.1:%d", port)}
	s.client, err = minio.New(fmt.Sprintf("127.0.0.1:%d", port), &minio.Options{Creds: credentials.NewStaticV4(accessKey, secretKey, ""), Region: "us-east-1"})
	if err != nil {
		s.stop()
		return nil, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err = s.client.MakeBucket(ctx, bucket, minio.MakeBucketOptions{Region: "us-east-1"})
		if err == nil {
			return s, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			s.stop()
			return nil, fmt.Errorf("versitygw did not answer on %s: %w", s.url, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *s3Server) stop() {
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

// keys lists the objects under prefix.
func (s *s3Server) keys(ctx context.Context, prefix string) ([]string, error) {
	var keys []string
	for obj := range s.client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, obj.Err
		}
		keys = append(keys, obj.Key)
	}
	return keys, nil
}

func (s *s3Server) put(ctx context.Context, key, content string) error {
	_, err := s.client.PutObject(ctx, bucket, key, strings.NewReader(content), int64(len(content)), minio.PutObjectOptions{})
	return err
}
