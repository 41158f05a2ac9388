package main

import (
	"path/filepath"
	"reflect"
)

// addAdapters builds the HTTP and CoAP adapters from the config.
func (g *gateway) addAdapters(l *loaded) error {
	return nil
}

// logAdapterAddrs logs the bound address of every adapter listener.
func (g *gateway) logAdapterAddrs() {}

// restartOnly names the settings that differ between a and b and cannot be
// applied to a running gateway (listeners and storage).
func restartOnly(a, b *Config) []string {
	var out []string
	for name, pair := range map[string][2]any{
		"mqtt.listeners": {a.MQTT.Listeners, b.MQTT.Listeners},
		"http.address":   {a.HTTP.Address, b.HTTP.Address},
		"http.tls":       {a.HTTP.TLS, b.HTTP.TLS},
		"coap":           {a.CoAP, b.CoAP},
		"storage.path":   {a.Storage.Path, b.Storage.Path},
		"auth.anonymous": {a.Auth.Anonymous, b.Auth.Anonymous},
		"log":            {a.Log, b.Log},
	} {
		if !reflect.DeepEqual(pair[0], pair[1]) {
			out = append(out, name)
		}
	}
	return out
}

func dirOf(file string) string {
	if file == "" {
		return ""
	}
	return filepath.Dir(file)
}
