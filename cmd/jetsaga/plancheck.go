package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/jetsaga/jetsaga/events"
)

// Plan files are read by people: their errors say where (line and column
// of a syntax error; the step and field of a wrong value) and what was
// wanted, in JSON's words, never in Go's ("cannot unmarshal number 1.5 into
// Go struct field .steps.Step.timeout_ms of type int64").

// syntaxError reports a JSON syntax error at its line and column.
func syntaxError(data []byte, err error) error {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := position(data, se.Offset)
		msg := strings.TrimPrefix(se.Error(), "json: ")
		if se.Offset >= int64(len(data)) || msg == "unexpected end of JSON input" {
			return fmt.Errorf("line %d, column %d: the JSON ends too early (a missing } or ])", line, col)
		}
		return fmt.Errorf("line %d, column %d: %s", line, col, msg)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		line, col := position(data, int64(len(data)))
		return fmt.Errorf("line %d, column %d: the JSON ends too early (a missing } or ])", line, col)
	}
	return errors.New(strings.TrimPrefix(err.Error(), "json: "))
}

// position converts the byte offset just after an error into the line and
// column (in characters, from 1) of the byte at fault.
func position(data []byte, offset int64) (line, col int) {
	if offset > int64(len(data)) {
		offset = int64(len(data))
	}
	at := max(offset-1, 0) // the offset counts the offending byte
	before := data[:at]
	line = bytes.Count(before, []byte("\n")) + 1
	start := bytes.LastIndexByte(before, '\n') + 1
	col = utf8.RuneCount(before[start:]) + 1
	return line, col
}

// checkShape checks a decoded JSON document against the JSON form of typ:
// every object has only the fields typ's JSON tags name, and every value has
// the JSON type the field wants. path names the value; steps are named by
// index and, when they have one, by name.
func checkShape(v any, typ reflect.Type, path string) error {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if v == nil { // null: Go's decoding leaves the zero value
		return nil
	}
	if typ == reflect.TypeFor[json.RawMessage]() {
		return nil // any JSON document
	}
	want, got := jsonKind(typ), kindOf(v)
	wrong := func() error {
		return fmt.Errorf("%swant %s, got %s", at(path), want, describe(v))
	}
	switch typ.Kind() {
	case reflect.String:
		if got != "string" {
			return wrong()
		}
	case reflect.Bool:
		if got != "boolean" {
			return wrong()
		}
	case reflect.Int, reflect.Int64, reflect.Int32:
		n, ok := v.(json.Number)
		if !ok {
			return wrong()
		}
		if _, err := n.Int64(); err != nil {
			return wrong()
		}
	case reflect.Slice:
		list, ok := v.([]any)
		if !ok {
			return wrong()
		}
		for i, item := range list {
			p := fmt.Sprintf("%s[%d]", path, i)
			if m, ok := item.(map[string]any); ok {
				if name, ok := m["name"].(string); ok && name != "" {
					p += " (" + name + ")"
				}
			}
			if err := checkShape(item, typ.Elem(), p); err != nil {
				return err
			}
		}
	case reflect.Struct:
		obj, ok := v.(map[string]any)
		if !ok {
			return wrong()
		}
		fields := jsonFields(typ)
		keys := make([]string, 0, len(obj))
		for k := range obj {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			f, ok := fields[k]
			if !ok {
				names := make([]string, 0, len(fields))
				for n := range fields {
					names = append(names, n)
				}
				slices.Sort(names)
				where := "the plan"
				if path != "" {
					where = path
				}
				return fmt.Errorf("%s: unknown field %q (the fields are %s)", where, k, strings.Join(names, ", "))
			}
			if err := checkShape(obj[k], f, join(path, k)); err != nil {
				return err
			}
		}
	}
	return nil
}

func at(path string) string {
	if path == "" {
		return ""
	}
	return path + ": "
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}

// jsonFields maps the JSON names of a struct's fields to their types.
func jsonFields(typ reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// jsonKind says in JSON's words what a Go type wants.
func jsonKind(typ reflect.Type) string {
	switch typ.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Slice:
		if typ.Elem().Kind() == reflect.Struct {
			return "an array of objects"
		}
		return "an array of " + strings.TrimPrefix(jsonKind(typ.Elem()), "a ") + "s"
	case reflect.Struct:
		return "an object"
	}
	return "a JSON value"
}

func kindOf(v any) string {
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return "null"
}

// describe shows a JSON value briefly.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", oneLine(x, 40))
	case json.Number:
		return "the number " + x.String()
	case bool:
		return fmt.Sprint(x)
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return "null"
}

// checkPlanJSON checks the shape of a plan document before it is decoded:
// a syntax error with its line and column, a field that a start message
// does not have (naming the step), a value of the wrong JSON type (naming
// the step and field).
func checkPlanJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return syntaxError(data, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		line, col := position(data, dec.InputOffset())
		return fmt.Errorf("line %d, column %d: more JSON after the plan's object", line, col)
	}
	if _, ok := v.(map[string]any); !ok {
		return fmt.Errorf("a plan is a JSON object, got %s", describe(v))
	}
	return checkShape(v, reflect.TypeFor[events.Start](), "")
}
