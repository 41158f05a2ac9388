package mapping

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"
)

// Transform names, as written in a route's `transform:` key.
const (
	TransformCBORToJSON = "cbor-to-json"
	TransformJSONToCBOR = "json-to-cbor"
)

// ErrTransform is wrapped by every error [Transform] returns for a payload
// that does not convert. Adapters answer it with 400 / 4.00.
var ErrTransform = errors.New("payload transform failed")

var (
	cborDec cbor.DecMode
	cborEnc cbor.EncMode
)

func init() {
	var err error
	cborDec, err = cbor.DecOptions{
		DupMapKey:      cbor.DupMapKeyEnforcedAPF, // JSON cannot hold both
		DefaultMapType: reflect.TypeOf(map[string]any(nil)),
		IntDec:         cbor.IntDecConvertNone,
		BigIntDec:      cbor.BigIntDecodePointer,
		TimeTagToAny:   cbor.TimeTagToRFC3339Nano,
		UTF8:           cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic("mapping: cbor decoder options: " + err.Error())
	}
	cborEnc, err = cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		panic("mapping: cbor encoder options: " + err.Error())
	}
}

// Transform converts payload as a route's `transform:` asks and returns the
// new payload and its content type. The empty name returns payload
// unchanged and contentType "". A payload that does not convert gives an
// error wrapping [ErrTransform] and no output: never half a message.
//
// cbor-to-json (RFC 8949 §6.1): the payload must be exactly one well-formed
// CBOR data item. Maps must have text-string keys (anything else is an
// error); integers stay integers, bignums (tags 2 and 3) become JSON numbers;
// byte strings become base64url strings without padding (base64 under tag
// 22, hex under tag 23); times (tags 0 and 1) become RFC 3339 strings; other
// tags are dropped and their content converted; NaN, infinities, undefined
// and other simple values become null.
//
// json-to-cbor: the payload must be exactly one JSON value in valid UTF-8.
// Numbers written without fraction or exponent become CBOR integers
// (bignums beyond 64 bits); others become the shortest float that holds
// them exactly. The output uses deterministic encoding (RFC 8949 §4.2).
func Transform(name string, payload []byte) (out []byte, contentType string, err error) {
	switch name {
	case "":
		return payload, "", nil
	case TransformCBORToJSON:
		out, err = cborToJSON(payload)
		if err != nil {
			return nil, "", fmt.Errorf("%w: %s: %w", ErrTransform, name, err)
		}
		return out, "application/json", nil
	case TransformJSONToCBOR:
		out, err = jsonToCBOR(payload)
		if err != nil {
			return nil, "", fmt.Errorf("%w: %s: %w", ErrTransform, name, err)
		}
		return out, "application/cbor", nil
	}
	return nil, "", fmt.Errorf("mapping: unknown transform %q", name)
}

func cborToJSON(payload []byte) ([]byte, error) {
	if len(payload) == 0 {
		return nil, errors.New("empty payload is not CBOR")
	}
	var v any
	if err := cborDec.Unmarshal(payload, &v); err != nil {
		return nil, fmt.Errorf("payload is not valid CBOR for JSON: %w", err)
	}
	jv, err := jsonValue(v, 0)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(jv); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}

// jsonValue turns a decoded CBOR value into one encoding/json writes as RFC
// 8949 §6.1 says.
func jsonValue(v any, tag uint64) (any, error) {
	switch x := v.(type) {
	case nil, bool, string, uint64, int64:
		return x, nil
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, nil
		}
		return x, nil
	case *big.Int:
		return json.Number(x.String()), nil
	case big.Int:
		return json.Number(x.String()), nil
	case []byte:
		switch tag {
		case 22:
			return base64.StdEncoding.EncodeToString(x), nil
		case 23:
			return hex.EncodeToString(x), nil
		}
		return base64.RawURLEncoding.EncodeToString(x), nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			c, err := jsonValue(e, tag)
			if err != nil {
				return nil, err
			}
			out[i] = c
		}
		return out, nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			c, err := jsonValue(e, tag)
			if err != nil {
				return nil, err
			}
			out[k] = c
		}
		return out, nil
	case cbor.Tag:
		if x.Number == 21 || x.Number == 22 || x.Number == 23 {
			tag = x.Number // expected later encoding, RFC 8949 §3.4.5.2
		}
		return jsonValue(x.Content, tag)
	case cbor.SimpleValue:
		return nil, nil
	}
	return nil, fmt.Errorf("CBOR value of Go type %T has no JSON form", v)
}

func jsonToCBOR(payload []byte) ([]byte, error) {
	if !utf8.Valid(payload) {
		return nil, errors.New("payload is not valid UTF-8, so not JSON")
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("empty payload is not JSON")
		}
		return nil, fmt.Errorf("payload is not valid JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("payload is not valid JSON: data after the first value")
	}
	cv, err := cborValue(v)
	if err != nil {
		return nil, err
	}
	return cborEnc.Marshal(cv)
}

// cborValue replaces JSON numbers with integers or floats.
func cborValue(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		s := string(x)
		if !strings.ContainsAny(s, ".eE") {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return i, nil
			}
			if u, err := strconv.ParseUint(s, 10, 64); err == nil {
				return u, nil
			}
			if b, ok := new(big.Int).SetString(s, 10); ok {
				return b, nil
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil, fmt.Errorf("number %s does not fit a 64-bit float", s)
		}
		return f, nil
	case []any:
		for i, e := range x {
			c, err := cborValue(e)
			if err != nil {
				return nil, err
			}
			x[i] = c
		}
		return x, nil
	case map[string]any:
		for k, e := range x {
			c, err := cborValue(e)
			if err != nil {
				return nil, err
			}
			x[k] = c
		}
		return x, nil
	}
	return v, nil
}
