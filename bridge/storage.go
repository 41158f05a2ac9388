package bridge

import (
	"fmt"
	"os"
	"path/filepath"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/storage/pebble"
)

// addStorage attaches the persistent store: retained messages, sessions,
// subscriptions and QoS 1/2 in-flight messages survive a restart. Pebble in
// Sync mode was chosen by measurement (docs/storage.md): every write is on
// disk before the publish that caused it is acknowledged.
func addStorage(srv *mqtt.Server, dir string) error {
	path := filepath.Join(dir, "mqtt")
	if err := os.MkdirAll(path, 0o750); err != nil {
		return fmt.Errorf("storage: %w", err)
	}
	if err := srv.AddHook(new(pebble.Hook), &pebble.Options{Path: path, Mode: pebble.Sync}); err != nil {
		return fmt.Errorf("storage at %s: %w", path, err)
	}
	return nil
}
