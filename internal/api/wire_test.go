package api

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"ohm/client"
	"ohm/internal/computer"
)

// wireSchemas names the Go type that owns each schema of openapi.json.
var wireSchemas = map[string]any{
	"Error":         client.ErrorAnswer{},
	"ErrorBody":     client.ErrorBody{},
	"Health":        client.Health{},
	"CreateRequest": client.CreateRequest{},
	"SetRequest":    client.SetRequest{},
	"ResizeRequest": client.ResizeRequest{},
	"Computer":      client.Computer{},
	"ComputerList":  client.ComputerList{},
	"Deleted":       client.Deleted{},
	"ExecRequest":   client.ExecRequest{},
	"Event":         client.Event{},
	"Control":       client.Control{},
	"Process":       client.Process{},
	"ProcessList":   client.ProcessList{},
	"FileInfo":      client.FileInfo{},
	"FileList":      client.FileList{},
	"FileWritten":   client.FileWritten{},
	"Port":          client.Port{},
	"PortList":      client.PortList{},
	"ExposeRequest": client.ExposeRequest{},
	"WatchEvent":    client.WatchEvent{},

	"Checkpoint":        client.Checkpoint{},
	"CheckpointRequest": client.CheckpointRequest{},
	"CheckpointList":    client.CheckpointList{},
	"CheckpointDeleted": client.CheckpointDeleted{},
	"RestoreRequest":    client.RestoreRequest{},
	"ForkRequest":       client.ForkRequest{},
}

// wireOp is what an operation carries as JSON: the schema of its request
// body ("" for none) and of each of its answers, by status ("" for an
// answer that is not JSON: bytes, text, a WebSocket).
type wireOp struct {
	request   string
	responses map[string]string
}

// errs are the error answers every operation may give.
func errs(extra ...string) map[string]string {
	m := map[string]string{"400": "Error", "401": "Error", "404": "Error", "500": "Error"}
	for _, s := range extra {
		m[s] = "Error"
	}
	return m
}

