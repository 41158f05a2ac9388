// Package mqtttest gives tests real MQTT clients: paho.golang for MQTT 5 and
// paho.mqtt.golang for MQTT 3.1.1, connected over loopback to a broker the
// test started. Only _test.go files import it.
package mqtttest

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt3 "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/websocket"
)

// Timeout bounds every wait in this package.
const Timeout = 5 * time.Second

// Client is an MQTT 5 client whose received messages arrive on Msgs.
type Client struct {
	*paho.Client
	Msgs chan *paho.Publish
	t    testing.TB
}

// Options shape a Dial.
type Options struct {
	ClientID      string
	CleanStart    bool        // default false only when SessionExpiry > 0
	SessionExpiry uint32      // seconds; > 0 keeps the session after disconnect
	TLS           *tls.Config // dial with TLS
	Username      string
	Password      string
	Dialer        func() (net.Conn, error) // overrides TCP/TLS dialing (WebSocket)
}

// Dial connects an MQTT 5 client to addr and fails the test if it cannot.
// The client disconnects when the test ends.
func Dial(t testing.TB, addr string, o Options) *Client {
	t.Helper()
	c, ack, err := DialErr(addr, o)
	if err != nil {
		t.Fatalf("mqtt5 connect %s: %v (connack %+v)", addr, err, ack)
	}
	c.t = t
	t.Cleanup(func() { c.Close() })
	return c
}

// DialErr is Dial that returns the error instead of failing the test.
func DialErr(addr string, o Options) (*Client, *paho.Connack, error) {
	var conn net.Conn
	var err error
	switch {
	case o.Dialer != nil:
		conn, err = o.Dialer()
	case o.TLS != nil:
		conn, err = tls.DialWithDialer(&net.Dialer{Timeout: Timeout}, "tcp", addr, o.TLS)
	default:
		conn, err = net.DialTimeout("tcp", addr, Timeout)
	}
	if err != nil {
		return nil, nil, err
	}
	msgs := make(chan *paho.Publish, 1024)
	pc := paho.NewClient(paho.ClientConfig{
		Conn: conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) {
				select {
				case msgs <- pr.Packet:
				default:
				}
				return true, nil
			},
		},
	})
	cp := &paho.Connect{
		ClientID:   o.ClientID,
		KeepAlive:  30,
		CleanStart: o.CleanStart || o.SessionExpiry == 0,
	}
	if o.SessionExpiry > 0 {
		cp.Properties = &paho.ConnectProperties{SessionExpiryInterval: &o.SessionExpiry}
	}
	if o.Username != "" {
		cp.Username, cp.UsernameFlag = o.Username, true
		cp.Password, cp.PasswordFlag = []byte(o.Password), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	ack, err := pc.Connect(ctx, cp)
	if err != nil {
		_ = conn.Close()
		return nil, ack, err
	}
	return &Client{Client: pc, Msgs: msgs}, ack, nil
}

// Close disconnects cleanly and waits for the client's goroutines.
func (c *Client) Close() {
	_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
	select {
	case <-c.Done():
	case <-time.After(Timeout):
	}
}

// Sub subscribes at qos and fails the test on error.
func (c *Client) Sub(filter string, qos byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	ack, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if err != nil {
		c.t.Fatalf("subscribe %s: %v", filter, err)
	}
	if len(ack.Reasons) != 1 || ack.Reasons[0] > 2 {
		c.t.Fatalf("subscribe %s: suback reasons %v", filter, ack.Reasons)
	}
}

// Pub publishes and fails the test on error.
func (c *Client) Pub(p *paho.Publish) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	if _, err := c.Publish(ctx, p); err != nil {
		c.t.Fatalf("publish %s: %v", p.Topic, err)
	}
}

// Next waits for the next received message.
func (c *Client) Next() *paho.Publish {
	c.t.Helper()
	select {
	case m := <-c.Msgs:
		return m
	case <-time.After(Timeout):
		c.t.Fatalf("no message within %v", Timeout)
		return nil
	}
}

