// Package testwait polls a condition in tests instead of sleeping a fixed
// time. Only _test.go files import it.
package testwait

import (
	"testing"
	"time"
)

// Timeout bounds every wait: generous, since CI machines are shared; a
// passing test returns as soon as its condition holds.
const Timeout = 15 * time.Second

// For polls cond every few milliseconds until it holds, failing the test
// with "timed out waiting for WHAT" after Timeout.
func For(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
