package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgebridge/gateway/internal/mqtttest"
)

// The tests in this file run the built binary as a user would.

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// gatewayBinary builds the gateway once per test run.
func gatewayBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds the binary; skipped with -short")
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "gateway-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "gateway")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// proc is the gateway binary running with JSON logs.
type proc struct {
	cmd   *exec.Cmd
	addrs map[string]string // "mqtt/tcp", "mqtt/ws", "http", "coap/udp" ... → address
	lines chan map[string]any
	done  chan error
	log   *syncBuffer
}

// startBinary runs the binary with every listener on a free port and waits
// for its "ready" line.
func startBinary(t *testing.T, args ...string) *proc {
	t.Helper()
	bin := gatewayBinary(t)
	base := []string{"--mqtt-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
		"--coap-addr", "127.0.0.1:0", "--log-format", "json"}
	cmd := exec.Command(bin, append(base, args...)...)
	cmd.Env = append(os.Environ(), "GATEWAY_DATA_DIR=") // memory unless --data-dir
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, addrs: map[string]string{}, lines: make(chan map[string]any, 256), done: make(chan error, 1), log: &syncBuffer{}}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			_, _ = p.log.Write(append(sc.Bytes(), '\n'))
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) == nil {
				select {
				case p.lines <- m:
				default:
				}
			}
		}
		close(p.lines)
	}()
	go func() { p.done <- cmd.Wait() }()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			if err := <-p.done; err != nil {
				t.Logf("gateway killed at cleanup: %v", err)
			}
		}
	})
	deadline := time.After(15 * time.Second)
	for {
		select {
		case m, ok := <-p.lines:
			if !ok {
				t.Fatalf("gateway exited before ready:\n%s", p.log)
			}
			if m["msg"] == "listening" {
				key := fmt.Sprint(m["protocol"])
				if k, ok := m["kind"]; ok {
					key += "/" + fmt.Sprint(k)
				}
				p.addrs[key] = fmt.Sprint(m["address"])
			}
			if m["msg"] == "ready" {
				return p
			}
		case <-deadline:
			t.Fatalf("gateway not ready within 15s:\n%s", p.log)
		}
	}
}

// waitLog waits for a log line whose msg is msg.
func (p *proc) waitLog(t *testing.T, msg string) map[string]any {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-p.lines:
			if !ok {
				t.Fatalf("log ended before %q:\n%s", msg, p.log)
			}
			if m["msg"] == msg {
				return m
			}
		case <-deadline:
			t.Fatalf("no %q log line within 10s:\n%s", msg, p.log)
		}
	}
}

// stop sends sig and returns the exit error (nil for exit 0).
func (p *proc) stop(t *testing.T, sig os.Signal) error {
	t.Helper()
	_ = p.cmd.Process.Signal(sig)
	select {
	case err := <-p.done:
		return err
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit within 15s of %v:\n%s", sig, p.log)
		return nil
	}
}

func TestBinaryRunsAndStopsCleanly(t *testing.T) {
	p := startBinary(t)
	for _, k := range []string{"mqtt/tcp", "mqtt/ws"} {
		if p.addrs[k] == "" {
			t.Errorf("no %s listener logged: %v", k, p.addrs)
		}
	}
	c := mqtttest.Dial(t, p.addrs["mqtt/tcp"], mqtttest.Options{ClientID: "bin"})
	c.Sub("bin/#", 1)
	c.Pub(&paho.Publish{Topic: "bin/x", QoS: 1, Payload: []byte("hello")})
	if m := c.Next(); string(m.Payload) != "hello" {
		t.Fatalf("got %q", m.Payload)
	}
	c.Close()
	if err := p.stop(t, syscall.SIGTERM); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, p.log)
	}
}

func TestBinaryVersionAndUsage(t *testing.T) {
	bin := gatewayBinary(t)
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "gateway ") || !strings.Contains(string(out), "go1.") {
		t.Fatalf("version: %v %q", err, out)
	}
	out, err = exec.Command(bin, "validate").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "-c FILE is required") {
		t.Fatalf("validate without -c: %v %q", err, out)
	}
	out, err = exec.Command(bin, "--no-such-flag").CombinedOutput()
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "flag provided but not defined") {
		t.Fatalf("bad flag: %v %q", err, out)
	}
}

