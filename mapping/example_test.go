package mapping_test

import (
	"fmt"

	"github.com/edgebridge/gateway/mapping"
)

func ExampleParseTopicTemplate() {
	tpl, err := mapping.ParseTopicTemplate("sensors/{id}/{rest...}")
	if err != nil {
		panic(err)
	}
	fmt.Println(tpl.Filter(), tpl.Vars())

	var vars mapping.Vars
	fmt.Println(tpl.Match("sensors/17/temperature/celsius", &vars), vars.Map())
	fmt.Println(tpl.Match("sensors/17", &vars)) // {rest...} needs a level; the filter would match

	topic, err := tpl.Expand(mapping.VarsOf("id", "a+b", "rest", "t"))
	fmt.Printf("%q %v\n", topic, err)
	// Output:
	// sensors/+/# [id rest]
	// true map[id:17 rest:temperature/celsius]
	// false
	// "" invalid variable value: {id} = "a+b": a topic must not contain wildcards '+' or '#'
}

func ExampleCompile() {
	qos := 3
	_, err := mapping.Compile([]mapping.RouteSpec{{
		Name:  "room-temp",
		HTTP:  &mapping.HTTPSpec{Path: "/rooms/{room}/t"},
		CoAP:  &mapping.CoAPSpec{Path: "/r/{id}"},
		Topic: "sensors/{room}/t",
		QoS:   &qos,
	}})
	fmt.Println(err)
	// Output:
	// routes[0] "room-temp": qos: must be 0, 1 or 2, got 3
	// routes[0] "room-temp": coap.path: variable {room} used in topic "sensors/{room}/t" is not captured by path "/r/{id}"
}

func ExampleTable_MatchHTTP() {
	tab, err := mapping.Compile([]mapping.RouteSpec{{
		Name:  "temperature",
		HTTP:  &mapping.HTTPSpec{Path: "/sensors/{id}/temperature"},
		Topic: "sensors/{id}/temperature",
	}})
	if err != nil {
		panic(err)
	}
	route, vars, ok := tab.MatchHTTP("PUT", "/sensors/a/temperature")
	topic, err := route.TopicFor(vars)
	fmt.Println(ok, route.Name, topic, err)
	// Output:
	// true temperature sensors/a/temperature <nil>
}

func ExampleTransform() {
	out, contentType, err := mapping.Transform(mapping.TransformCBORToJSON, []byte{0xa1, 0x61, 0x74, 0xf9, 0x4d, 0x60})
	fmt.Println(string(out), contentType, err)
	_, _, err = mapping.Transform(mapping.TransformCBORToJSON, []byte{0xa1, 0x01, 0x02})
	fmt.Println(err != nil)
	// Output:
	// {"t":21.5} application/json <nil>
	// true
}
