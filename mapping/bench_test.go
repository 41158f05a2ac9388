package mapping

import "testing"

func BenchmarkMatchPath(b *testing.B) {
	tpl := MustParsePathTemplate("/devices/{id}/commands/{cmd}")
	var vars Vars
	b.ReportAllocs()
	for b.Loop() {
		if !tpl.Match("/devices/sensor-17/commands/reboot", &vars) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkMatchTopic(b *testing.B) {
	tpl := MustParseTopicTemplate("sensors/{site}/{id}/{rest...}")
	var vars Vars
	b.ReportAllocs()
	for b.Loop() {
		if !tpl.Match("sensors/berlin/17/temperature/celsius", &vars) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkExpandTopic(b *testing.B) {
	tpl := MustParseTopicTemplate("devices/{id}/commands/{cmd}")
	vars := VarsOf("id", "sensor-17", "cmd", "reboot")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := tpl.Expand(vars); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTableMatchHTTP(b *testing.B) {
	specs := []RouteSpec{
		ingress("temp", "/sensors/{id}/temperature", "/s/{id}/t", "sensors/{id}/temperature"),
		ingress("hum", "/sensors/{id}/humidity", "/s/{id}/h", "sensors/{id}/humidity"),
		ingress("files", "/files/{p...}", "", "files/{p...}"),
		with(ingress("cmd", "/devices/{id}/commands/{cmd}", "/d/{id}/{cmd}", "devices/{id}/commands/{cmd}"),
			func(s *RouteSpec) { s.Reply = &ReplySpec{} }),
	}
	tab, err := Compile(specs)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, ok := tab.MatchHTTP("POST", "/devices/sensor-17/commands/reboot"); !ok {
			b.Fatal("no match")
		}
	}
}

func BenchmarkTransformCBORToJSON(b *testing.B) {
	in, _, err := Transform(TransformJSONToCBOR, []byte(`{"t":21.5,"unit":"C","ok":true,"n":[1,2,3]}`))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Transform(TransformCBORToJSON, in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkTransformJSONToCBOR(b *testing.B) {
	in := []byte(`{"t":21.5,"unit":"C","ok":true,"n":[1,2,3]}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Transform(TransformJSONToCBOR, in); err != nil {
			b.Fatal(err)
		}
	}
}