func TestBinarySIGHUPKeepsOldConfigOnError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gw.yaml")
	writeFile(t, file, "log: {level: info}\n")
	p := startBinary(t, "-c", file)
	writeFile(t, file, "log: {level: loud}\n")
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	m := p.waitLog(t, "config reload rejected, keeping the running config")
	if !strings.Contains(fmt.Sprint(m["problems"]), `log.level: log level "loud"`) {
		t.Fatalf("reload problems: %v", m["problems"])
	}
	// Still serving.
	c := mqtttest.Dial(t, p.addrs["mqtt/tcp"], mqtttest.Options{ClientID: "after-hup"})
	c.Close()
	writeFile(t, file, "log: {level: debug}\n")
	_ = p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLog(t, "config reloaded")
	if err := p.stop(t, syscall.SIGINT); err != nil {
		t.Fatalf("SIGINT: %v", err)
	}
}

// A QoS 1 message acknowledged to its publisher must survive kill -9 when a
// persistent session waits for it.
func TestBinaryAcknowledgedMessageSurvivesKill9(t *testing.T) {
	data := t.TempDir()
	p := startBinary(t, "--data-dir", data)
	addr := p.addrs["mqtt/tcp"]
	sub := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "durable", SessionExpiry: 3600})
	sub.Sub("orders/#", 1)
	sub.Close()
	pub := mqtttest.Dial(t, addr, mqtttest.Options{ClientID: "pub"})
	const n = 50
	for i := range n {
		pub.Pub(&paho.Publish{Topic: fmt.Sprintf("orders/%d", i), QoS: 1, Payload: []byte(fmt.Sprint(i))})
	}
	pub.Pub(&paho.Publish{Topic: "orders/state", QoS: 1, Retain: true, Payload: []byte("retained")})
	if err := p.stop(t, syscall.SIGKILL); err == nil {
		t.Fatal("kill -9 reported exit 0")
	}

	p2 := startBinary(t, "--data-dir", data)
	back := mqtttest.Dial(t, p2.addrs["mqtt/tcp"], mqtttest.Options{ClientID: "durable", SessionExpiry: 3600})
	seen := map[string]bool{}
	for len(seen) < n+1 {
		select {
		case m := <-back.Msgs:
			seen[string(m.Payload)] = true
		case <-time.After(mqtttest.Timeout):
			t.Fatalf("after kill -9 and restart: %d of %d acknowledged messages delivered\n%s", len(seen), n+1, p2.log)
		}
	}
	if err := p2.stop(t, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
}

// requireTool finds an outside binary; it skips when absent, unless CI=true
// where the absence is a failure.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI but not installed", name)
		}
		t.Skipf("%s not installed", name)
	}
	return path
}

func TestBinaryWithMosquittoClients(t *testing.T) {
	pubBin := requireTool(t, "mosquitto_pub")
	subBin := requireTool(t, "mosquitto_sub")
	p := startBinary(t)
	host, port, _ := strings.Cut(p.addrs["mqtt/tcp"], ":")
	for _, v := range []string{"mqttv311", "mqttv5"} {
		for _, qos := range []string{"0", "1", "2"} {
			topic := "mosq/" + v + "/" + qos
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			sub := exec.CommandContext(ctx, subBin, "-h", host, "-p", port, "-V", v, "-q", qos, "-t", topic, "-C", "1", "-v")
			out := &syncBuffer{}
			sub.Stdout = out
			sub.Stderr = out
			if err := sub.Start(); err != nil {
				t.Fatal(err)
			}
			// Publish until the subscriber has its subscription in place.
			for i := 0; i < 50 && !strings.Contains(out.String(), topic); i++ {
				if b, err := exec.Command(pubBin, "-h", host, "-p", port, "-V", v, "-q", qos, "-t", topic, "-m", "hi-"+qos).CombinedOutput(); err != nil {
					t.Fatalf("mosquitto_pub: %v %s", err, b)
				}
				time.Sleep(100 * time.Millisecond)
			}
			err := sub.Wait()
			cancel()
			if err != nil || strings.TrimSpace(out.String()) != topic+" hi-"+qos {
				t.Fatalf("%s qos %s: %v %q", v, qos, err, out.String())
			}
		}
	}
	// Retained, read by a later subscriber.
	if b, err := exec.Command(pubBin, "-h", host, "-p", port, "-t", "mosq/state", "-r", "-q", "1", "-m", "kept").CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, b)
	}
	out, err := exec.Command(subBin, "-h", host, "-p", port, "-t", "mosq/#", "-C", "1", "-W", "5").Output()
	if err != nil || strings.TrimSpace(string(out)) != "kept" {
		t.Fatalf("retained: %v %q", err, out)
	}
}

