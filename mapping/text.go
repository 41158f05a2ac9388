package mapping

import (
	"fmt"
	"net/url"
	"strings"
)

// TextTemplate is a string with placeholders, used for egress URLs and
// header values: "{name}" (or "{name...}", the same for text) is filled with
// a variable captured by the route's subscribe template when a message is
// delivered, and "${NAME}" is replaced by an environment variable once,
// when the route is compiled.
//
// In a URL template each variable is escaped for its place: in the host it
// must be a plain host name label (letters, digits, '-', '.', '_', '~'),
// in the path it is percent-encoded per segment (a "{x...}" value keeps its
// '/' separators), in the query it is query-escaped. In a header template a
// value with a control character is refused. A TextTemplate is immutable
// and safe for concurrent use.
type TextTemplate struct {
	raw   string
	parts []textPart
	names []string
}

type textPlace uint8

const (
	placeText   textPlace = iota // header value: no escaping
	placeScheme                  // URL scheme: no variables allowed
	placeHost                    // URL authority
	placePath                    // URL path
	placeQuery                   // URL query or fragment
)

type textPart struct {
	lit   string
	name  string // "" for a literal part
	place textPlace
}

// parseText compiles s. With isURL, variables are escaped for their place
// in the URL. lookup resolves ${NAME}. The error is a message without the
// key's path.
func parseText(s string, isURL bool, lookup func(string) (string, bool)) (*TextTemplate, error) {
	t := &TextTemplate{raw: s}
	place := placeText
	if isURL {
		place = placeScheme
	}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, textPart{lit: lit.String()})
			lit.Reset()
		}
	}
	// advance tracks where in a URL the literal text c puts us.
	prev := ""
	advance := func(c byte) {
		if !isURL {
			return
		}
		switch place {
		case placeScheme:
			if strings.HasSuffix(prev+string(c), "://") {
				place = placeHost
			}
		case placeHost:
			switch c {
			case '/':
				place = placePath
			case '?', '#':
				place = placeQuery
			}
		case placePath:
			if c == '?' || c == '#' {
				place = placeQuery
			}
		}
		prev += string(c)
		if len(prev) > 3 {
			prev = prev[len(prev)-3:]
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '$' && i+1 < len(s) && s[i+1] == '{':
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unclosed \"${\" at byte %d", i+1)
			}
			name := s[i+2 : i+2+end]
			if msg := checkName(name); msg != "" {
				return nil, fmt.Errorf("${%s}: %s", name, strings.Replace(msg, "variable", "environment variable", 1))
			}
			v, ok := lookup(name)
			if !ok {
				return nil, fmt.Errorf("environment variable %s is not set (used as ${%s})", name, name)
			}
			lit.WriteString(v)
			for j := 0; j < len(v); j++ {
				advance(v[j])
			}
			i += 2 + end
		case c == '{':
			end := strings.IndexByte(s[i+1:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unclosed \"{\" at byte %d", i+1)
			}
			name := strings.TrimSuffix(s[i+1:i+1+end], "...")
			if msg := checkName(name); msg != "" {
				return nil, fmt.Errorf("{%s}: %s", s[i+1:i+1+end], msg)
			}
			if place == placeScheme {
				return nil, fmt.Errorf("{%s}: a variable cannot be part of the URL scheme", name)
			}
			flush()
			t.parts = append(t.parts, textPart{name: name, place: place})
			if !containsStr(t.names, name) {
				t.names = append(t.names, name)
			}
			i += 1 + end
		case c == '}':
			return nil, fmt.Errorf("unmatched \"}\" at byte %d", i+1)
		default:
			lit.WriteByte(c)
			advance(c)
		}
	}
	flush()
	return t, nil
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// String returns the template as written (with ${NAME} unexpanded).
func (t *TextTemplate) String() string { return t.raw }

// Vars returns the names of the template's variables in order of first
// appearance.
func (t *TextTemplate) Vars() []string { return append([]string(nil), t.names...) }

// Expand fills the template. Errors wrap [ErrMissingVar] or
// [ErrInvalidValue] (a value that cannot stand in its place, e.g. "a b" in
// a host name).
func (t *TextTemplate) Expand(vars Vars) (string, error) {
	var b strings.Builder
	for _, p := range t.parts {
		if p.name == "" {
			b.WriteString(p.lit)
			continue
		}
		v, ok := vars.Get(p.name)
		if !ok {
			return "", fmt.Errorf("%w {%s} in %q", ErrMissingVar, p.name, t.raw)
		}
		switch p.place {
		case placeHost:
			if v == "" || !hostSafe(v) {
				return "", fmt.Errorf("%w: {%s} = %q cannot be part of a host name", ErrInvalidValue, p.name, v)
			}
			b.WriteString(v)
		case placePath:
			for i, seg := range strings.Split(v, "/") {
				if i > 0 {
					b.WriteByte('/')
				}
				b.WriteString(url.PathEscape(seg))
			}
		case placeQuery:
			b.WriteString(url.QueryEscape(v))
		default:
			if strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
				return "", fmt.Errorf("%w: {%s} = %q contains a control character", ErrInvalidValue, p.name, v)
			}
			b.WriteString(v)
		}
	}
	return b.String(), nil
}

func hostSafe(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~') {
			return false
		}
	}
	return true
}
