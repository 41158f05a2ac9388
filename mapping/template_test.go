package mapping

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestParseTemplateErrors(t *testing.T) {
	long := strings.Repeat("a", MaxTopicLen+1)
	tests := []struct {
		kind Kind
		in   string
		want string // TemplateError.Msg
	}{
		{TopicKind, "", "empty"},
		{TopicKind, long, "longer than 65535 bytes"},
		{TopicKind, "a/\xff", "not valid UTF-8"},
		{TopicKind, "a/\x00", "contains U+0000"},
		{TopicKind, "a/+", `level 2 "+": wildcards '+' and '#' are not allowed in a template (use {name} or {name...})`},
		{TopicKind, "a/#", `level 2 "#": wildcards '+' and '#' are not allowed in a template (use {name} or {name...})`},
		{TopicKind, "a/b+c", `level 2 "b+c": wildcards '+' and '#' are not allowed in a template (use {name} or {name...})`},
		{TopicKind, "a/{b", `level 2 "{b": unclosed "{"`},
		{TopicKind, "a/b}", `level 2 "b}": a variable must be a whole level, like "{name}"`},
		{TopicKind, "a/x{b}", `level 2 "x{b}": a variable must be a whole level, like "{name}"`},
		{TopicKind, "a/{b}x", `level 2 "{b}x": a variable must be a whole level, like "{name}"`},
		{TopicKind, "a/{{b}}", `level 2 "{{b}}": a variable must be a whole level, like "{name}"`},
		{TopicKind, "a/{}", "level 2: empty variable name"},
		{TopicKind, "a/{...}", "level 2: empty variable name"},
		{TopicKind, "a/{1x}", `level 2: invalid variable name "1x" (want letters, digits and '_', not starting with a digit)`},
		{TopicKind, "a/{x-y}", `level 2: invalid variable name "x-y" (want letters, digits and '_', not starting with a digit)`},
		{TopicKind, "a/{x..}", `level 2: invalid variable name "x.." (want letters, digits and '_', not starting with a digit)`},
		{TopicKind, "{x...}/a", "level 1: {x...} must be the last level"},
		{TopicKind, "{x}/{x}", "level 2: variable {x} appears twice"},
		{TopicKind, "{x}/{x...}", "level 2: variable {x} appears twice"},
		{TopicKind, "{a}/{b}/{c}/{d}/{e}/{f}/{g}/{h}/{i}/{j}/{k}/{l}/{m}/{n}/{o}/{p}/{q}", "more than 16 variables"},
		{PathKind, "", "empty"},
		{PathKind, "a/b", `must start with "/"`},
		{PathKind, "//a", "segment 1 is empty"},
		{PathKind, "/a/", "segment 2 is empty"},
		{PathKind, "/a//b", "segment 2 is empty"},
		{PathKind, "/a%20b", `segment 1 "a%20b": '%' is not allowed: write the decoded character, paths are matched after percent-decoding`},
		{PathKind, "/a?b", `segment 1 "a?b": '?' is not allowed in a path`},
		{PathKind, "/a#", `segment 1 "a#": '#' is not allowed in a path`},
		{PathKind, "/a b", `segment 1 "a b": control character or space ' ' is not allowed`},
		{PathKind, "/{x...}/y", "segment 1: {x...} must be the last segment"},
		{PathKind, "/{x}.json", `segment 1 "{x}.json": a variable must be a whole segment, like "{name}"`},
	}
	for _, tt := range tests {
		var err error
		if tt.kind == TopicKind {
			_, err = ParseTopicTemplate(tt.in)
		} else {
			_, err = ParsePathTemplate(tt.in)
		}
		var te *TemplateError
		if !errors.As(err, &te) {
			t.Errorf("%s %.40q: err = %v, want TemplateError", tt.kind, tt.in, err)
			continue
		}
		if te.Msg != tt.want || te.Kind != tt.kind || te.Template != tt.in {
			t.Errorf("%s %.40q: got %q, want %q", tt.kind, tt.in, te.Msg, tt.want)
		}
	}
}

