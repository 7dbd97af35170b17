package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// tool knows how to express a push (egress) and a pull (ingress) as a
// command line.
type tool struct {
	name string
	push func(o options, srv *server, dir, bucket, prefix, state string) (args, env []string)
	pull func(o options, srv *server, bucket, prefix, dir, state string) (args, env []string)
}

func selectTools(o options, srv *server) ([]tool, error) {
	all := map[string]tool{"flotta": flottaTool("flotta", o.repo), "rclone": rcloneTool(), "aws": awsTool(), "raw": rawTool()}
	if o.baseline != "" {
		all["baseline"] = flottaTool("baseline", o.baseline)
	}
	var tools []tool
	for _, name := range strings.Split(o.tools, ",") {
		t, ok := all[strings.TrimSpace(name)]
		if !ok {
			return nil, fmt.Errorf("unknown tool %q", name)
		}
		tools = append(tools, t)
	}
	for _, t := range tools {
		if err := checkTool(o, t); err != nil {
			return nil, err
		}
	}
	return tools, nil
}

func checkTool(o options, t tool) error {
	var bin string
	switch t.name {
	case "flotta":
		bin = filepath.Join(o.repo, "bin", "flotta-sync")
	case "baseline":
		bin = filepath.Join(o.baseline, "bin", "flotta-sync")
	case "rclone":
		bin = "/usr/bin/rclone"
	case "aws":
		bin = "/usr/bin/aws"
	default:
		return nil
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s: %s not found (flotta-sync: make build; rclone, aws: apt-get install rclone awscli)", t.name, bin)
	}
	return nil
}

func credentialsEnv() []string {
	return []string{"AWS_ACCESS_KEY_ID=" + accessKey, "AWS_SECRET_ACCESS_KEY=" + secretKey, "AWS_DEFAULT_REGION=us-east-1", "AWS_REGION=us-east-1"}
}

// flottaTool runs repo's bin/flotta-sync under the given tool name.
func flottaTool(name, repo string) tool {
	bin := func(options) string { return filepath.Join(repo, "bin", "flotta-sync") }
	common := func(o options, srv *server, state string) []string {
		return []string{"--endpoint", srv.url, "--region", "us-east-1", "--state", state, "--concurrency", fmt.Sprint(o.concurrency)}
	}
	return tool{
		name: name,
		push: func(o options, srv *server, dir, bucket, prefix, state string) ([]string, []string) {
			args := append([]string{bin(o), "push"}, common(o, srv, state)...)
			return append(args, dir, "s3://"+bucket+"/"+prefix), credentialsEnv()
		},
		pull: func(o options, srv *server, bucket, prefix, dir, state string) ([]string, []string) {
			args := append([]string{bin(o), "pull"}, common(o, srv, state)...)
			return append(args, "--min-free", "-1", "s3://"+bucket+"/"+prefix, dir), credentialsEnv()
		},
	}
}

func rcloneTool() tool {
	env := func(srv *server) []string {
		return []string{
			"RCLONE_CONFIG_BENCH_TYPE=s3", "RCLONE_CONFIG_BENCH_PROVIDER=Other",
			"RCLONE_CONFIG_BENCH_ENDPOINT=" + srv.url, "RCLONE_CONFIG_BENCH_REGION=us-east-1",
			"RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=" + accessKey, "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=" + secretKey,
		}
	}
	flags := func(o options) []string {
		n := fmt.Sprint(o.concurrency)
		return []string{"--transfers", n, "--checkers", n, "--config", "/dev/null"}
	}
	return tool{
		name: "rclone",
		push: func(o options, srv *server, dir, bucket, prefix, _ string) ([]string, []string) {
			return append([]string{"/usr/bin/rclone", "copy", dir, "bench:" + bucket + "/" + prefix}, flags(o)...), env(srv)
		},
		pull: func(o options, srv *server, bucket, prefix, dir, _ string) ([]string, []string) {
			return append([]string{"/usr/bin/rclone", "copy", "bench:" + bucket + "/" + prefix, dir}, flags(o)...), env(srv)
		},
	}
}

func awsTool() tool {
	env := func(o options) []string {
		cfg := filepath.Join(o.workDir, "aws-config")
		content := fmt.Sprintf("[default]\nregion = us-east-1\ns3 =\n  max_concurrent_requests = %d\n", o.concurrency)
		_ = os.WriteFile(cfg, []byte(content), 0o600)
		return append(credentialsEnv(), "AWS_CONFIG_FILE="+cfg, "AWS_SHARED_CREDENTIALS_FILE=/dev/null")
	}
	return tool{
		name: "aws",
		push: func(o options, srv *server, dir, bucket, prefix, _ string) ([]string, []string) {
			return []string{"/usr/bin/aws", "s3", "sync", dir, "s3://" + bucket + "/" + prefix, "--endpoint-url", srv.url, "--only-show-errors", "--no-progress"}, env(o)
		},
		pull: func(o options, srv *server, bucket, prefix, dir, _ string) ([]string, []string) {
			return []string{"/usr/bin/aws", "s3", "sync", "s3://" + bucket + "/" + prefix, dir, "--endpoint-url", srv.url, "--only-show-errors", "--no-progress"}, env(o)
		},
	}
}

// rawTool is the ceiling: a bare minio-go PutObject/GetObject loop.
func rawTool() tool {
	self := func() string { exe, _ := os.Executable(); return exe }
	return tool{
		name: "raw",
		push: func(o options, srv *server, dir, bucket, prefix, _ string) ([]string, []string) {
			return []string{self(), "raw", "-endpoint", srv.url, "-concurrency", fmt.Sprint(o.concurrency), "put", dir, bucket, prefix}, nil
		},
		pull: func(o options, srv *server, bucket, prefix, dir, _ string) ([]string, []string) {
			return []string{self(), "raw", "-endpoint", srv.url, "-concurrency", fmt.Sprint(o.concurrency), "get", bucket, prefix, dir}, nil
		},
	}
}
