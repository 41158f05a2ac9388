package coapadapter

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgebridge/gateway/internal/testwait"
)

// libcoapClient is Debian libcoap3-bin's client with DTLS (STYLE field
// notes: there is no plain coap-client there).
const libcoapClient = "coap-client-openssl"

// needLibcoap skips without the binary, except under CI=true where a
// missing interop client is a failure.
func needLibcoap(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath(libcoapClient)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is required in CI (apt-get install libcoap3-bin): %v", libcoapClient, err)
		}
		t.Skipf("%s not installed", libcoapClient)
	}
	return path
}

// responseCode finds the response codes libcoap logs at -v 7 (lines like
// "v:1 t:ACK c:2.04 i:1234 ..."); requests log a method name instead.
var responseCode = regexp.MustCompile(`c:([2-5]\.\d\d)`)

// libcoap runs the client and returns the codes of the responses it got (in
// order), the payloads it received (its -o file) and everything it logged.
// coap-client exits 0 even on a 4.xx answer, so the code comes from the log.
func libcoap(t *testing.T, args ...string) (codes []string, payload, log string) {
	t.Helper()
	bin := needLibcoap(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	outFile := t.TempDir() + "/out"
	cmd := exec.CommandContext(ctx, bin, append([]string{"-v", "7", "-B", "10", "-o", outFile}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %v: %v\n%s%s", libcoapClient, args, err, out.String(), errb.String())
	}
	log = out.String() + errb.String()
	for _, m := range responseCode.FindAllStringSubmatch(log, -1) {
		codes = append(codes, m[1])
	}
	b, _ := os.ReadFile(outFile) // absent when nothing was received
	return codes, string(b), log
}

func lastCode(t *testing.T, codes []string, log string) string {
	t.Helper()
	if len(codes) == 0 {
		t.Fatalf("no response code in libcoap output:\n%s", log)
	}
	return codes[len(codes)-1]
}

func TestLibcoapInterop(t *testing.T) {
	needLibcoap(t)
	e := start(t, Config{
		DTLS: &DTLSConfig{Address: "127.0.0.1:0", PSK: map[string][]byte{"sensor-17": []byte("secret-key-17")}},
	})
	sub := e.subscriber(t, "lib/#")
	uri := "coap://" + e.udp

	t.Run("POST", func(t *testing.T) {
		codes, _, log := libcoap(t, "-m", "post", "-t", "text/plain", "-e", "21.5", uri+"/ps/lib/post")
		if c := lastCode(t, codes, log); c != "2.04" {
			t.Fatalf("code %s\n%s", c, log)
		}
		if m := sub.Next(); m.Topic != "lib/post" || string(m.Payload) != "21.5" || m.QoS != 1 || m.Properties.ContentType != "text/plain" {
			t.Fatalf("MQTT got %s %q qos %d %q", m.Topic, m.Payload, m.QoS, m.Properties.ContentType)
		}
	})
	t.Run("NON POST", func(t *testing.T) {
		codes, _, log := libcoap(t, "-N", "-m", "post", "-e", "x", uri+"/ps/lib/non")
		if c := lastCode(t, codes, log); c != "2.04" {
			t.Fatalf("code %s\n%s", c, log)
		}
		if m := sub.Next(); m.QoS != 0 {
			t.Fatalf("NON published at qos %d", m.QoS)
		}
	})
	t.Run("PUT and GET", func(t *testing.T) {
		codes, _, log := libcoap(t, "-m", "put", "-t", "50", "-e", `{"on":true}`, uri+"/ps/lib/state")
		if c := lastCode(t, codes, log); c != "2.04" {
			t.Fatalf("PUT code %s\n%s", c, log)
		}
		sub.Next()
		codes, out, log := libcoap(t, uri+"/ps/lib/state")
		if c := lastCode(t, codes, log); c != "2.05" || !strings.Contains(out, `{"on":true}`) {
			t.Fatalf("GET code %s out %q\n%s", c, out, log)
		}
	})
	t.Run("GET 4.04", func(t *testing.T) {
		codes, _, log := libcoap(t, uri+"/ps/lib/none")
		if c := lastCode(t, codes, log); c != "4.04" {
			t.Fatalf("code %s\n%s", c, log)
		}
	})
	t.Run("block-wise both ways", func(t *testing.T) {
		big := strings.Repeat("abcdefghij", 300) // 3000 bytes
		f := t.TempDir() + "/big"
		if err := os.WriteFile(f, []byte(big), 0o600); err != nil {
			t.Fatal(err)
		}
		codes, _, log := libcoap(t, "-m", "put", "-b", "64", "-f", f, uri+"/ps/lib/big")
		if c := lastCode(t, codes, log); c != "2.04" {
			t.Fatalf("PUT code %s\n%s", c, log)
		}
		if m := sub.Next(); string(m.Payload) != big {
			t.Fatalf("MQTT got %d bytes", len(m.Payload))
		}
		codes, out, log := libcoap(t, "-b", "64", uri+"/ps/lib/big")
		if c := lastCode(t, codes, log); c != "2.05" || out != big {
			t.Fatalf("GET code %s, %d bytes out\n%s", c, len(out), log)
		}
	})
	t.Run("observe", func(t *testing.T) {
		pub := mqtttestDial(t, e)
		pub.Pub(&paho.Publish{Topic: "libobs/x", QoS: 1, Retain: true, Payload: []byte("first")})
		done := make(chan struct{})
		var out string
		go func() {
			defer close(done)
			_, out, _ = libcoap(t, "-s", "3", uri+"/ps/libobs/x")
		}()
		testwait.For(t, "libcoap observer", func() bool { return observerCount(e.s) == 1 })
		pub.Pub(&paho.Publish{Topic: "libobs/x", QoS: 1, Payload: []byte("second")})
		pub.Pub(&paho.Publish{Topic: "libobs/x", QoS: 0, Payload: []byte("third")})
		<-done
		for _, want := range []string{"first", "second", "third"} {
			if !strings.Contains(out, want) {
				t.Fatalf("observe output %q lacks %q", out, want)
			}
		}
		testwait.For(t, "observation ended", func() bool { return observerCount(e.s) == 0 })
	})
	t.Run("observe block-wise notification", func(t *testing.T) {
		pub := mqtttestDial(t, e)
		big := strings.Repeat("0123456789", 300)
		done := make(chan struct{})
		var out, log string
		go func() {
			defer close(done)
			_, out, log = libcoap(t, "-s", "2", uri+"/ps/libobs/big/%23")
		}()
		testwait.For(t, "libcoap observer", func() bool { return observerCount(e.s) == 1 })
		pub.Pub(&paho.Publish{Topic: "libobs/big/1", QoS: 1, Payload: []byte(big)})
		<-done
		if !strings.Contains(out, big) {
			t.Fatalf("observe output has %d bytes, want the %d-byte notification\n%s", len(out), len(big), log)
		}
	})
	t.Run("DTLS PSK", func(t *testing.T) {
		codes, _, log := libcoap(t, "-m", "post", "-e", "secure", "-u", "sensor-17", "-k", "secret-key-17", "coaps://"+e.dtls+"/ps/lib/dtls")
		if c := lastCode(t, codes, log); c != "2.04" {
			t.Fatalf("code %s\n%s", c, log)
		}
		if m := sub.Next(); string(m.Payload) != "secure" {
			t.Fatalf("MQTT got %q", m.Payload)
		}
	})
}
