package coapadapter

import (
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
)

// contentFormats maps CoAP Content-Format numbers (IANA "CoAP Content-Formats"
// registry) to MQTT 5 content types, both ways. The types are written as the
// registry writes them, without parameters except where the parameter is the
// format (cose-type); text/plain drops its "charset=utf-8" because MQTT users
// write "text/plain".
var contentFormats = map[message.MediaType]string{
	0:     "text/plain",
	16:    `application/cose; cose-type="cose-encrypt0"`,
	17:    `application/cose; cose-type="cose-mac0"`,
	18:    `application/cose; cose-type="cose-sign1"`,
	19:    "application/ace+cbor",
	21:    "image/gif",
	22:    "image/jpeg",
	23:    "image/png",
	40:    "application/link-format",
	41:    "application/xml",
	42:    "application/octet-stream",
	47:    "application/exi",
	50:    "application/json",
	51:    "application/json-patch+json",
	52:    "application/merge-patch+json",
	60:    "application/cbor",
	61:    "application/cwt",
	62:    "application/multipart-core",
	63:    "application/cbor-seq",
	96:    `application/cose; cose-type="cose-encrypt"`,
	97:    `application/cose; cose-type="cose-mac"`,
	98:    `application/cose; cose-type="cose-sign"`,
	101:   "application/cose-key",
	102:   "application/cose-key-set",
	110:   "application/senml+json",
	111:   "application/sensml+json",
	112:   "application/senml+cbor",
	113:   "application/sensml+cbor",
	114:   "application/senml-exi",
	115:   "application/sensml-exi",
	256:   "application/coap-group+json",
	271:   "application/dots+cbor",
	272:   "application/missing-blocks+cbor-seq",
	310:   "application/senml+xml",
	311:   "application/sensml+xml",
	320:   "application/senml-etch+json",
	322:   "application/senml-etch+cbor",
	432:   "application/td+json",
	10000: "application/vnd.ocf+cbor",
	11542: "application/vnd.oma.lwm2m+tlv",
	11543: "application/vnd.oma.lwm2m+json",
	11544: "application/vnd.oma.lwm2m+cbor",
}

// contentTypes is the reverse of contentFormats, keyed by normalised type.
var contentTypes = func() map[string]message.MediaType {
	m := make(map[string]message.MediaType, len(contentFormats))
	for cf, ct := range contentFormats {
		m[normalizeType(ct)] = cf
	}
	return m
}()

// contentTypeOf returns the MQTT content type of a CoAP Content-Format.
func contentTypeOf(cf message.MediaType) (string, bool) {
	ct, ok := contentFormats[cf]
	return ct, ok
}

// contentFormat returns the CoAP Content-Format of an MQTT content type:
// case and spacing do not matter, and "charset=utf-8" is implied for text
// and JSON.
func contentFormat(ct string) (message.MediaType, bool) {
	if ct == "" {
		return 0, false
	}
	cf, ok := contentTypes[normalizeType(ct)]
	return cf, ok
}

// normalizeType lowercases a media type, removes spaces around parameters
// and drops a charset=utf-8 parameter.
func normalizeType(ct string) string {
	parts := strings.Split(strings.ToLower(ct), ";")
	out := make([]string, 0, len(parts))
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if i > 0 && (p == "charset=utf-8" || p == `charset="utf-8"`) {
			continue
		}
		if p != "" {
			out = append(out, p)
		}
	}
	return strings.Join(out, ";")
}
