package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/edgebridge/gateway/mapping"
)

// loaded is a config ready to run: decoded, defaulted, overridden, checked.
type loaded struct {
	cfg   *Config
	table *mapping.Table
	file  string // "" for the embedded defaults
}

// loadConfig reads file (or nothing, for the embedded defaults), lays the
// overrides over it and checks everything. All problems come back at once,
// each as FILE:LINE:COL: message.
func loadConfig(file string, o Overrides) (*loaded, error) {
	cfg := &Config{}
	pos := positions{}
	dir := ""
	if file != "" {
		data, err := os.ReadFile(file)
		if err != nil {
			return nil, Problems{{File: file, Msg: fmt.Sprintf("cannot read config: %v", err)}}
		}
		var probs Problems
		pos, probs = parseStrict(file, data, cfg)
		if len(probs) > 0 {
			return nil, probs
		}
		dir = filepath.Dir(file)
	}
	cfg.applyDefaults()
	cfg.applyOverrides(o)
	sem, table := cfg.validate(dir)
	if len(sem) > 0 {
		probs := make(Problems, 0, len(sem))
		for _, p := range sem {
			line, col := pos.lookup(p.path)
			msg := p.msg
			if fe, ok := p.err.(interface{ FieldPath() string }); !ok || fe.FieldPath() != p.path {
				msg = p.path + ": " + msg
			}
			probs = append(probs, Problem{File: file, Line: line, Col: col, Msg: msg})
		}
		return nil, probs
	}
	return &loaded{cfg: cfg, table: table, file: file}, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("log level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
