// Command gateway is the MQTT ⇄ HTTP/CoAP gateway: an embedded MQTT broker
// with HTTP and CoAP adapters and a YAML mapping between resource paths and
// topics. See SPEC §2 for the command line and README.md for a quick start.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// shutdownTimeout bounds the drain on SIGINT/SIGTERM.
const shutdownTimeout = 10 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	c := &cli{stdout: os.Stdout, stderr: os.Stderr, getenv: os.LookupEnv, hup: hup}
	os.Exit(c.run(ctx, os.Args[1:]))
}

// cli is one invocation of the command, with its surroundings injected so
// that tests run it in-process.
type cli struct {
	stdout, stderr io.Writer
	getenv         func(string) (string, bool)
	hup            <-chan os.Signal
	onReady        func(*gateway) // tests: called once everything listens
}

const usageText = `usage:
  gateway [run] [-c FILE] [flags]   run the gateway (embedded defaults without -c)
  gateway validate -c FILE          check a config file, print every problem
  gateway version                   print version, commit and Go version

flags (each also as environment variable; flag > env > file > default):
`

// run executes one command line and returns the exit code.
func (c *cli) run(ctx context.Context, args []string) int {
	cmd := "run"
	if len(args) > 0 && (args[0] == "run" || args[0] == "validate" || args[0] == "version" || args[0] == "help") {
		cmd, args = args[0], args[1:]
	}
	fs := flag.NewFlagSet("gateway "+cmd, flag.ContinueOnError)
	fs.SetOutput(c.stderr)
	var file string
	fs.StringVar(&file, "c", "", "config file (YAML)")
	fs.StringVar(&file, "config", "", "config file (YAML), same as -c")
	var o Overrides
	str := func(p **string, name, env, def, help string) {
		fs.Func(name, fmt.Sprintf("%s (env %s, default %q)", help, env, def), func(v string) error {
			*p = &v
			return nil
		})
	}
	str(&o.MQTTAddr, "mqtt-addr", "GATEWAY_MQTT_ADDR", defaultMQTTAddr, "MQTT TCP listener; empty turns it off")
	str(&o.WSAddr, "ws-addr", "GATEWAY_WS_ADDR", defaultWSAddr, "MQTT over WebSocket listener; empty turns it off")
	str(&o.HTTPAddr, "http-addr", "GATEWAY_HTTP_ADDR", defaultHTTPAddr, "HTTP listener; empty turns it off")
	str(&o.CoAPAddr, "coap-addr", "GATEWAY_COAP_ADDR", defaultCoAPAddr, "CoAP UDP listener; empty turns it off")
	str(&o.DataDir, "data-dir", "GATEWAY_DATA_DIR", defaultDataDir, "storage folder; empty keeps everything in memory")
	str(&o.LogLevel, "log-level", "GATEWAY_LOG_LEVEL", "info", "debug, info, warn or error")
	str(&o.LogFormat, "log-format", "GATEWAY_LOG_FORMAT", "text", "text or json")
	fs.Usage = func() {
		fmt.Fprint(c.stderr, usageText)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(c.stderr, "gateway %s: unexpected argument %q\n", cmd, fs.Arg(0))
		fs.Usage()
		return 2
	}
	switch cmd {
	case "help":
		fs.Usage()
		return 0
	case "version":
		fmt.Fprintln(c.stdout, versionString())
		return 0
	case "validate":
		if file == "" {
			fmt.Fprintln(c.stderr, "gateway validate: -c FILE is required")
			return 2
		}
		if _, err := loadConfig(file, o.merge(envOverrides(c.getenv))); err != nil {
			fmt.Fprintln(c.stderr, err)
			return 1
		}
		fmt.Fprintf(c.stdout, "%s: ok\n", file)
		return 0
	}
	return c.serve(ctx, file, o.merge(envOverrides(c.getenv)))
}

// serve runs the gateway until ctx ends, reloading on SIGHUP.
func (c *cli) serve(ctx context.Context, file string, o Overrides) int {
	started := time.Now()
	l, err := loadConfig(file, o)
	if err != nil {
		fmt.Fprintln(c.stderr, err)
		return 1
	}
	log := newLogger(c.stderr, l.cfg.Log)
	g, err := newGateway(l, log)
	if err == nil {
		err = g.start(ctx)
	}
	if err != nil {
		log.Error("cannot start", "error", err)
		return 1
	}
	log.Info("ready", "startup", time.Since(started).Round(time.Microsecond).String(), "version", version)
	if c.onReady != nil {
		c.onReady(g)
	}
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down", "timeout", shutdownTimeout.String())
			sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
			defer cancel()
			if err := g.shutdown(sctx); err != nil {
				log.Error("shutdown incomplete", "error", err)
				return 1
			}
			log.Info("stopped")
			return 0
		case <-c.hup:
			g.reload(o)
		}
	}
}

func newLogger(w io.Writer, lc LogConfig) *slog.Logger {
	level, _ := parseLevel(lc.Level) // validated
	opts := &slog.HandlerOptions{Level: level}
	if lc.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func versionString() string {
	commit, modified := "unknown", ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				commit = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					modified = "+dirty"
				}
			}
		}
	}
	return fmt.Sprintf("gateway %s commit %s%s %s %s/%s", version, commit, modified, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}
