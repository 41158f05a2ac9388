package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/edgebridge/gateway/bridge"
)

// The MQTT side of every scenario: clients that publish or answer, and
// subscribers that count what the gateway delivered on load/#.

// dialMQTT connects an MQTT 5 client with a clean start; recvMax > 0
// announces that Receive Maximum.
func dialMQTT(addr, id string, recvMax uint16, onPublish ...func(paho.PublishReceived) (bool, error)) (*paho.Client, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, OnPublishReceived: onPublish})
	cp := &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 60}
	if recvMax > 0 {
		cp.Properties = &paho.ConnectProperties{ReceiveMaximum: &recvMax}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	if ack.ReasonCode != 0 {
		_ = conn.Close()
		return nil, fmt.Errorf("connack reason code %d", ack.ReasonCode)
	}
	return c, nil
}

// counter is an MQTT subscriber that counts deliveries on load/#.
type counter interface {
	count() int64
	stop()
}

// startCounter starts a subscriber of the given kind and returns once it is
// subscribed: "mosquitto" runs mosquitto_sub in its own process (so the
// subscriber's CPU is not the gateway's; paho in process when mosquitto_sub
// is not installed), "paho" a paho.golang client in this process.
func startCounter(kind string, b *bridge.Broker, addr string, qos byte) (counter, error) {
	switch kind {
	case "mosquitto":
		if _, err := exec.LookPath("mosquitto_sub"); err == nil {
			return startMosquittoSub(b, addr, qos)
		}
		fmt.Fprintln(os.Stderr, "gwload: mosquitto_sub not found, counting in process with paho")
		return startPaho(addr, qos)
	case "paho":
		return startPaho(addr, qos)
	}
	return nil, fmt.Errorf("-sub %q: want mosquitto or paho", kind)
}

// readyTopic is where the marker that proves mosquitto_sub's subscription
// goes; its lines are not counted.
const readyTopic = "ready/gwload"

// mosquittoSub counts the lines mosquitto_sub prints (one per message).
type mosquittoSub struct {
	cmd  *exec.Cmd
	n    atomic.Int64
	done chan struct{}
}

func startMosquittoSub(b *bridge.Broker, addr string, qos byte) (*mosquittoSub, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("mosquitto_sub", "-h", host, "-p", port, "-V", "5", "-q", strconv.Itoa(int(qos)),
		"-t", "load/#", "-t", readyTopic, "-i", "gwload-count", "-F", "%t")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	m := &mosquittoSub{cmd: cmd, done: make(chan struct{})}
	ready := make(chan struct{})
	go func() { // owned: ends when stop kills mosquitto_sub
		defer close(m.done)
		r := bufio.NewReaderSize(out, 64<<10)
		var once sync.Once
		for {
			line, err := r.ReadSlice('\n')
			if len(line) > 0 {
				if string(line[:len(line)-1]) == readyTopic {
					once.Do(func() { close(ready) })
				} else {
					m.n.Add(1)
				}
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				return
			}
		}
	}()
	// Publish a marker until mosquitto_sub prints it: then it is subscribed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := b.Publish(context.Background(), bridge.Message{Topic: readyTopic, Payload: []byte("ready")}); err != nil {
			m.stop()
			return nil, err
		}
		select {
		case <-ready:
			time.Sleep(200 * time.Millisecond) // let late markers arrive
			return m, nil
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			m.stop()
			return nil, errors.New("mosquitto_sub did not subscribe within 10s")
		}
	}
}

func (m *mosquittoSub) count() int64 { return m.n.Load() }

func (m *mosquittoSub) stop() {
	_ = m.cmd.Process.Kill()
	<-m.done
	_ = m.cmd.Wait()
}

// pahoSub is an in-process MQTT 5 subscriber.
type pahoSub struct {
	c *paho.Client
	n atomic.Int64
}

func startPaho(addr string, qos byte) (*pahoSub, error) {
	k := &pahoSub{}
	c, err := dialMQTT(addr, "gwload-count", 65535, func(paho.PublishReceived) (bool, error) { k.n.Add(1); return true, nil })
	if err != nil {
		return nil, err
	}
	k.c = c
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "load/#", QoS: qos}}}); err != nil {
		k.stop()
		return nil, err
	}
	return k, nil
}

func (k *pahoSub) count() int64 { return k.n.Load() }

func (k *pahoSub) stop() {
	_ = k.c.Disconnect(&paho.Disconnect{})
	select {
	case <-k.c.Done():
	case <-time.After(5 * time.Second):
	}
}
