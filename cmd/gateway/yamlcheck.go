package main

import (
	"encoding"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Problem is one thing wrong with a config file, with where it is.
type Problem struct {
	File      string
	Line, Col int // 0 when unknown
	Msg       string
}

func (p Problem) String() string {
	switch {
	case p.Line > 0:
		return fmt.Sprintf("%s:%d:%d: %s", p.File, p.Line, p.Col, p.Msg)
	case p.File != "":
		return fmt.Sprintf("%s: %s", p.File, p.Msg)
	}
	return p.Msg
}

// Problems is every problem found in a config file; it is an error.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// positions maps a field path ("routes[3].coap.path") to where its value
// (or, for a missing value, its parent) is written.
type positions map[string][2]int

// lookup finds the position of path or of its closest written ancestor.
func (ps positions) lookup(path string) (int, int) {
	for p := path; p != ""; p = parentPath(p) {
		if lc, ok := ps[p]; ok {
			return lc[0], lc[1]
		}
	}
	return 0, 0
}

func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i <= 0 {
		return ""
	}
	return p[:i]
}

var textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()

// checker walks a YAML syntax tree alongside the Go type it will be decoded
// into and records every unknown key and every value of the wrong kind, so
// that validate can report all of them at once, each with line and column,
// before any decoding happens.
type checker struct {
	file     string
	problems Problems
	pos      positions
}

// parseStrict parses data and decodes it into out (a pointer to a struct)
// only if every key is known and every value has the right kind.
func parseStrict(file string, data []byte, out any) (positions, Problems) {
	c := &checker{file: file, pos: positions{}}
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, Problems{yamlProblem(file, err)}
	}
	if len(f.Docs) > 1 {
		c.add(f.Docs[1], "a config file holds one YAML document, found %d", len(f.Docs))
	}
	if len(f.Docs) == 0 || f.Docs[0].Body == nil {
		return c.pos, c.problems // empty file: all defaults
	}
	c.walk(f.Docs[0].Body, reflect.TypeOf(out).Elem(), "")
	if len(c.problems) > 0 {
		return c.pos, c.problems
	}
	if err := yaml.UnmarshalWithOptions(data, out, yaml.Strict()); err != nil {
		// The walk above should have caught everything; keep the decoder's
		// word if it did not.
		return c.pos, Problems{yamlProblem(file, err)}
	}
	return c.pos, nil
}

// yamlProblem turns an error of goccy/go-yaml into a Problem with the
// position it carries.
func yamlProblem(file string, err error) Problem {
	p := Problem{File: file, Msg: err.Error()}
	var ye yaml.Error
	if errors.As(err, &ye) {
		p.Msg = ye.GetMessage()
		if tk := ye.GetToken(); tk != nil && tk.Position != nil {
			p.Line, p.Col = tk.Position.Line, tk.Position.Column
		}
	}
	return p
}

func (c *checker) add(n ast.Node, format string, args ...any) {
	p := Problem{File: c.file, Msg: fmt.Sprintf(format, args...)}
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		p.Line, p.Col = tk.Position.Line, tk.Position.Column
	}
	c.problems = append(c.problems, p)
}

