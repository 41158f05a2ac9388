package mapping

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// MaxVars is the most variables one template may declare; it is also the
// capacity of [Vars].
const MaxVars = 16

// MaxTopicLen is the longest MQTT topic, in bytes [MQTT-4.7.3-3].
const MaxTopicLen = 65535

// Kind tells what a [Template] describes.
type Kind uint8

const (
	// PathKind is a URL path (HTTP) or Uri-Path (CoAP) template.
	PathKind Kind = iota + 1
	// TopicKind is an MQTT topic template.
	TopicKind
)

// String returns "path" or "topic".
func (k Kind) String() string {
	switch k {
	case PathKind:
		return "path"
	case TopicKind:
		return "topic"
	}
	return "unknown"
}

// segKind tells what one level of a template is.
type segKind uint8

const (
	segLiteral segKind = iota // a fixed level
	segOne                    // {name}: exactly one level
	segRest                   // {name...}: one or more levels, last
)

type segment struct {
	kind segKind
	text string // literal text, or the variable name
}

// Template is a compiled path or topic template. It is immutable and safe for
// concurrent use. Create one with [ParsePathTemplate] or [ParseTopicTemplate].
type Template struct {
	raw    string
	kind   Kind
	segs   []segment
	names  []string
	filter string // topic templates only
	minLen int    // sum of literal bytes and separators, for Expand's Grow
}

// TemplateError reports a template that does not parse.
type TemplateError struct {
	Kind     Kind   // path or topic
	Template string // the template as written
	Msg      string // what is wrong, e.g. `level 2: unclosed "{"`
}

// Error returns e.g. `invalid topic template "a/{b": level 2: unclosed "{"`.
func (e *TemplateError) Error() string {
	return fmt.Sprintf("invalid %s template %q: %s", e.Kind, e.Template, e.Msg)
}

// ErrMissingVar is wrapped by [Template.Expand] errors when a variable the
// template uses has no value.
var ErrMissingVar = errors.New("missing variable")

// ErrInvalidValue is wrapped by [Template.Expand] errors when a variable's
// value cannot fill its place, e.g. a '+' or '/' meant for one topic level.
// Adapters answer it with 400 / 4.00: the value came from the request.
var ErrInvalidValue = errors.New("invalid variable value")

// ParseTopicTemplate compiles an MQTT topic template such as
// "sensors/{id}/temperature" or "logs/{rest...}". Levels are separated by
// '/'; empty levels (a leading '/', "a//b") are literal empty levels, as in
// MQTT [MQTT-4.7.1-1]. Literal levels must not contain the wildcards '+' and
// '#' (a template is a topic name, not a filter); the template must be valid
// UTF-8 without U+0000 [MQTT-1.5.4-1] [MQTT-1.5.4-2] and 1 to 65535 bytes
// long [MQTT-4.7.3-1] [MQTT-4.7.3-3].
func ParseTopicTemplate(s string) (*Template, error) {
	return parse(TopicKind, s)
}

// ParsePathTemplate compiles a path template such as "/sensors/{id}/t". It
// must start with "/"; segments are separated by "/" and must not be empty
// ("/" alone is the root path). Literal segments are matched against decoded
// paths, so they must not contain '%', '?' or '#', nor control characters.
func ParsePathTemplate(s string) (*Template, error) {
	return parse(PathKind, s)
}

// MustParseTopicTemplate is like [ParseTopicTemplate] but panics on error.
// It is meant for templates written in Go source, never for user input.
func MustParseTopicTemplate(s string) *Template {
	t, err := ParseTopicTemplate(s)
	if err != nil {
		panic(err)
	}
	return t
}

// MustParsePathTemplate is like [ParsePathTemplate] but panics on error. It
// is meant for templates written in Go source, never for user input.
func MustParsePathTemplate(s string) *Template {
	t, err := ParsePathTemplate(s)
	if err != nil {
		panic(err)
	}
	return t
}

