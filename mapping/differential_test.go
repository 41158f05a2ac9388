package mapping

import (
	"strings"
	"testing"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
)

// refMatch is a plain reading of MQTT 3.1.1 §4.7 / MQTT 5 §4.7: does the
// topic name match the filter?
func refMatch(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false // [MQTT-4.7.2-1]
	}
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, fl := range f {
		if fl == "#" {
			return true // also the parent level [MQTT-4.7.1-2]
		}
		if i >= len(t) || (fl != "+" && fl != t[i]) {
			return false
		}
	}
	return len(f) == len(t)
}

// mochiMatch asks mochi's subscription index the same question.
func mochiMatch(filter, topic string) bool {
	x := mqtt.NewTopicsIndex()
	x.Subscribe("c", packets.Subscription{Filter: filter})
	_, ok := x.Subscribers(topic).Subscriptions["c"]
	return ok
}

var diffTemplates = []string{
	"a", "b", "a/b", "{x}", "{r...}", "a/{x}", "a/{r...}", "{x}/b", "{x}/{y}",
	"/{x}", "/{r...}", "{x}/", "a//{x}", "a/{x}/{r...}", "{x}/{y}/{z}",
	"$SYS/{x}", "$SYS/{r...}", "a/{x}/c", "ü/{x}", "sensors/{id}/temperature",
}

var diffTopics = []string{
	"a", "b", "a/b", "a/b/c", "a/b/c/d", "/", "//", "/a", "/a/b", "a/", "a//",
	"a//b", "a//c", "b/b", "x/b", "$SYS", "$SYS/a", "$SYS/a/b", "$", "$/a",
	"a/$SYS", "ü/ö", "ü", "sensors/1/temperature", "sensors//temperature",
	"sensors/1/temperature/x", "A", " ", "a/b/c/",
}

// TestMatchAgreesWithFilter checks, on a corpus, that a topic template
// matches exactly the topics its Filter matches, except the one documented
// difference: "{x...}" needs at least one level where "#" also matches the
// parent. It compares with a reference matcher and with mochi's index.
func TestMatchAgreesWithFilter(t *testing.T) {
	for _, ts := range diffTemplates {
		tpl := mustParse(t, TopicKind, ts)
		f := tpl.Filter()
		if !mqtt.IsValidFilter(f, false) {
			t.Errorf("Filter(%q) = %q, not a valid filter for mochi", ts, f)
		}
		if strings.ContainsAny(f, "+#") == (len(tpl.Vars()) == 0) {
			t.Errorf("Filter(%q) = %q: wildcards iff variables", ts, f)
		}
		for _, topic := range diffTopics {
			got := tpl.Match(topic, nil)
			ref := refMatch(f, topic)
			mo := mochiMatch(f, topic)
			// The only allowed difference: the filter ends in "#" and the
			// topic is its parent level, which "#" matches and {x...} not.
			parent := strings.HasSuffix(f, "#") && strings.Count(topic, "/")+1 == strings.Count(f, "/")
			if mo != ref && !(parent && strings.HasSuffix(f, "+/#")) {
				// mochi v2.7.9 does not match the parent level through a
				// "+" ("a/+/#" misses "a/b"); nothing else may differ.
				t.Errorf("reference and mochi disagree on filter %q, topic %q: ref %v, mochi %v", f, topic, ref, mo)
			}
			if got != ref && !(parent && !got && ref) {
				t.Errorf("template %q (filter %q), topic %q: Match %v, reference filter match %v", ts, f, topic, got, ref)
			}
			if got && !mo {
				t.Errorf("template %q matches %q, mochi's filter %q does not", ts, topic, f)
			}
		}
	}
}

// TestRestParentDifference pins the documented difference down.
func TestRestParentDifference(t *testing.T) {
	tpl := MustParseTopicTemplate("a/{rest...}")
	for _, c := range []struct {
		topic         string
		match, filter bool
	}{
		{"a", false, true}, // "#" matches the parent level; {rest...} does not
		{"a/", true, true}, // one empty level
		{"a/b", true, true},
		{"a/b/c", true, true},
		{"ab", false, false},
	} {
		if got := tpl.Match(c.topic, nil); got != c.match {
			t.Errorf("Match(%q) = %v", c.topic, got)
		}
		if got := mochiMatch(tpl.Filter(), c.topic); got != c.filter {
			t.Errorf("mochi %q matches %q = %v", tpl.Filter(), c.topic, got)
		}
	}
}

// TestExpandIsValidPublishTopic: whatever Expand accepts, mochi accepts as a
// publish topic (except $-topics from literal levels, which Compile forbids).
func TestExpandIsValidPublishTopic(t *testing.T) {
	values := []string{"", "x", "$x", "ü", "a/b", "/", "a b"}
	for _, ts := range diffTemplates {
		if strings.HasPrefix(ts, "$") {
			continue
		}
		tpl := mustParse(t, TopicKind, ts)
		for _, v := range values {
			var vars Vars
			for _, n := range tpl.Vars() {
				_ = vars.Set(n, v)
			}
			out, err := tpl.Expand(vars)
			if err != nil {
				continue
			}
			if !mqtt.IsValidFilter(out, true) {
				t.Errorf("%q.Expand(%q) = %q, which mochi refuses as a publish topic", ts, v, out)
			}
			var back Vars
			if !tpl.Match(out, &back) {
				t.Errorf("%q.Expand(%q) = %q does not match back", ts, v, out)
			}
		}
	}
}
