package coapadapter

import (
	"testing"

	"github.com/edgebridge/gateway/internal/mqtttest"
)

// mqtttestDial connects an MQTT 5 client to the test broker.
func mqtttestDial(t *testing.T, e *testEnv) *mqtttest.Client {
	t.Helper()
	return mqtttest.Dial(t, e.mqtt, mqtttest.Options{ClientID: "c-" + t.Name()})
}