func parse(kind Kind, s string) (*Template, error) {
	fail := func(format string, args ...any) (*Template, error) {
		return nil, &TemplateError{Kind: kind, Template: s, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case s == "":
		return fail("empty")
	case len(s) > MaxTopicLen:
		return fail("longer than %d bytes", MaxTopicLen)
	case !utf8.ValidString(s):
		return fail("not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		return fail("contains U+0000")
	}
	body := s
	if kind == PathKind {
		if s[0] != '/' {
			return fail(`must start with "/"`)
		}
		body = s[1:]
	}
	t := &Template{raw: s, kind: kind}
	if kind == PathKind && body == "" {
		return t, nil // the root path
	}
	unit := "level"
	if kind == PathKind {
		unit = "segment"
	}
	levels := strings.Split(body, "/")
	for i, lv := range levels {
		n := i + 1
		if kind == PathKind && lv == "" {
			return fail("segment %d is empty", n)
		}
		open := strings.IndexByte(lv, '{')
		shut := strings.IndexByte(lv, '}')
		if open < 0 && shut < 0 {
			if err := checkLiteral(kind, lv); err != "" {
				return fail("%s %d %q: %s", unit, n, lv, err)
			}
			t.segs = append(t.segs, segment{kind: segLiteral, text: lv})
			t.minLen += len(lv)
			continue
		}
		if open != 0 || shut != len(lv)-1 || strings.Count(lv, "{") != 1 || strings.Count(lv, "}") != 1 {
			if open >= 0 && shut < 0 {
				return fail(`%s %d %q: unclosed "{"`, unit, n, lv)
			}
			return fail(`%s %d %q: a variable must be a whole %s, like "{name}"`, unit, n, lv, unit)
		}
		name := lv[1 : len(lv)-1]
		sk := segOne
		if rest, ok := strings.CutSuffix(name, "..."); ok {
			sk, name = segRest, rest
			if i != len(levels)-1 {
				return fail("%s %d: {%s...} must be the last %s", unit, n, name, unit)
			}
		}
		if msg := checkName(name); msg != "" {
			return fail("%s %d: %s", unit, n, msg)
		}
		for _, prev := range t.names {
			if prev == name {
				return fail("%s %d: variable {%s} appears twice", unit, n, name)
			}
		}
		if len(t.names) == MaxVars {
			return fail("more than %d variables", MaxVars)
		}
		t.names = append(t.names, name)
		t.segs = append(t.segs, segment{kind: sk, text: name})
	}
	t.minLen += len(t.segs) - 1
	if kind == PathKind {
		t.minLen++
	}
	if kind == TopicKind {
		var b strings.Builder
		for i, sg := range t.segs {
			if i > 0 {
				b.WriteByte('/')
			}
			switch sg.kind {
			case segLiteral:
				b.WriteString(sg.text)
			case segOne:
				b.WriteByte('+')
			case segRest:
				b.WriteByte('#')
			}
		}
		t.filter = b.String()
	}
	return t, nil
}

// checkLiteral returns why a literal level is not allowed, or "".
func checkLiteral(kind Kind, lv string) string {
	if kind == TopicKind {
		if strings.ContainsAny(lv, "+#") {
			return "wildcards '+' and '#' are not allowed in a template (use {name} or {name...})"
		}
		return ""
	}
	for _, r := range lv {
		switch {
		case r == '%':
			return `'%' is not allowed: write the decoded character, paths are matched after percent-decoding`
		case r == '?' || r == '#':
			return fmt.Sprintf("%q is not allowed in a path", r)
		case r < 0x20 || r == 0x7f || r == ' ':
			return fmt.Sprintf("control character or space %q is not allowed", r)
		}
	}
	return ""
}

// checkName returns why a variable name is not allowed, or "". Names are
// ASCII identifiers: a letter or '_', then letters, digits or '_'.
func checkName(name string) string {
	if name == "" {
		return "empty variable name"
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		letter := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
		digit := c >= '0' && c <= '9'
		if !letter && !(digit && i > 0) {
			return fmt.Sprintf("invalid variable name %q (want letters, digits and '_', not starting with a digit)", name)
		}
	}
	return ""
}

// String returns the template as written.
func (t *Template) String() string { return t.raw }

// Kind reports whether t is a path or a topic template.
func (t *Template) Kind() Kind { return t.kind }

// Vars returns the names of t's variables in order of appearance.
func (t *Template) Vars() []string {
	return append([]string(nil), t.names...)
}

// HasVar reports whether t declares a variable called name.
func (t *Template) HasVar(name string) bool {
	for _, n := range t.names {
		if n == name {
			return true
		}
	}
	return false
}

// IsRest reports whether name is t's "{name...}" variable.
func (t *Template) IsRest(name string) bool {
	if len(t.segs) == 0 {
		return false
	}
	last := t.segs[len(t.segs)-1]
	return last.kind == segRest && last.text == name
}

// Segment is one level of a template, for adapters that translate a
// template into their router's own pattern syntax (e.g. "{x...}" into chi's
// "*"). Exactly one of Literal and Var is meaningful.
type Segment struct {
	// Literal is the level's fixed text when Var is "".
	Literal string
	// Var is the variable's name, "" for a literal level.
	Var string
	// Rest is true for "{Var...}", which is always the last segment.
	Rest bool
}

// Segments returns t's levels (path segments after the leading "/"; none for
// the root path "/").
func (t *Template) Segments() []Segment {
	out := make([]Segment, len(t.segs))
	for i, sg := range t.segs {
		switch sg.kind {
		case segLiteral:
			out[i] = Segment{Literal: sg.text}
		case segOne:
			out[i] = Segment{Var: sg.text}
		case segRest:
			out[i] = Segment{Var: sg.text, Rest: true}
		}
	}
	return out
}

// Filter returns the MQTT subscription filter for a topic template: each
// "{x}" becomes "+" and "{x...}" becomes "#". For a path template it returns
// "". See the package documentation for how "{x...}" and "#" differ.
func (t *Template) Filter() string { return t.filter }

// Match reports whether s, a concrete request path (for a path template) or
// a concrete topic name (for a topic template), matches t. On success vars,
// if not nil, holds exactly the captured variables; on failure it is reset.
// Match does not allocate.
//
// A topic that is not a valid topic name (empty, over 65535 bytes, not UTF-8,
// containing U+0000, '+' or '#') matches nothing. A topic starting with '$'
// is not matched by a variable in the first level [MQTT-4.7.2-1].
func (t *Template) Match(s string, vars *Vars) bool {
	if vars != nil {
		vars.Reset()
	}
	var ok bool
	if t.kind == TopicKind {
		ok = t.matchTopic(s, vars)
	} else {
		ok = t.matchPath(s, vars)
	}
	if !ok && vars != nil {
		vars.Reset()
	}
	return ok
}

func (t *Template) matchTopic(s string, vars *Vars) bool {
	if !validTopicName(s) {
		return false
	}
	rest, more := s, true
	for i, sg := range t.segs {
		if !more {
			return false
		}
		if sg.kind != segLiteral && i == 0 && s[0] == '$' {
			return false // [MQTT-4.7.2-1]
		}
		if sg.kind == segRest {
			vars.add(sg.text, rest)
			return true
		}
		var lv string
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			lv, rest = rest[:j], rest[j+1:]
		} else {
			lv, more = rest, false
		}
		if sg.kind == segLiteral {
			if lv != sg.text {
				return false
			}
		} else {
			vars.add(sg.text, lv)
		}
	}
	return !more
}

func (t *Template) matchPath(s string, vars *Vars) bool {
	if s == "" || s[0] != '/' {
		return false
	}
	if len(t.segs) == 0 {
		return s == "/"
	}
	rest, more := s[1:], true
	for _, sg := range t.segs {
		if !more {
			return false
		}
		if sg.kind == segRest {
			if !validRestPath(rest) {
				return false
			}
			vars.add(sg.text, rest)
			return true
		}
		var lv string
		if j := strings.IndexByte(rest, '/'); j >= 0 {
			lv, rest = rest[:j], rest[j+1:]
		} else {
			lv, more = rest, false
		}
		if sg.kind == segLiteral {
			if lv != sg.text {
				return false
			}
		} else {
			if lv == "" {
				return false
			}
			vars.add(sg.text, lv)
		}
	}
	return !more
}

// validRestPath reports whether s is one or more non-empty segments.
func validRestPath(s string) bool {
	if s == "" || s[0] == '/' || s[len(s)-1] == '/' {
		return false
	}
	return !strings.Contains(s, "//")
}

// validTopicName reports whether s is a valid MQTT topic name (not a filter).
func validTopicName(s string) bool {
	if s == "" || len(s) > MaxTopicLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case 0, '+', '#':
			return false
		}
	}
	return utf8.ValidString(s)
}

