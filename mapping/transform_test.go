package mapping

import (
	"bytes"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCBORToJSON(t *testing.T) {
	tests := []struct {
		cbor string // hex, RFC 8949 Appendix A where possible
		json string // "" = ErrTransform
	}{
		{"00", `0`},
		{"1b ffffffffffffffff", `18446744073709551615`},
		{"3b ffffffffffffffff", `-18446744073709551616`},
		{"c2 49 010000000000000000", `18446744073709551616`}, // bignum
		{"f9 3c00", `1`}, // half float 1.0: JSON has one number type
		{"fb 3ff199999999999a", `1.1`},
		{"f9 7c00", `null`}, // Infinity
		{"f9 7e00", `null`}, // NaN
		{"f4", `false`}, {"f5", `true`}, {"f6", `null`}, {"f7", `null`}, {"f0", `null`},
		{"64 49455446", `"IETF"`},
		{"62 3c26", `"<&"`},              // no HTML escaping
		{"44 01020304", `"AQIDBA"`},      // base64url, no padding
		{"d6 44 01020304", `"AQIDBA=="`}, // tag 22: base64
		{"d7 44 01020304", `"01020304"`}, // tag 23: base16
		{"d8 20 76 687474703a2f2f7777772e6578616d706c652e636f6d", `"http://www.example.com"`}, // tag 32: content
		{"c1 1a 514b67b0", `"2013-03-21T20:04:00Z"`},
		{"83 01 82 02 03 82 04 05", `[1,[2,3],[4,5]]`},
		{"a2 61 61 01 61 62 82 02 03", `{"a":1,"b":[2,3]}`},
		{"bf 61 61 01 ff", `{"a":1}`}, // indefinite length
		{"a1 61 61 a1 61 62 80", `{"a":{"b":[]}}`},
		// errors: never half a message
		{"", ""},
		{"a2 01 02 03 04", ""},       // integer keys
		{"a1 61 61 a1 01 02", ""},    // nested integer key
		{"82 01 a1 f5 01", ""},       // bool key inside an array
		{"a2 61 61 01 61 61 02", ""}, // duplicate key
		{"01 02", ""},                // trailing data
		{"83 01 02", ""},             // truncated
		{"62 c328", ""},              // invalid UTF-8
		{"ff", ""},                   // break outside indefinite
	}
	for _, tt := range tests {
		out, ct, err := Transform(TransformCBORToJSON, unhex(t, tt.cbor))
		if tt.json == "" {
			if !errors.Is(err, ErrTransform) || out != nil || ct != "" {
				t.Errorf("%s: got %q %q %v, want ErrTransform", tt.cbor, out, ct, err)
			}
			continue
		}
		if err != nil || string(out) != tt.json || ct != "application/json" {
			t.Errorf("%s: got %s %q %v, want %s", tt.cbor, out, ct, err, tt.json)
		}
	}
}

func TestJSONToCBOR(t *testing.T) {
	tests := []struct {
		json string
		cbor string // hex; "" = ErrTransform
	}{
		{`0`, "00"},
		{`1`, "01"},
		{`-1`, "20"},
		{`1.0`, "f9 3c00"}, // written as a float, stays a float
		{`1.5`, "f9 3e00"},
		{`1e3`, "f9 63d0"},
		{`100000`, "1a 000186a0"},
		{`18446744073709551615`, "1b ffffffffffffffff"},
		{`18446744073709551616`, "c2 49 010000000000000000"},
		{`-9223372036854775809`, "3b 8000000000000000"},
		{`0.1`, "fb 3fb999999999999a"},
		{`"a"`, "61 61"},
		{`[1, "x", null, true]`, "84 01 61 78 f6 f5"},
		{`{"b": 1, "a": [2]}`, "a2 61 61 81 02 61 62 01"}, // deterministic key order
		{` {"a":1} `, "a1 61 61 01"},
		// errors
		{``, ""},
		{`  `, ""},
		{`{"a":1} x`, ""},
		{`{"a":1}{}`, ""},
		{`{"a":}`, ""},
		{`1e400`, ""},
		{"\"\xff\"", ""},
		{`[1,2`, ""},
		{`NaN`, ""},
	}
	for _, tt := range tests {
		out, ct, err := Transform(TransformJSONToCBOR, []byte(tt.json))
		if tt.cbor == "" {
			if !errors.Is(err, ErrTransform) || out != nil || ct != "" {
				t.Errorf("%q: got %x %q %v, want ErrTransform", tt.json, out, ct, err)
			}
			continue
		}
		if want := unhex(t, tt.cbor); err != nil || !bytes.Equal(out, want) || ct != "application/cbor" {
			t.Errorf("%q: got %x %q %v, want %x", tt.json, out, ct, err, want)
		}
	}
}

func TestTransformRoundTrip(t *testing.T) {
	for _, js := range []string{
		`{"a":[1,-2,3.25,"x",null,true,false,{}],"b":{"c":18446744073709551615}}`,
		`[]`, `"ü🙂"`, `-9223372036854775808`,
	} {
		c, _, err := Transform(TransformJSONToCBOR, []byte(js))
		if err != nil {
			t.Fatal(err)
		}
		back, _, err := Transform(TransformCBORToJSON, c)
		if err != nil || string(back) != js {
			t.Errorf("%s -> %x -> %s, %v", js, c, back, err)
		}
	}
}

func TestTransformNameAndErrors(t *testing.T) {
	out, ct, err := Transform("", []byte("raw"))
	if err != nil || string(out) != "raw" || ct != "" {
		t.Errorf("identity: %q %q %v", out, ct, err)
	}
	if _, _, err := Transform("gzip", nil); err == nil || errors.Is(err, ErrTransform) {
		t.Errorf("unknown transform: %v", err)
	}
	_, _, err = Transform(TransformCBORToJSON, []byte{0xa1, 0x01, 0x02})
	if err == nil || !strings.HasPrefix(err.Error(), "payload transform failed: cbor-to-json: payload is not valid CBOR for JSON: ") {
		t.Errorf("message: %v", err)
	}
	_, _, err = Transform(TransformJSONToCBOR, []byte(`{"a":1} x`))
	if err == nil || err.Error() != "payload transform failed: json-to-cbor: payload is not valid JSON: data after the first value" {
		t.Errorf("message: %v", err)
	}
}