func with(m map[string]string, kv ...string) map[string]string {
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// wireOps is every operation of openapi.json with its schemas; a new
// operation fails TestWireTypesMatchOpenAPI until it is listed here (and
// so has Go types).
var wireOps = map[string]wireOp{
	"health":  {"", with(errs(), "200", "Health")},
	"metrics": {"", with(errs(), "200", "")},
	"openapi": {"", with(errs(), "200", "")},
	// MCP's JSON-RPC messages are the MCP SDK's types, not ours.
	"mcpMessage":      {"", map[string]string{"200": "", "401": "Error"}},
	"mcpStream":       {"", map[string]string{"200": "", "401": "Error"}},
	"mcpEndSession":   {"", map[string]string{"200": "", "401": "Error"}},
	"createComputer":  {"CreateRequest", with(errs("409", "413"), "201", "Computer", "200", "Event")},
	"listComputers":   {"", with(errs(), "200", "ComputerList")},
	"getComputer":     {"", with(errs(), "200", "Computer")},
	"deleteComputer":  {"", with(errs(), "200", "Deleted")},
	"setComputer":     {"SetRequest", with(errs("409", "413"), "200", "Computer")},
	"startComputer":   {"", with(errs("409"), "200", "Computer")},
	"stopComputer":    {"", with(errs("409"), "200", "Computer")},
	"resizeComputer":  {"ResizeRequest", with(errs("409", "413"), "200", "Computer")},
	"exec":            {"ExecRequest", with(errs("413", "503"), "200", "Event")},
	"execInteractive": {"", with(errs("503"), "101", "")},
	"listProcesses":   {"", with(errs(), "200", "ProcessList")},
	"getProcess":      {"", with(errs(), "200", "Process")},
	"listPorts":       {"", with(errs(), "200", "PortList")},
	"exposePort":      {"ExposeRequest", with(errs(), "200", "Port")},
	"unexposePort":    {"", with(errs(), "200", "Port")},
	"killProcess":     {"", with(errs(), "200", "Process")},
	"attachProcess":   {"", with(errs(), "200", "Event", "101", "")},
	"getFile":         {"", with(errs("503"), "200", "")},
	"putFile":         {"", with(errs("503"), "200", "FileWritten")},
	"statFile":        {"", with(errs("503"), "200", "FileInfo")},
	"listFiles":       {"", with(errs("503"), "200", "FileList")},
	"watchComputer":   {"", with(errs("409"), "200", "WatchEvent")},

	"checkpointComputer": {"CheckpointRequest", with(errs("409"), "201", "Checkpoint")},
	"listCheckpoints":    {"", with(errs("409"), "200", "CheckpointList")},
	"deleteCheckpoint":   {"", with(errs("409"), "200", "CheckpointDeleted")},
	"restoreComputer":    {"RestoreRequest", with(errs("409"), "200", "Computer")},
	"forkComputer":       {"ForkRequest", with(errs("409"), "201", "Computer")},
}

// schema is the part of a JSON Schema that openapi.json uses.
type schema struct {
	Ref                  string             `json:"$ref"`
	Type                 string             `json:"type"`
	Format               string             `json:"format"`
	ContentEncoding      string             `json:"contentEncoding"`
	Properties           map[string]*schema `json:"properties"`
	Required             []string           `json:"required"`
	Items                *schema            `json:"items"`
	AdditionalProperties json.RawMessage    `json:"additionalProperties"`
	Enum                 []any              `json:"enum"`
	Const                any                `json:"const"`
}

type openAPIDoc struct {
	Paths map[string]map[string]struct {
		OperationID string `json:"operationId"`
		RequestBody *struct {
			Content map[string]struct {
				Schema *schema `json:"schema"`
			} `json:"content"`
		} `json:"requestBody"`
		Responses map[string]struct {
			Content map[string]struct {
				Schema *schema `json:"schema"`
			} `json:"content"`
		} `json:"responses"`
	} `json:"paths"`
	Components struct {
		Schemas map[string]*schema `json:"schemas"`
	} `json:"components"`
}

func loadOpenAPI(t *testing.T) openAPIDoc {
	t.Helper()
	var doc openAPIDoc
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return doc
}

// refName is the component a schema refers to ("" if it is inline).
func refName(s *schema) string {
	name, _ := strings.CutPrefix(s.Ref, "#/components/schemas/")
	return name
}

// jsonSchemaOf is the schema of an operation's JSON (or NDJSON) content,
// as a component name; "" when it has none.
func jsonSchemaOf(t *testing.T, where string, content map[string]struct {
	Schema *schema `json:"schema"`
}) string {
	for ct, c := range content {
		if ct != "application/json" && ct != "application/x-ndjson" {
			continue
		}
		if c.Schema.Ref == "" {
			// openapi.json's own schema is any object.
			if c.Schema.Type == "object" && c.Schema.Properties == nil {
				return ""
			}
			t.Errorf("%s: inline %s schema: make it a component with a Go type in package client", where, ct)
			return ""
		}
		return refName(c.Schema)
	}
	return ""
}

// TestWireTypesMatchOpenAPI holds the wire types of package client to
// openapi.json: every operation's request and answers name a schema, every
// schema has its Go type, every property of a schema is a field of the
// type with a matching JSON type and every field a property, required
// properties are always sent, and a value with every field set goes to
// JSON that the schema accepts and comes back equal.
func TestWireTypesMatchOpenAPI(t *testing.T) {
	doc := loadOpenAPI(t)
	seen := map[string]bool{}
	for p, ops := range doc.Paths {
		for method, op := range ops {
			where := fmt.Sprintf("%s %s (%s)", strings.ToUpper(method), p, op.OperationID)
			want, ok := wireOps[op.OperationID]
			if !ok {
				t.Errorf("%s: not in wireOps: list its request and answer types", where)
				continue
			}
			seen[op.OperationID] = true
			req := ""
			if op.RequestBody != nil {
				req = jsonSchemaOf(t, where+" request", op.RequestBody.Content)
			}
			if req != want.request {
				t.Errorf("%s: request body schema %q, wireOps says %q", where, req, want.request)
			}
			var statuses []string
			for status, r := range op.Responses {
				statuses = append(statuses, status)
				got := jsonSchemaOf(t, where+" answer "+status, r.Content)
				if w, ok := want.responses[status]; !ok || got != w {
					t.Errorf("%s: answer %s has schema %q, wireOps says %q", where, status, got, w)
				}
			}
			for status := range want.responses {
				if !slices.Contains(statuses, status) {
					t.Errorf("%s: wireOps lists answer %s, which openapi.json does not", where, status)
				}
			}
		}
	}
	for id := range wireOps {
		if !seen[id] {
			t.Errorf("wireOps lists %s, which openapi.json does not have", id)
		}
	}
	for name, s := range doc.Components.Schemas {
		v, ok := wireSchemas[name]
		if !ok {
			t.Errorf("schema %s has no Go type in wireSchemas", name)
			continue
		}
		typ := reflect.TypeOf(v)
		checkType(t, doc, name, typ, s)
		// The round trip.
		val := reflect.New(typ)
		fill(val.Elem(), s, doc)
		b, err := json.Marshal(val.Interface())
		if err != nil {
			t.Errorf("%s: marshal: %v", name, err)
			continue
		}
		var generic any
		json.Unmarshal(b, &generic)
		validate(t, doc, name, generic, s)
		back := reflect.New(typ)
		if err := json.Unmarshal(b, back.Interface()); err != nil {
			t.Errorf("%s: unmarshal %s: %v", name, b, err)
		} else if !reflect.DeepEqual(back.Elem().Interface(), val.Elem().Interface()) {
			t.Errorf("%s: round trip through %s changed the value", name, b)
		}
	}
	for name := range wireSchemas {
		if doc.Components.Schemas[name] == nil {
			t.Errorf("wireSchemas lists %s, which openapi.json does not have", name)
		}
	}
}

// TestErrorCodesMatchOpenAPI: the codes of package client are the enum of
// ErrorBody.code.
func TestErrorCodesMatchOpenAPI(t *testing.T) {
	doc := loadOpenAPI(t)
	var enum []string
	for _, v := range doc.Components.Schemas["ErrorBody"].Properties["code"].Enum {
		enum = append(enum, v.(string))
	}
	sort.Strings(enum)
	if got := client.Codes(); !slices.Equal(got, enum) {
		t.Errorf("client codes %v, openapi.json's %v", got, enum)
	}
	for _, c := range enum {
		if c != client.CodeInternal && client.HTTPStatus(c) == 500 {
			t.Errorf("code %s has no HTTP status", c)
		}
	}
	for dc, wc := range domainCodes {
		if !slices.Contains(enum, wc) {
			t.Errorf("domain code %s maps to %s, which is not a wire code", dc, wc)
		}
	}
}

func resolve(doc openAPIDoc, s *schema) *schema {
	for s.Ref != "" {
		s = doc.Components.Schemas[refName(s)]
	}
	return s
}

// jsonFields are the JSON names of a struct's fields, with whether each
// may be left out.
func jsonFields(typ reflect.Type) map[string]reflect.StructField {
	out := map[string]reflect.StructField{}
	for f := range typ.Fields() {
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if f.Anonymous && name == "" {
			for n, ff := range jsonFields(f.Type) {
				out[n] = ff
			}
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f
	}
	return out
}

func omitted(f reflect.StructField) bool {
	tag := f.Tag.Get("json")
	return strings.Contains(tag, ",omitempty") || strings.Contains(tag, ",omitzero")
}

var timeType = reflect.TypeFor[time.Time]()

// checkType checks that typ and s describe the same JSON.
func checkType(t *testing.T, doc openAPIDoc, where string, typ reflect.Type, s *schema) {
	t.Helper()
	s = resolve(doc, s)
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	kind := schemaKind(s)
	bad := func() { t.Errorf("%s: Go type %v, schema type %q", where, typ, kind) }
	switch {
	case typ == timeType:
		if kind != "string" || s.Format != "date-time" {
			bad()
		}
	case typ.Kind() == reflect.Slice && typ.Elem().Kind() == reflect.Uint8:
		if kind != "string" || s.ContentEncoding != "base64" {
			bad()
		}
	case typ.Kind() == reflect.Struct:
		if kind != "object" {
			bad()
			return
		}
		fields := jsonFields(typ)
		for name, ps := range s.Properties {
			f, ok := fields[name]
			if !ok {
				t.Errorf("%s: property %q has no field in %v", where, name, typ)
				continue
			}
			checkType(t, doc, where+"."+name, f.Type, ps)
		}
		for name := range fields {
			if _, ok := s.Properties[name]; !ok {
				t.Errorf("%s: field %q of %v is not in the schema", where, name, typ)
			}
		}
		for _, name := range s.Required {
			if f, ok := fields[name]; ok && omitted(f) {
				t.Errorf("%s: required property %q is omitempty in %v", where, name, typ)
			}
		}
	case typ.Kind() == reflect.Map:
		var ap schema
		if kind != "object" || json.Unmarshal(s.AdditionalProperties, &ap) != nil {
			bad()
			return
		}
		checkType(t, doc, where+"[*]", typ.Elem(), &ap)
	case typ.Kind() == reflect.Slice:
		if kind != "array" || s.Items == nil {
			bad()
			return
		}
		checkType(t, doc, where+"[]", typ.Elem(), s.Items)
	case typ.Kind() == reflect.String:
		if kind != "string" {
			bad()
		}
	case typ.Kind() == reflect.Bool:
		if kind != "boolean" {
			bad()
		}
	case typ.Kind() >= reflect.Int && typ.Kind() <= reflect.Uint64:
		if kind != "integer" {
			bad()
		}
	case typ.Kind() == reflect.Float32 || typ.Kind() == reflect.Float64:
		if kind != "number" {
			bad()
		}
	default:
		bad()
	}
}

// schemaKind is a schema's JSON type, from its enum or const when it has
// no type.
func schemaKind(s *schema) string {
	if s.Type != "" {
		return s.Type
	}
	v := s.Const
	if len(s.Enum) > 0 {
		v = s.Enum[0]
	}
	switch v.(type) {
	case string:
		return "string"
	case bool:
		return "boolean"
	case float64:
		return "number"
	}
	if s.Properties != nil {
		return "object"
	}
	return ""
}

// fill sets every field of v to a value s accepts, none of them zero.
func fill(v reflect.Value, s *schema, doc openAPIDoc) {
	s = resolve(doc, s)
	if v.Kind() == reflect.Pointer {
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), s, doc)
		return
	}
	switch {
	case v.Type() == timeType:
		v.Set(reflect.ValueOf(time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)))
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Uint8:
		v.SetBytes([]byte{0xff, 0, 1})
	case v.Kind() == reflect.Struct:
		fields := jsonFields(v.Type())
		for name, ps := range s.Properties {
			if f, ok := fields[name]; ok {
				fill(v.FieldByIndex(f.Index), ps, doc)
			}
		}
	case v.Kind() == reflect.Map:
		var ap schema
		json.Unmarshal(s.AdditionalProperties, &ap)
		m := reflect.MakeMap(v.Type())
		e := reflect.New(v.Type().Elem()).Elem()
		fill(e, &ap, doc)
		m.SetMapIndex(reflect.ValueOf("K"), e)
		v.Set(m)
	case v.Kind() == reflect.Slice:
		sl := reflect.MakeSlice(v.Type(), 1, 1)
		fill(sl.Index(0), s.Items, doc)
		v.Set(sl)
	case v.Kind() == reflect.String:
		switch {
		case len(s.Enum) > 0:
			v.SetString(s.Enum[len(s.Enum)-1].(string))
		case s.Const != nil:
			v.SetString(s.Const.(string))
		default:
			v.SetString("some text")
		}
	case v.Kind() == reflect.Bool:
		v.SetBool(true)
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		v.SetInt(7)
	case v.Kind() >= reflect.Uint && v.Kind() <= reflect.Uint64:
		v.SetUint(7)
	case v.Kind() == reflect.Float32 || v.Kind() == reflect.Float64:
		v.SetFloat(1.5)
	}
}