func TestTemplateErrorString(t *testing.T) {
	_, err := ParseTopicTemplate("a/{b")
	if got, want := err.Error(), `invalid topic template "a/{b": level 2 "{b": unclosed "{"`; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestTemplateAccessors(t *testing.T) {
	tests := []struct {
		kind   Kind
		in     string
		filter string
		vars   []string
		rest   string
	}{
		{TopicKind, "a", "a", nil, ""},
		{TopicKind, "sensors/{id}/temperature", "sensors/+/temperature", []string{"id"}, ""},
		{TopicKind, "{x...}", "#", []string{"x"}, "x"},
		{TopicKind, "logs/{site}/{rest...}", "logs/+/#", []string{"site", "rest"}, "rest"},
		{TopicKind, "/{x}", "/+", []string{"x"}, ""},
		{TopicKind, "a//{x}/", "a//+/", []string{"x"}, ""},
		{TopicKind, "$SYS/{x}", "$SYS/+", []string{"x"}, ""},
		{TopicKind, "ünï/{código}", "", nil, ""}, // non-ASCII name: error, checked below
		{PathKind, "/", "", nil, ""},
		{PathKind, "/s/{id}/t", "", []string{"id"}, ""},
		{PathKind, "/files/{p...}", "", []string{"p"}, "p"},
	}
	for _, tt := range tests {
		var tpl *Template
		var err error
		if tt.kind == TopicKind {
			tpl, err = ParseTopicTemplate(tt.in)
		} else {
			tpl, err = ParsePathTemplate(tt.in)
		}
		if strings.Contains(tt.in, "código") {
			if err == nil {
				t.Errorf("%q: want an error for a non-ASCII variable name", tt.in)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%q: %v", tt.in, err)
		}
		if tpl.String() != tt.in || tpl.Kind() != tt.kind {
			t.Errorf("%q: String/Kind = %q/%v", tt.in, tpl.String(), tpl.Kind())
		}
		if tpl.Filter() != tt.filter {
			t.Errorf("%q: Filter = %q, want %q", tt.in, tpl.Filter(), tt.filter)
		}
		if !slices.Equal(tpl.Vars(), tt.vars) {
			t.Errorf("%q: Vars = %q, want %q", tt.in, tpl.Vars(), tt.vars)
		}
		for _, v := range tt.vars {
			if !tpl.HasVar(v) || tpl.IsRest(v) != (v == tt.rest) {
				t.Errorf("%q: HasVar/IsRest(%q) wrong", tt.in, v)
			}
		}
		if tpl.HasVar("nope") {
			t.Errorf("%q: HasVar(nope)", tt.in)
		}
	}
}

// matchCase: template, input, want match, want vars.
type matchCase struct {
	tpl  string
	in   string
	ok   bool
	vars map[string]string
}

func TestMatchTopic(t *testing.T) {
	tests := []matchCase{
		{"a", "a", true, nil},
		{"a", "b", false, nil},
		{"a", "a/", false, nil},
		{"a", "/a", false, nil},
		{"sensors/{id}/temperature", "sensors/17/temperature", true, map[string]string{"id": "17"}},
		{"sensors/{id}/temperature", "sensors//temperature", true, map[string]string{"id": ""}},
		{"sensors/{id}/temperature", "sensors/17/temperature/x", false, nil},
		{"sensors/{id}/temperature", "sensors/17", false, nil},
		{"{x}", "a", true, map[string]string{"x": "a"}},
		{"{x}", "a/b", false, nil},
		{"{x}", "/", false, nil},
		{"{x}/{y}", "/", true, map[string]string{"x": "", "y": ""}},
		{"/{x}", "/a", true, map[string]string{"x": "a"}},
		{"/{x}", "a", false, nil},
		{"{x}/a", "/a", true, map[string]string{"x": ""}},
		// {x...}: one or more levels, possibly empty ones.
		{"a/{r...}", "a/b", true, map[string]string{"r": "b"}},
		{"a/{r...}", "a/b/c", true, map[string]string{"r": "b/c"}},
		{"a/{r...}", "a/", true, map[string]string{"r": ""}},
		{"a/{r...}", "a//", true, map[string]string{"r": "/"}},
		{"a/{r...}", "a", false, nil}, // the filter a/# matches "a": the documented difference
		{"a/{r...}", "b/c", false, nil},
		{"{r...}", "a/b/c", true, map[string]string{"r": "a/b/c"}},
		{"{r...}", "/", true, map[string]string{"r": "/"}},
		// $-topics [MQTT-4.7.2-1]
		{"{x}/a", "$SYS/a", false, nil},
		{"{r...}", "$SYS/a", false, nil},
		{"{r...}", "$", false, nil},
		{"$SYS/{x}", "$SYS/uptime", true, map[string]string{"x": "uptime"}},
		{"a/{x}", "a/$b", true, map[string]string{"x": "$b"}},
		// not topic names
		{"{x}", "", false, nil},
		{"{x}", "+", false, nil},
		{"{r...}", "a/#", false, nil},
		{"{x}", "a\x00", false, nil},
		{"{x}", "\xff", false, nil},
		// unicode and case
		{"ü/{x}", "ü/🙂", true, map[string]string{"x": "🙂"}},
		{"A/{x}", "a/b", false, nil},
	}
	runMatch(t, TopicKind, tests)
}

func TestMatchPath(t *testing.T) {
	tests := []matchCase{
		{"/", "/", true, nil},
		{"/", "", false, nil},
		{"/", "/a", false, nil},
		{"/a", "/a", true, nil},
		{"/a", "/a/", false, nil},
		{"/a", "a", false, nil},
		{"/s/{id}/t", "/s/17/t", true, map[string]string{"id": "17"}},
		{"/s/{id}/t", "/s//t", false, nil},
		{"/s/{id}/t", "/s/17/t/", false, nil},
		{"/s/{id}/t", "/s/a b/t", true, map[string]string{"id": "a b"}},
		{"/s/{id}/t", "/s/#/t", true, map[string]string{"id": "#"}}, // decoded %23: TopicFor rejects it
		{"/{x}", "/", false, nil},
		{"/f/{p...}", "/f/a", true, map[string]string{"p": "a"}},
		{"/f/{p...}", "/f/a/b/c", true, map[string]string{"p": "a/b/c"}},
		{"/f/{p...}", "/f/", false, nil},
		{"/f/{p...}", "/f", false, nil},
		{"/f/{p...}", "/f/a/", false, nil},
		{"/f/{p...}", "/f/a//b", false, nil},
		{"/f/{p...}", "/f//a", false, nil},
		{"/{a}/{b}", "/x/y", true, map[string]string{"a": "x", "b": "y"}},
	}
	runMatch(t, PathKind, tests)
}

func runMatch(t *testing.T, kind Kind, tests []matchCase) {
	t.Helper()
	for _, tt := range tests {
		tpl := mustParse(t, kind, tt.tpl)
		vars := VarsOf("stale", "value")
		ok := tpl.Match(tt.in, &vars)
		if ok != tt.ok {
			t.Errorf("%q.Match(%q) = %v, want %v", tt.tpl, tt.in, ok, tt.ok)
			continue
		}
		want := tt.vars
		if want == nil {
			want = map[string]string{}
		}
		if got := vars.Map(); !maps.Equal(got, want) {
			t.Errorf("%q.Match(%q) vars = %v, want %v", tt.tpl, tt.in, got, want)
		}
		if tpl.Match(tt.in, nil) != ok {
			t.Errorf("%q.Match(%q, nil) disagrees", tt.tpl, tt.in)
		}
		if !ok {
			continue
		}
		// Round trip: Expand of the captured vars gives the input back.
		out, err := tpl.Expand(vars)
		if err != nil || out != tt.in {
			t.Errorf("%q.Expand(%v) = %q, %v; want %q", tt.tpl, vars.Map(), out, err, tt.in)
		}
	}
}

func mustParse(t testing.TB, kind Kind, s string) *Template {
	t.Helper()
	var tpl *Template
	var err error
	if kind == TopicKind {
		tpl, err = ParseTopicTemplate(s)
	} else {
		tpl, err = ParsePathTemplate(s)
	}
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return tpl
}

func TestExpand(t *testing.T) {
	tests := []struct {
		kind    Kind
		tpl     string
		vars    []string
		want    string
		wantErr error
		msg     string
	}{
		{TopicKind, "sensors/{id}/t", []string{"id", "17"}, "sensors/17/t", nil, ""},
		{TopicKind, "sensors/{id}/t", []string{"id", ""}, "sensors//t", nil, ""},
		{TopicKind, "sensors/{id}/t", []string{"id", "17", "unused", "x"}, "sensors/17/t", nil, ""},
		{TopicKind, "a/{r...}", []string{"r", "b/c"}, "a/b/c", nil, ""},
		{TopicKind, "a/{r...}", []string{"r", ""}, "a/", nil, ""},
		{TopicKind, "a", nil, "a", nil, ""},
		{TopicKind, "sensors/{id}/t", nil, "", ErrMissingVar, `missing variable {id} for topic "sensors/{id}/t"`},
		{TopicKind, "sensors/{id}/t", []string{"id", "a/b"}, "", ErrInvalidValue, `invalid variable value: {id} = "a/b": a topic level must not contain '/'`},
		{TopicKind, "sensors/{id}/t", []string{"id", "a+"}, "", ErrInvalidValue, `invalid variable value: {id} = "a+": a topic must not contain wildcards '+' or '#'`},
		{TopicKind, "a/{r...}", []string{"r", "b/#"}, "", ErrInvalidValue, `invalid variable value: {r} = "b/#": a topic must not contain wildcards '+' or '#'`},
		{TopicKind, "a/{x}", []string{"x", "\x00"}, "", ErrInvalidValue, `invalid variable value: {x} = "\x00": a topic must not contain U+0000`},
		{TopicKind, "a/{x}", []string{"x", "\xff"}, "", ErrInvalidValue, `invalid variable value: {x} = "\xff": a topic must be valid UTF-8`},
		{TopicKind, "{x}/t", []string{"x", "$SYS"}, "", ErrInvalidValue, `invalid variable value: {x} = "$SYS": a topic starting with '$' is reserved for the broker`},
		{TopicKind, "{r...}", []string{"r", "$SYS/a"}, "", ErrInvalidValue, `invalid variable value: {r} = "$SYS/a": a topic starting with '$' is reserved for the broker`},
		{TopicKind, "t/{x}", []string{"x", "$SYS"}, "t/$SYS", nil, ""},
		{TopicKind, "{x}", []string{"x", ""}, "", ErrInvalidValue, `invalid variable value: topic from "{x}" would be empty`},
		{TopicKind, "a/{x}", []string{"x", strings.Repeat("b", MaxTopicLen)}, "", ErrInvalidValue, `invalid variable value: topic from "a/{x}" would be 65537 bytes, over 65535`},
		{PathKind, "/s/{id}", []string{"id", "x y"}, "/s/x y", nil, ""},
		{PathKind, "/", nil, "/", nil, ""},
		{PathKind, "/f/{p...}", []string{"p", "a/b"}, "/f/a/b", nil, ""},
		{PathKind, "/s/{id}", []string{"id", ""}, "", ErrInvalidValue, `invalid variable value: {id} = "": a path segment must not be empty`},
		{PathKind, "/s/{id}", []string{"id", "a/b"}, "", ErrInvalidValue, `invalid variable value: {id} = "a/b": a path segment must not contain '/'`},
		{PathKind, "/f/{p...}", []string{"p", "a//b"}, "", ErrInvalidValue, `invalid variable value: {p} = "a//b": want one or more non-empty path segments`},
		{PathKind, "/f/{p...}", nil, "", ErrMissingVar, `missing variable {p} for path "/f/{p...}"`},
	}
	for _, tt := range tests {
		tpl := mustParse(t, tt.kind, tt.tpl)
		got, err := tpl.Expand(VarsOf(tt.vars...))
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) || err.Error() != tt.msg {
				t.Errorf("%q.Expand(%q) err = %v, want %v: %s", tt.tpl, tt.vars, err, tt.wantErr, tt.msg)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q.Expand(%q) = %q, %v; want %q", tt.tpl, tt.vars, got, err, tt.want)
		}
	}
}

func TestVars(t *testing.T) {
	var v Vars
	if v.Len() != 0 {
		t.Fatal("zero Vars not empty")
	}
	for i := range MaxVars {
		if err := v.Set(string(rune('a'+i)), "x"); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Set("a", "y"); err != nil {
		t.Fatalf("replacing in a full Vars: %v", err)
	}
	if got, _ := v.Get("a"); got != "y" {
		t.Fatalf("Get(a) = %q", got)
	}
	if err := v.Set("zz", "x"); !errors.Is(err, ErrTooManyVars) {
		t.Fatalf("Set on full Vars: %v", err)
	}
	if v.At(1) != (Var{"b", "x"}) {
		t.Fatalf("At(1) = %v", v.At(1))
	}
	w := v // copies
	v.Reset()
	if v.Len() != 0 || w.Len() != MaxVars {
		t.Fatal("Reset/copy semantics")
	}
	if _, ok := v.Get("a"); ok {
		t.Fatal("Get after Reset")
	}
}

func TestSegments(t *testing.T) {
	got := MustParsePathTemplate("/a/{x}/{r...}").Segments()
	want := []Segment{{Literal: "a"}, {Var: "x"}, {Var: "r", Rest: true}}
	if !slices.Equal(got, want) {
		t.Errorf("Segments = %+v", got)
	}
	if n := len(MustParsePathTemplate("/").Segments()); n != 0 {
		t.Errorf("root has %d segments", n)
	}
	if got := MustParseTopicTemplate("/{x}").Segments(); !slices.Equal(got, []Segment{{}, {Var: "x"}}) {
		t.Errorf("topic Segments = %+v", got)
	}
}
