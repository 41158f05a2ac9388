package httpadapter

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/edgebridge/gateway/bridge"
)

// envelope is the JSON form of a message (SPEC §8), used by SSE,
// GET ?envelope=true and POST /publish. MessageExpiry (seconds) is an
// extension: written when the message has an expiry, accepted on input.
type envelope struct {
	Topic           string            `json:"topic"`
	Payload         string            `json:"payload"`
	PayloadEncoding string            `json:"payload_encoding,omitempty"`
	QoS             *int              `json:"qos,omitempty"`
	Retain          bool              `json:"retain"`
	ContentType     string            `json:"content_type,omitempty"`
	UserProperties  map[string]string `json:"user_properties,omitempty"`
	MessageExpiry   *int64            `json:"message_expiry,omitempty"`
	// Timestamp is output only; accepted and ignored on input so that an
	// envelope read from a stream can be posted back unchanged.
	Timestamp string `json:"timestamp,omitempty"`
}

// Payload encodings of the envelope.
const (
	encUTF8   = "utf8"
	encBase64 = "base64"
)

const timestampLayout = "2006-01-02T15:04:05.000Z07:00"

// appendEnvelope appends the JSON envelope of m to dst. It is written by hand
// because it runs once per message per SSE stream.
func appendEnvelope(dst []byte, m *bridge.Message) []byte {
	dst = append(dst, `{"topic":`...)
	dst = appendJSONString(dst, m.Topic)
	dst = append(dst, `,"payload":`...)
	if utf8.Valid(m.Payload) {
		dst = appendJSONString(dst, string(m.Payload))
		dst = append(dst, `,"payload_encoding":"utf8"`...)
	} else {
		dst = append(dst, '"')
		dst = base64.StdEncoding.AppendEncode(dst, m.Payload)
		dst = append(dst, `","payload_encoding":"base64"`...)
	}
	dst = append(dst, `,"qos":`...)
	dst = strconv.AppendInt(dst, int64(m.QoS), 10)
	dst = append(dst, `,"retain":`...)
	dst = strconv.AppendBool(dst, m.Retain)
	if m.ContentType != "" {
		dst = append(dst, `,"content_type":`...)
		dst = appendJSONString(dst, m.ContentType)
	}
	if len(m.UserProperties) > 0 {
		dst = append(dst, `,"user_properties":`...)
		b, _ := json.Marshal(m.UserProperties) // sorted keys; cannot fail
		dst = append(dst, b...)
	}
	if m.Expiry > 0 {
		dst = append(dst, `,"message_expiry":`...)
		dst = strconv.AppendInt(dst, int64(m.Expiry/time.Second), 10)
	}
	t := m.Time
	if t.IsZero() {
		t = time.Now()
	}
	dst = append(dst, `,"timestamp":"`...)
	dst = t.UTC().AppendFormat(dst, timestampLayout)
	dst = append(dst, `"}`...)
	return dst
}

// appendJSONString appends s as a JSON string. Valid UTF-8 is assumed for
// the fast path; anything that needs escaping goes through encoding/json.
func appendJSONString(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c == '"' || c == '\\' || c >= 0x80 || c == '<' || c == '>' || c == '&' {
			b, _ := json.Marshal(s)
			return append(dst, b...)
		}
	}
	dst = append(dst, '"')
	dst = append(dst, s...)
	return append(dst, '"')
}

// toMessage converts an input envelope into a message, checking every field.
// maxPayload caps the decoded payload.
func (e *envelope) toMessage(maxPayload int64) (bridge.Message, error) {
	m := bridge.Message{Topic: e.Topic, QoS: 1, Retain: e.Retain, ContentType: e.ContentType, UserProperties: e.UserProperties}
	switch e.PayloadEncoding {
	case "", encUTF8:
		m.Payload = []byte(e.Payload)
	case encBase64:
		p, err := base64.StdEncoding.DecodeString(e.Payload)
		if err != nil {
			return m, badRequest("payload is not valid base64: " + err.Error())
		}
		m.Payload = p
	default:
		return m, badRequest(fmt.Sprintf("payload_encoding %q is not utf8 or base64", e.PayloadEncoding))
	}
	if int64(len(m.Payload)) > maxPayload {
		return m, &tooLarge{limit: maxPayload}
	}
	if e.QoS != nil {
		if *e.QoS < 0 || *e.QoS > 2 {
			return m, badRequest(fmt.Sprintf("qos %d is not 0, 1 or 2", *e.QoS))
		}
		m.QoS = byte(*e.QoS)
	}
	if e.MessageExpiry != nil {
		if *e.MessageExpiry < 1 || *e.MessageExpiry > maxExpiry {
			return m, badRequest(fmt.Sprintf("message_expiry %d is not between 1 and %d seconds", *e.MessageExpiry, int64(maxExpiry)))
		}
		m.Expiry = time.Duration(*e.MessageExpiry) * time.Second
	}
	for k, v := range e.UserProperties {
		if k == "" {
			return m, badRequest("user property names must not be empty")
		}
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return m, badRequest("user properties must be valid UTF-8")
		}
	}
	return m, nil
}

// decodeEnvelope decodes one envelope strictly: unknown fields are errors,
// so a misspelt "paylod" is reported instead of publishing an empty message.
func decodeEnvelope(raw json.RawMessage) (envelope, error) {
	var e envelope
	d := json.NewDecoder(bytes.NewReader(raw))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		return e, badRequest("envelope is not valid: " + err.Error())
	}
	return e, nil
}