// validate checks a JSON value against s.
func validate(t *testing.T, doc openAPIDoc, where string, v any, s *schema) {
	t.Helper()
	s = resolve(doc, s)
	if len(s.Enum) > 0 && !slices.Contains(s.Enum, v) {
		t.Errorf("%s: %v is not one of %v", where, v, s.Enum)
	}
	if s.Const != nil && v != s.Const {
		t.Errorf("%s: %v is not %v", where, v, s.Const)
	}
	switch x := v.(type) {
	case map[string]any:
		if schemaKind(s) != "object" {
			t.Errorf("%s: an object where the schema wants %q", where, schemaKind(s))
			return
		}
		for _, r := range s.Required {
			if _, ok := x[r]; !ok {
				t.Errorf("%s: required property %q missing from %v", where, r, x)
			}
		}
		for k, e := range x {
			if ps, ok := s.Properties[k]; ok {
				validate(t, doc, where+"."+k, e, ps)
				continue
			}
			var ap schema
			if json.Unmarshal(s.AdditionalProperties, &ap) == nil {
				validate(t, doc, where+"."+k, e, &ap)
				continue
			}
			t.Errorf("%s: property %q is not in the schema", where, k)
		}
	case []any:
		if s.Type != "array" {
			t.Errorf("%s: an array where the schema wants %q", where, schemaKind(s))
			return
		}
		for i, e := range x {
			validate(t, doc, fmt.Sprintf("%s[%d]", where, i), e, s.Items)
		}
	case string:
		if schemaKind(s) != "string" {
			t.Errorf("%s: a string where the schema wants %q", where, schemaKind(s))
		}
	case bool:
		if schemaKind(s) != "boolean" {
			t.Errorf("%s: a boolean where the schema wants %q", where, schemaKind(s))
		}
	case float64:
		if k := schemaKind(s); k != "number" && !(k == "integer" && x == float64(int64(x))) {
			t.Errorf("%s: %v where the schema wants %q", where, x, k)
		}
	}
}

