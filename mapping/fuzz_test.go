package mapping

import (
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
)

func parseKind(path bool, s string) (*Template, error) {
	if path {
		return ParsePathTemplate(s)
	}
	return ParseTopicTemplate(s)
}

// FuzzParseTemplate: parsing never panics; a template that parses prints
// as written, has a valid MQTT filter (topics), and Expand followed by Match
// gives back the values it was filled with.
func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{
		"a", "sensors/{id}/temperature", "{x...}", "/s/{id}/t", "/f/{p...}", "/",
		"a//{x}/", "{a}/{b}/{c...}", "$SYS/{x}", "a/{b", "{x...}/y", "a/+", "/a%20",
		"ü/{código}", "{_1}/{A_b...}",
	} {
		f.Add(s, false, "v")
		f.Add(s, true, "v")
	}
	f.Fuzz(func(t *testing.T, s string, path bool, value string) {
		tpl, err := parseKind(path, s)
		if err != nil {
			if _, ok := err.(*TemplateError); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if tpl.String() != s {
			t.Fatalf("String() = %q", tpl.String())
		}
		if !path && !mqtt.IsValidFilter(tpl.Filter(), false) {
			t.Fatalf("Filter() = %q is not a valid filter", tpl.Filter())
		}
		var vars Vars
		for i, n := range tpl.Vars() {
			_ = vars.Set(n, value+strings.Repeat("x", i%2))
		}
		out, err := tpl.Expand(vars)
		if err != nil {
			return
		}
		var back Vars
		if !tpl.Match(out, &back) {
			t.Fatalf("Expand(%v) = %q does not match back", vars.Map(), out)
		}
		if !mapsEqual(back.Map(), vars.Map()) {
			t.Fatalf("Expand(%v) = %q matches back as %v", vars.Map(), out, back.Map())
		}
		if !path && !mqtt.IsValidFilter(out, true) && !strings.HasPrefix(out, "$") {
			t.Fatalf("Expand = %q is not a valid publish topic", out)
		}
	})
}

// FuzzMatch: matching never panics; Expand of what Match captured gives the
// input back; for topics, Match agrees with MQTT filter matching of Filter()
// except for the parent level "#" matches and {x...} does not.
func FuzzMatch(f *testing.F) {
	for _, c := range [][2]string{
		{"sensors/{id}/temperature", "sensors/17/temperature"},
		{"a/{r...}", "a"}, {"a/{r...}", "a/"}, {"{x}/a", "$SYS/a"}, {"{x}", "/"},
		{"/s/{id}/t", "/s/17/t"}, {"/f/{p...}", "/f/a//b"}, {"/", "/"},
	} {
		f.Add(c[0], c[1], c[0][0] == '/')
	}
	f.Fuzz(func(t *testing.T, ts, s string, path bool) {
		tpl, err := parseKind(path, ts)
		if err != nil {
			return
		}
		var vars Vars
		ok := tpl.Match(s, &vars)
		if !ok {
			if vars.Len() != 0 {
				t.Fatal("vars not reset on failure")
			}
		} else {
			out, err := tpl.Expand(vars)
			if err != nil || out != s {
				t.Fatalf("Match(%q) = %v, Expand = %q, %v", s, vars.Map(), out, err)
			}
		}
		if path || !validTopicName(s) {
			return
		}
		ref := refMatch(tpl.Filter(), s)
		parent := !ok && ref && strings.HasSuffix(tpl.Filter(), "#") &&
			strings.Count(s, "/")+1 == strings.Count(tpl.Filter(), "/")
		if ok != ref && !parent {
			t.Fatalf("template %q, topic %q: Match %v, filter %q match %v", ts, s, ok, tpl.Filter(), ref)
		}
	})
}
