package main

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzConfig: no config file, however broken, makes validation panic; a
// file is either accepted or rejected with positioned problems.
func FuzzConfig(f *testing.F) {
	seeds, _ := filepath.Glob("../../configs/*.yaml")
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("mqtt: {listeners: [{address: \":1\", tls: {cert: x}}]}\n"))
	f.Add([]byte("routes:\n  - name: a\n    http: {path: \"/a/{x...}\"}\n    topic: a/{x}\n"))
	f.Add([]byte("limits: &a {max_payload: 1KiB}\nlog: *a\n"))
	f.Add([]byte("--- \n...\n---\nhttp: !!binary x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var cfg Config
		pos, probs := parseStrict("f.yaml", data, &cfg)
		if len(probs) > 0 {
			for _, p := range probs {
				if p.Msg == "" {
					t.Fatalf("problem without a message: %+v", p)
				}
			}
			return
		}
		cfg.applyDefaults()
		sem, _ := cfg.validate(t.TempDir())
		for _, p := range sem {
			pos.lookup(p.path)
		}
	})
}