// Expand fills t with vars and returns the concrete path or topic. It fails,
// wrapping [ErrMissingVar], if a variable of t has no value, and, wrapping
// [ErrInvalidValue], if a value cannot fill its place:
//
//   - topic "{x}": no '/', '+', '#'; topic "{x...}": no '+', '#'; neither may
//     contain U+0000 or invalid UTF-8, a variable in the first level must not
//     start with '$', and the topic must stay within 65535 bytes;
//   - path "{x}": not empty, no '/'; path "{x...}": one or more non-empty
//     segments.
//
// Variables in vars that t does not use are ignored. The result is not
// percent-encoded. For every vars that Expand accepts, Match of the result
// captures the same values.
func (t *Template) Expand(vars Vars) (string, error) {
	size := t.minLen
	for _, sg := range t.segs {
		if sg.kind == segLiteral {
			continue
		}
		v, ok := vars.Get(sg.text)
		if !ok {
			return "", fmt.Errorf("%w {%s} for %s %q", ErrMissingVar, sg.text, t.kind, t.raw)
		}
		if err := t.checkValue(sg, v); err != nil {
			return "", err
		}
		size += len(v)
	}
	if t.kind == TopicKind && size == 0 {
		return "", fmt.Errorf("%w: topic from %q would be empty", ErrInvalidValue, t.raw)
	}
	if t.kind == TopicKind && size > MaxTopicLen {
		return "", fmt.Errorf("%w: topic from %q would be %d bytes, over %d", ErrInvalidValue, t.raw, size, MaxTopicLen)
	}
	var b strings.Builder
	b.Grow(size)
	if t.kind == PathKind {
		b.WriteByte('/')
	}
	for i, sg := range t.segs {
		if i > 0 {
			b.WriteByte('/')
		}
		if sg.kind == segLiteral {
			b.WriteString(sg.text)
		} else {
			v, _ := vars.Get(sg.text)
			b.WriteString(v)
		}
	}
	return b.String(), nil
}