// TestWireCoversDomain: every field the manager reports about a computer
// reaches the wire. A field added to computer.Record or computer.Computer
// fails here until wireComputer copies it (and, through
// TestWireTypesMatchOpenAPI, until client.Computer and openapi.json have
// it).
func TestWireCoversDomain(t *testing.T) {
	var dc computer.Computer
	fillAny(reflect.ValueOf(&dc).Elem())
	domain, err := json.Marshal(dc)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := json.Marshal(wireComputer(dc))
	if err != nil {
		t.Fatal(err)
	}
	var d, w map[string]any
	json.Unmarshal(domain, &d)
	json.Unmarshal(wire, &w)
	if !reflect.DeepEqual(d, w) {
		t.Errorf("the wire form of a computer differs from what the manager reports:\nmanager: %s\nwire:    %s", domain, wire)
	}
	// A record alone (list, start, stop) reports the same.
	wr, _ := json.Marshal(wireRecord(dc.Record))
	dr, _ := json.Marshal(dc.Record)
	json.Unmarshal(wr, &w)
	json.Unmarshal(dr, &d)
	if !reflect.DeepEqual(d, w) {
		t.Errorf("the wire form of a record differs from the record:\nmanager: %s\nwire:    %s", dr, wr)
	}
}

// fillAny sets every field of v to a non-zero value.
func fillAny(v reflect.Value) {
	switch {
	case v.Type() == timeType:
		v.Set(reflect.ValueOf(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)))
	case v.Kind() == reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillAny(v.Elem())
	case v.Kind() == reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillAny(v.Field(i))
			}
		}
	case v.Kind() == reflect.Map:
		m := reflect.MakeMap(v.Type())
		e := reflect.New(v.Type().Elem()).Elem()
		fillAny(e)
		m.SetMapIndex(reflect.ValueOf("K").Convert(v.Type().Key()), e)
		v.Set(m)
	case v.Kind() == reflect.Slice:
		sl := reflect.MakeSlice(v.Type(), 1, 1)
		fillAny(sl.Index(0))
		v.Set(sl)
	case v.Kind() == reflect.String:
		v.SetString("running")
	case v.Kind() == reflect.Bool:
		v.SetBool(true)
	case v.Kind() >= reflect.Int && v.Kind() <= reflect.Int64:
		v.SetInt(7)
	case v.Kind() >= reflect.Uint && v.Kind() <= reflect.Uint64:
		v.SetUint(7)
	case v.Kind() == reflect.Float32 || v.Kind() == reflect.Float64:
		v.SetFloat(1.5)
	}
}
