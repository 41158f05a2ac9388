package egress

import (
	"encoding/binary"
	"errors"
	"maps"
	"slices"
	"time"

	"github.com/edgebridge/gateway/bridge"
	"github.com/edgebridge/gateway/mapping"
)

// recordVersion is the first byte of every queued record.
const recordVersion = 1

var errRecord = errors.New("egress: unreadable queued record")

// encodeRecord serialises what a delivery needs: the message with its MQTT 5
// properties and receive time, and the variables the route captured.
//
//	version | flags (bit 0 retain) | qos | time (varint ns) | expiry (varint ns)
//	topic | content type | response topic | correlation data | payload
//	n user properties, then key, value each | n vars, then name, value each
//
// Strings and byte fields are uvarint-length-prefixed.
func encodeRecord(m *bridge.Message, vars *mapping.Vars) []byte {
	n := 32 + len(m.Topic) + len(m.ContentType) + len(m.ResponseTopic) + len(m.CorrelationData) + len(m.Payload)
	for k, v := range m.UserProperties {
		n += 4 + len(k) + len(v)
	}
	b := make([]byte, 0, n)
	var flags byte
	if m.Retain {
		flags |= 1
	}
	b = append(b, recordVersion, flags, m.QoS)
	b = binary.AppendVarint(b, m.Time.UnixNano())
	b = binary.AppendVarint(b, int64(m.Expiry))
	for _, s := range []string{m.Topic, m.ContentType, m.ResponseTopic} {
		b = appendString(b, s)
	}
	b = appendBytes(b, m.CorrelationData)
	b = appendBytes(b, m.Payload)
	b = binary.AppendUvarint(b, uint64(len(m.UserProperties)))
	for _, k := range slices.Sorted(maps.Keys(m.UserProperties)) {
		b = appendString(b, k)
		b = appendString(b, m.UserProperties[k])
	}
	b = binary.AppendUvarint(b, uint64(vars.Len()))
	for i := range vars.Len() {
		v := vars.At(i)
		b = appendString(b, v.Name)
		b = appendString(b, v.Value)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBytes(b, s []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// decodeRecord reverses encodeRecord. The message's slices alias b.
func decodeRecord(b []byte) (m bridge.Message, vars mapping.Vars, err error) {
	r := reader{b: b}
	if len(b) < 3 || b[0] != recordVersion {
		return m, vars, errRecord
	}
	m.Retain = b[1]&1 != 0
	m.QoS = b[2]
	r.b = b[3:]
	m.Time = time.Unix(0, r.varint())
	m.Expiry = time.Duration(r.varint())
	m.Topic = string(r.bytes())
	m.ContentType = string(r.bytes())
	m.ResponseTopic = string(r.bytes())
	if cd := r.bytes(); len(cd) > 0 {
		m.CorrelationData = cd
	}
	m.Payload = r.bytes()
	if n := r.uvarint(); n > 0 && n < 1<<16 {
		m.UserProperties = make(map[string]string, n)
		for range n {
			k := string(r.bytes())
			m.UserProperties[k] = string(r.bytes())
		}
	}
	n := r.uvarint()
	if n > mapping.MaxVars {
		return m, vars, errRecord
	}
	for range n {
		k := string(r.bytes())
		_ = vars.Set(k, string(r.bytes()))
	}
	if r.bad || len(r.b) != 0 {
		return bridge.Message{}, mapping.Vars{}, errRecord
	}
	return m, vars, nil
}

type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	s := r.b[:n:n]
	r.b = r.b[n:]
	return s
}