// None fails the test if a message arrives within d.
func (c *Client) None(d time.Duration) {
	c.t.Helper()
	select {
	case m := <-c.Msgs:
		c.t.Fatalf("unexpected message on %s: %q", m.Topic, m.Payload)
	case <-time.After(d):
	}
}

// Client3 is an MQTT 3.1.1 client whose received messages arrive on Msgs.
type Client3 struct {
	mqtt3.Client
	Msgs chan mqtt3.Message
	t    testing.TB
}

// Dial3 connects an MQTT 3.1.1 client (clean session unless persistent).
func Dial3(t testing.TB, addr, clientID string, persistent bool) *Client3 {
	t.Helper()
	msgs := make(chan mqtt3.Message, 1024)
	o := mqtt3.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(clientID).
		SetProtocolVersion(4).SetCleanSession(!persistent).SetAutoReconnect(false).
		SetConnectTimeout(Timeout).
		SetDefaultPublishHandler(func(_ mqtt3.Client, m mqtt3.Message) {
			select {
			case msgs <- m:
			default:
			}
		})
	c := mqtt3.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(Timeout) || tok.Error() != nil {
		t.Fatalf("mqtt3 connect %s: %v", addr, tok.Error())
	}
	t.Cleanup(func() { c.Disconnect(100) })
	return &Client3{Client: c, Msgs: msgs, t: t}
}

// Sub subscribes at qos and fails the test on error.
func (c *Client3) Sub(filter string, qos byte) {
	c.t.Helper()
	tok := c.Subscribe(filter, qos, nil)
	if !tok.WaitTimeout(Timeout) || tok.Error() != nil {
		c.t.Fatalf("subscribe %s: %v", filter, tok.Error())
	}
}

// Pub publishes and fails the test on error.
func (c *Client3) Pub(topic string, qos byte, retain bool, payload []byte) {
	c.t.Helper()
	tok := c.Publish(topic, qos, retain, payload)
	if !tok.WaitTimeout(Timeout) || tok.Error() != nil {
		c.t.Fatalf("publish %s: %v", topic, tok.Error())
	}
}

// Next waits for the next received message.
func (c *Client3) Next() mqtt3.Message {
	c.t.Helper()
	select {
	case m := <-c.Msgs:
		return m
	case <-time.After(Timeout):
		c.t.Fatalf("no message within %v", Timeout)
		return nil
	}
}

// WebSocket returns a Dialer for Options that speaks MQTT over WebSocket
// (subprotocol "mqtt", binary frames) to url, e.g. ws://127.0.0.1:8083/mqtt.
func WebSocket(url string) func() (net.Conn, error) {
	return func() (net.Conn, error) {
		cfg, err := websocket.NewConfig(url, "http://127.0.0.1/")
		if err != nil {
			return nil, err
		}
		cfg.Protocol = []string{"mqtt"}
		cfg.Dialer = &net.Dialer{Timeout: Timeout}
		c, err := websocket.DialConfig(cfg)
		if err != nil {
			return nil, err
		}
		c.PayloadType = websocket.BinaryFrame
		return c, nil
	}
}

// Responder runs an MQTT 5 device for the rest of the test: it subscribes
// to filter and answers each request with answer(request), published to the
// request's Response Topic with its Correlation Data.
func Responder(t testing.TB, addr, clientID, filter string, answer func(req *paho.Publish) *paho.Publish) {
	t.Helper()
	dev := Dial(t, addr, Options{ClientID: clientID})
	dev.Sub(filter, 1)
	done, exited := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(done); <-exited })
	go func() {
		defer close(exited)
		for {
			select {
			case <-done:
				return
			case req := <-dev.Msgs:
				resp := answer(req)
				resp.Topic, resp.QoS = req.Properties.ResponseTopic, 1
				if resp.Properties == nil {
					resp.Properties = &paho.PublishProperties{}
				}
				resp.Properties.CorrelationData = req.Properties.CorrelationData
				ctx, cancel := context.WithTimeout(context.Background(), Timeout)
				_, _ = dev.Publish(ctx, resp)
				cancel()
			}
		}
	}()
}
