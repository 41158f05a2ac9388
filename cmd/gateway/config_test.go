package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
)

// validateFile runs `gateway validate -c FILE` in-process.
func validateFile(t *testing.T, content string, env map[string]string) (code int, out string, file string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "gw.yaml")
	writeFile(t, file, content)
	var buf syncBuffer
	c := &cli{stdout: &buf, stderr: &buf, getenv: func(k string) (string, bool) { v, ok := env[k]; return v, ok }}
	code = c.run(context.Background(), []string{"validate", "-c", file})
	return code, buf.String(), file
}

func TestValidateReportsEveryProblemWithPosition(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // lines after "FILE:"
	}{
		{"syntax", "http:\n  address: \"open\n", []string{`2:12: could not find end character of double-quoted text`}},
		{"bad indentation", "mqtt:\n  listeners:\n    - address: \":1\"\n   bad: x\n", []string{`4:4: value is not allowed in this context`}},
		{"unknown keys and wrong types, all at once", `mqtt:
  listeners:
    - {address: ":1883", websockt: true}
http:
  genric: true
limits:
  max_payload: 12XB
  max_observers: many
storage:
  path: [a]
auth:
  anonymous: yes please
`, []string{
			`3:26: mqtt.listeners[0]: unknown key "websockt" (known: address, tls, websocket)`,
			`5:3: http: unknown key "genric" (known: address, cors, generic, tls)`,
			`7:16: limits.max_payload: invalid size "12XB": want bytes, or a number with KiB, MiB or GiB`,
			`8:18: limits.max_observers: expected a whole number, found "many"`,
			`10:9: storage.path: expected a string, found a list`,
			`12:14: auth.anonymous: expected true or false, found "yes please"`,
		}},
		{"not supported yet", "auth:\n  users:\n    - name: x\nupstream:\n  - url: mqtt://x\n", []string{
			`2:3: auth.users: users and ACLs are not supported yet (only auth.anonymous)`,
			`4:1: upstream: upstream bridging is not supported yet`,
		}},
		{"bad values", `mqtt:
  listeners:
    - address: "nope"
    - address: ":1"
      tls: {cert: missing.crt}
http:
  address: "127.0.0.1:99999"
  cors: {origins: ["app.example"]}
coap:
  dtls:
    address: ":5684"
    psk:
      - {identity: a, key_hex: "zz"}
      - {identity: a, key_hex: "01", key_hex_env: X}
limits:
  max_payload: 300MiB
log: {level: loud, format: xml}
`, []string{
			`3:16: mqtt.listeners[0].address: invalid address "nope": want host:port or :port`,
			`5:12: mqtt.listeners[1].tls: tls needs both cert and key`,
			`7:12: http.address: invalid port in "127.0.0.1:99999"`,
			`8:20: http.cors.origins[0]: origin "app.example" must be * or start with http:// or https://`,
			`13:9: coap.dtls.psk[0]: psk key is not hex`,
			`14:20: coap.dtls.psk[1].identity: identity "a" appears twice`,
			`14:9: coap.dtls.psk[1]: give exactly one of key_hex, key_hex_file, key_hex_env`,
			`16:16: limits.max_payload: max_payload must be between 1 byte and 256MiB`,
			`17:14: log.level: log level "loud": want debug, info, warn or error`,
			`17:28: log.format: log format "xml": want text or json`,
		}},
		{"routes", `routes:
  - name: t
    http: {path: "/s/{id}/t"}
    topic: "sensors/{room}/t"
  - name: t
    coap: {path: "/x"}
    topic: "a/+"
`, []string{
			`3:18: routes[0] "t": http.path: variable {room} used in topic "sensors/{room}/t" is not captured by path "/s/{id}/t"`,
			`5:11: routes[1] "t": name: duplicate route name, also used by routes[0]`,
			`7:12: routes[1] "t": topic: level 2 "+": wildcards '+' and '#' are not allowed in a template (use {name} or {name...})`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, file := validateFile(t, tc.yaml, nil)
			if code != 1 {
				t.Fatalf("exit %d, want 1\n%s", code, out)
			}
			var want []string
			for _, w := range tc.want {
				want = append(want, file+":"+w)
			}
			got := strings.Split(strings.TrimSpace(out), "\n")
			if strings.Join(got, "\n") != strings.Join(want, "\n") {
				t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestShippedConfigsValidate(t *testing.T) {
	files, _ := filepath.Glob("../../configs/*.yaml")
	if len(files) == 0 {
		t.Fatal("no configs/*.yaml")
	}
	for _, f := range files {
		var buf syncBuffer
		c := &cli{stdout: &buf, stderr: &buf, getenv: func(string) (string, bool) { return "", false }}
		if code := c.run(context.Background(), []string{"validate", "-c", f}); code != 0 {
			t.Errorf("%s: exit %d\n%s", f, code, buf.String())
		}
	}
}

func TestPrecedenceFlagEnvFileDefault(t *testing.T) {
	file := filepath.Join(t.TempDir(), "gw.yaml")
	writeFile(t, file, "http: {address: \"127.0.0.1:1111\"}\ncoap: {udp: {address: \"127.0.0.1:2222\"}}\nstorage: {path: /file}\n")
	env := Overrides{HTTPAddr: ptr("127.0.0.1:3333"), DataDir: ptr("/env")}
	flags := Overrides{DataDir: ptr("/flag"), MQTTAddr: ptr("")}
	l, err := loadConfig(file, flags.merge(env))
	if err != nil {
		t.Fatal(err)
	}
	c := l.cfg
	if *c.HTTP.Address != "127.0.0.1:3333" { // env over file
		t.Errorf("http address %q", *c.HTTP.Address)
	}
	if *c.Storage.Path != "/flag" { // flag over env over file
		t.Errorf("data dir %q", *c.Storage.Path)
	}
	if c.CoAP.UDP.Address != "127.0.0.1:2222" { // file over default
		t.Errorf("coap %q", c.CoAP.UDP.Address)
	}
	// An empty --mqtt-addr turns the TCP listener off; the default WebSocket one stays.
	if len(c.MQTT.Listeners) != 1 || !c.MQTT.Listeners[0].WebSocket || c.MQTT.Listeners[0].Address != defaultWSAddr {
		t.Errorf("listeners %+v", c.MQTT.Listeners)
	}
	if c.Limits.MaxPayload != defaultMaxPayload || *c.Auth.Anonymous != true {
		t.Errorf("defaults not applied: %+v", c.Limits)
	}
}

func TestEnvironmentOverridesReachTheCommand(t *testing.T) {
	code, out, _ := validateFile(t, "log: {level: info}\n", map[string]string{"GATEWAY_LOG_LEVEL": "chatty"})
	if code != 1 || !strings.Contains(out, `log.level: log level "chatty"`) {
		t.Fatalf("exit %d: %s", code, out)
	}
}

func TestSizes(t *testing.T) {
	for in, want := range map[string]Size{"1024": 1024, "256KiB": 256 << 10, "1 MiB": 1 << 20, "2GiB": 2 << 30, "10B": 10} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("%q: %d %v", in, s, err)
		}
	}
	for _, in := range []string{"", "-1", "1KB", "MiB", "1.5MiB"} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}
