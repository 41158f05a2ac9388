// Package brokertest starts a real embedded broker for a test: anonymous
// access, one MQTT TCP listener on a free loopback port (unless cfg names
// listeners), shut down when the test ends. Only _test.go files import it.
package brokertest

import (
	"context"
	"testing"
	"time"

	"github.com/edgebridge/gateway/bridge"
)

// Start runs a broker built from cfg and returns it with the address of its
// first listener.
func Start(t testing.TB, cfg bridge.Config) (*bridge.Broker, string) {
	t.Helper()
	if cfg.Listeners == nil {
		cfg.Listeners = []bridge.Listener{{Address: "127.0.0.1:0"}}
	}
	cfg.AllowAnonymous = true
	b, err := bridge.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := b.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
	return b, b.Addrs()[0].Address
}