func (c *checker) mark(n ast.Node, path string) {
	if tk := n.GetToken(); tk != nil && tk.Position != nil {
		c.pos[path] = [2]int{tk.Position.Line, tk.Position.Column}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func (c *checker) walk(n ast.Node, t reflect.Type, path string) {
	switch v := n.(type) {
	case *ast.AnchorNode:
		c.walk(v.Value, t, path)
		return
	case *ast.TagNode:
		c.walk(v.Value, t, path)
		return
	case *ast.AliasNode:
		c.mark(n, path)
		return // checked where the anchor is
	case *ast.CommentGroupNode:
		return
	}
	c.mark(n, path)
	if _, isNull := n.(*ast.NullNode); isNull {
		return // null leaves the default
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		s, ok := scalarText(n)
		if !ok {
			c.add(n, "%s: expected a single value, found %s", path, kindOf(n))
			return
		}
		if err := reflect.New(t).Interface().(encoding.TextUnmarshaler).UnmarshalText([]byte(s)); err != nil {
			c.add(n, "%s: %v", path, err)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		values, ok := mappingValues(n)
		if !ok {
			c.add(n, "%s: expected a mapping, found %s", orTop(path), kindOf(n))
			return
		}
		fields := yamlFields(t)
		seen := map[string]bool{}
		for _, mv := range values {
			key := mv.Key.String()
			if seen[key] {
				c.add(mv.Key, "%s: key %q appears twice", orTop(path), key)
				continue
			}
			seen[key] = true
			f, ok := fields[key]
			if !ok {
				c.add(mv.Key, "%s: unknown key %q (known: %s)", orTop(path), key, knownKeys(fields))
				continue
			}
			if msg := f.Tag.Get("unsupported"); msg != "" {
				c.add(mv.Key, "%s: %s", join(path, key), msg)
				continue
			}
			c.walk(mv.Value, f.Type, join(path, key))
		}
	case reflect.Map:
		values, ok := mappingValues(n)
		if !ok {
			c.add(n, "%s: expected a mapping, found %s", path, kindOf(n))
			return
		}
		for _, mv := range values {
			c.walk(mv.Value, t.Elem(), join(path, mv.Key.String()))
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 {
			if _, ok := scalarText(n); !ok {
				c.add(n, "%s: expected a string, found %s", path, kindOf(n))
			}
			return
		}
		seq, ok := n.(*ast.SequenceNode)
		if !ok {
			c.add(n, "%s: expected a list, found %s", path, kindOf(n))
			return
		}
		for i, e := range seq.Values {
			c.walk(e, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.String:
		if _, ok := scalarText(n); !ok {
			c.add(n, "%s: expected a string, found %s", path, kindOf(n))
		}
	case reflect.Bool:
		if _, ok := n.(*ast.BoolNode); !ok {
			c.add(n, "%s: expected true or false, found %s", path, describe(n))
		}
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		s, _ := scalarText(n)
		bits := t.Bits()
		var err error
		if t.Kind() >= reflect.Uint {
			_, err = strconv.ParseUint(s, 0, bits)
		} else {
			_, err = strconv.ParseInt(s, 0, bits)
		}
		if _, isInt := n.(*ast.IntegerNode); !isInt || err != nil {
			c.add(n, "%s: expected a whole number, found %s", path, describe(n))
		}
	case reflect.Float32, reflect.Float64:
		switch n.(type) {
		case *ast.IntegerNode, *ast.FloatNode:
		default:
			c.add(n, "%s: expected a number, found %s", path, describe(n))
		}
	case reflect.Interface:
		// anything goes
	}
}

func orTop(path string) string {
	if path == "" {
		return "config"
	}
	return path
}

func mappingValues(n ast.Node) ([]*ast.MappingValueNode, bool) {
	switch v := n.(type) {
	case *ast.MappingNode:
		return v.Values, true
	case *ast.MappingValueNode:
		return []*ast.MappingValueNode{v}, true
	}
	return nil, false
}

func scalarText(n ast.Node) (string, bool) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, true
	case *ast.LiteralNode:
		return v.Value.Value, true
	case *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode, *ast.InfinityNode, *ast.NanNode:
		return n.GetToken().Value, true
	}
	return "", false
}

func kindOf(n ast.Node) string {
	switch n.(type) {
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	}
	return "a value"
}

func describe(n ast.Node) string {
	if s, ok := scalarText(n); ok {
		return strconv.Quote(s)
	}
	return kindOf(n)
}

// yamlFields indexes a struct's fields by their yaml key, following
// embedded structs.
func yamlFields(t reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && (name == "" || strings.Contains(opts, "inline")) {
			for k, v := range yamlFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f
	}
	return out
}

func knownKeys(fields map[string]reflect.StructField) string {
	keys := make([]string, 0, len(fields))
	for k, f := range fields {
		if f.Tag.Get("unsupported") == "" {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return strings.Join(keys, ", ")
}
