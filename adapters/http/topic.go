package httpadapter

import (
	"net/http"
	"net/url"
	"strings"
)

// topicFromPath returns the topic (or filter) named by the request path after
// prefix (for example "/topics/"). It works on r.URL.EscapedPath, not on the
// decoded path or chi's decoded wildcard, and percent-decodes each level:
//
//   - "/topics/sensors/1/t" → "sensors/1/t"; "%23" → "#", "+" stays "+".
//   - "%2F" is a level separator exactly like "/": MQTT topic levels cannot
//     contain '/', so "/topics/sensors%2F1%2Ft" (a whole topic encoded with
//     encodeURIComponent) is "sensors/1/t" as well.
//   - Empty levels are kept: "/topics/a//b" → "a//b", "/topics/a/" → "a/".
//   - A topic with a leading '/' is written either "/topics//a" or
//     "/topics/%2Fa"; both are "/a".
//   - "." and ".." are ordinary levels here, but HTTP clients remove them
//     before sending (curl unless --path-as-is): send "%2E" / "%2E%2E".
//   - "/topics/" alone is the empty topic, which the topic rules refuse.
//
// The result is checked by the caller (bridge.ValidateTopic/ValidateFilter).
func topicFromPath(r *http.Request, prefix string) (string, error) {
	esc := r.URL.EscapedPath()
	rest, ok := strings.CutPrefix(esc, prefix)
	if !ok {
		return "", badRequest("the path must start with " + prefix)
	}
	if strings.IndexByte(rest, '%') < 0 {
		return rest, nil
	}
	t, err := url.PathUnescape(rest)
	if err != nil {
		return "", badRequest("topic is not valid percent-encoding: " + rest)
	}
	return t, nil
}