func (t *Template) checkValue(sg segment, v string) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: {%s} = %q: %s", ErrInvalidValue, sg.text, v, why)
	}
	if t.kind == PathKind {
		if sg.kind == segOne {
			if v == "" {
				return bad("a path segment must not be empty")
			}
			if strings.IndexByte(v, '/') >= 0 {
				return bad("a path segment must not contain '/'")
			}
		} else if !validRestPath(v) {
			return bad("want one or more non-empty path segments")
		}
		return nil
	}
	if sg.kind == segOne && strings.IndexByte(v, '/') >= 0 {
		return bad("a topic level must not contain '/'")
	}
	if strings.ContainsAny(v, "+#") {
		return bad("a topic must not contain wildcards '+' or '#'")
	}
	if strings.IndexByte(v, 0) >= 0 {
		return bad("a topic must not contain U+0000")
	}
	if !utf8.ValidString(v) {
		return bad("a topic must be valid UTF-8")
	}
	if sg.text == t.segs[0].text && t.segs[0].kind != segLiteral && strings.HasPrefix(v, "$") {
		return bad("a topic starting with '$' is reserved for the broker")
	}
	return nil
}

// Var is one captured variable.
type Var struct {
	// Name is the variable's name, without braces.
	Name string
	// Value is what it captured or is to fill in.
	Value string
}

// Vars holds up to [MaxVars] variables in a fixed array, so that matching
// needs no allocation. The zero value is empty and ready to use; a Vars can
// be reused after [Vars.Reset]. Copying a Vars copies its contents.
type Vars struct {
	n    int
	list [MaxVars]Var
}

// ErrTooManyVars is returned by [Vars.Set] when the Vars is full.
var ErrTooManyVars = fmt.Errorf("more than %d variables", MaxVars)

// Reset empties v.
func (v *Vars) Reset() { v.n = 0 }

// Len returns the number of variables in v.
func (v *Vars) Len() int { return v.n }

// At returns the i-th variable, 0 <= i < v.Len().
func (v *Vars) At(i int) Var {
	if i < 0 || i >= v.n {
		panic("mapping: Vars index out of range")
	}
	return v.list[i]
}

// Get returns the value of the variable called name.
func (v *Vars) Get(name string) (string, bool) {
	for i := 0; i < v.n; i++ {
		if v.list[i].Name == name {
			return v.list[i].Value, true
		}
	}
	return "", false
}

// Set sets the variable called name, replacing an earlier value.
func (v *Vars) Set(name, value string) error {
	for i := 0; i < v.n; i++ {
		if v.list[i].Name == name {
			v.list[i].Value = value
			return nil
		}
	}
	if v.n == MaxVars {
		return ErrTooManyVars
	}
	v.list[v.n] = Var{name, value}
	v.n++
	return nil
}

// add appends without checks; templates have distinct names and at most
// MaxVars of them. A nil v discards.
func (v *Vars) add(name, value string) {
	if v == nil {
		return
	}
	v.list[v.n] = Var{name, value}
	v.n++
}

// Map returns v as a new map, for logs and tests.
func (v *Vars) Map() map[string]string {
	m := make(map[string]string, v.n)
	for i := 0; i < v.n; i++ {
		m[v.list[i].Name] = v.list[i].Value
	}
	return m
}

// VarsOf builds a Vars from name, value pairs, for tests and examples. It
// panics on an odd number of arguments or more than [MaxVars] names.
func VarsOf(kv ...string) Vars {
	if len(kv)%2 != 0 {
		panic("mapping: VarsOf needs name, value pairs")
	}
	var v Vars
	for i := 0; i < len(kv); i += 2 {
		if err := v.Set(kv[i], kv[i+1]); err != nil {
			panic("mapping: VarsOf: " + err.Error())
		}
	}
	return v
}