// mosquittoSubOne starts mosquitto_sub for one message on topic and returns a
// function that waits for its "topic payload" line.
func mosquittoSubOne(t *testing.T, addr, topic string) func() string {
	t.Helper()
	subBin := requireTool(t, "mosquitto_sub")
	host, port, _ := strings.Cut(addr, ":")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	cmd := exec.CommandContext(ctx, subBin, "-h", host, "-p", port, "-V", "mqttv5", "-q", "1", "-t", topic, "-C", "1",
		"-F", "%t %p %C")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// mosquitto_sub has no "subscribed" signal; its SUBSCRIBE is on the
	// wire well within this on loopback, and the test fails loudly if not.
	time.Sleep(300 * time.Millisecond)
	return func() string {
		defer cancel()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("mosquitto_sub: %v %q", err, out.String())
		}
		return strings.TrimSpace(out.String())
	}
}

func TestBinaryHTTPWithCurl(t *testing.T) {
	curl := requireTool(t, "curl")
	p := startBinary(t)
	base := "http://" + p.addrs["http/http"]
	wait := mosquittoSubOne(t, p.addrs["mqtt/tcp"], "web/+/t")
	out, err := exec.Command(curl, "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST",
		"-H", "Content-Type: text/plain", "--data-binary", "21.5", base+"/topics/web/1/t").CombinedOutput()
	if err != nil || string(out) != "204" {
		t.Fatalf("curl POST: %v %q", err, out)
	}
	if got := wait(); got != "web/1/t 21.5 text/plain" {
		t.Fatalf("mosquitto_sub got %q", got)
	}
	out, err = exec.Command(curl, "-sS", "-X", "PUT", "-H", "Content-Type: application/json", "--data-binary", `{"on":true}`,
		"-o", "/dev/null", "-w", "%{http_code}", base+"/topics/web/lamp").CombinedOutput()
	if err != nil || string(out) != "204" {
		t.Fatalf("curl PUT: %v %q", err, out)
	}
	out, err = exec.Command(curl, "-sS", "-w", " %{content_type}", base+"/topics/web/lamp").CombinedOutput()
	if err != nil || string(out) != `{"on":true} application/json` {
		t.Fatalf("curl GET: %v %q", err, out)
	}
	out, err = exec.Command(curl, "-sS", "-w", " %{http_code} %{content_type}", base+"/topics/web/none").CombinedOutput()
	if err != nil || !strings.HasSuffix(string(out), " 404 application/problem+json") {
		t.Fatalf("curl GET missing: %v %q", err, out)
	}
}

// coapCode reads the response code out of libcoap's verbose output
// (coap-client exits 0 even on 4.xx).
func coapCode(out string) string {
	for _, f := range strings.Fields(out) {
		if len(f) == 4 && f[1] == '.' && (f[0] == '2' || f[0] == '4' || f[0] == '5') {
			return f
		}
	}
	return ""
}

func TestBinaryCoAPWithLibcoap(t *testing.T) {
	client := requireTool(t, "coap-client-openssl")
	p := startBinary(t)
	base := "coap://" + p.addrs["coap/udp"]
	wait := mosquittoSubOne(t, p.addrs["mqtt/tcp"], "coap/+/t")
	out, err := exec.Command(client, "-m", "post", "-t", "text/plain", "-e", "19.5", base+"/ps/coap/7/t").CombinedOutput()
	if err != nil {
		t.Fatalf("coap-client POST: %v %s", err, out)
	}
	if got := wait(); got != "coap/7/t 19.5 text/plain" {
		t.Fatalf("mosquitto_sub got %q (coap-client said %q)", got, out)
	}
	if out, err := exec.Command(client, "-m", "put", "-e", "open", base+"/ps/coap/valve").CombinedOutput(); err != nil {
		t.Fatalf("coap-client PUT: %v %s", err, out)
	}
	out, err = exec.Command(client, "-m", "get", base+"/ps/coap/valve").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "open" {
		t.Fatalf("coap-client GET: %v %q", err, out)
	}
	out, _ = exec.Command(client, "-m", "get", "-v", "7", base+"/ps/coap/none").CombinedOutput()
	if code := coapCode(string(out)); code != "4.04" {
		t.Fatalf("GET of a topic without retained message: code %q in\n%s", code, out)
	}
}
