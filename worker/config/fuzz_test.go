package config_test

import (
	"os"
	"path"
	"path/filepath"
	"testing"

	"github.com/project-flotta/flotta-device-worker/worker/config"
)

// FuzzParse feeds arbitrary bytes to Parse. It must never panic, and
// whatever it accepts must be safe (local data paths only) and survive the
// persistence round trip: Canonical parses back to an equal message.
func FuzzParse(f *testing.F) {
	for _, dir := range []string{messagesDir, filepath.Join(messagesDir, "bad")} {
		files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := config.Parse(data)
		if err != nil {
			if m != nil {
				t.Fatalf("Parse returned a message with error %v", err)
			}
			return
		}
		for _, w := range m.Workloads {
			if w.Data == nil {
				continue
			}
			for _, list := range [][]config.DataPath{w.Data.Egress, w.Data.Ingress} {
				for _, p := range list {
					for _, s := range []string{p.Source, p.Target} {
						if !filepath.IsLocal(s) || s == "." || path.Clean(s) != s {
							t.Fatalf("accepted unsafe or uncleaned data path %q", s)
						}
					}
				}
			}
		}
		if st := m.Configuration.Storage; st != nil {
			if _, err := st.S3.Endpoint(); err != nil {
				t.Fatalf("accepted storage whose endpoint does not decode: %v", err)
			}
		}
		b, err := m.Canonical()
		if err != nil {
			t.Fatalf("canonical form of an accepted message: %v", err)
		}
		again, err := config.Parse(b)
		if err != nil {
			t.Fatalf("canonical form does not parse back: %v\n%s", err, b)
		}
		if !m.Equal(again) {
			t.Fatalf("round trip changed the message:\n%s", b)
		}
		if err := again.Validate(); err != nil {
			t.Fatalf("round-tripped message fails validation: %v", err)
		}
	})
}
