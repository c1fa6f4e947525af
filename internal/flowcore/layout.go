package flowcore

import (
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
)

// A flow's layout is what its checkpoints are laid out by:
//   - the fragment count (keys are placed in fragments by it);
//   - the sources (offsets and watermarks are kept by source number), and
//     whether they have event time (records crossing an exchange carry
//     their time only then);
//   - the keyed stages and the exchanges between them (an exchange keeps
//     the outputs it has not yet delivered, encoded by the event type it
//     re-keys and its codecs);
//   - the stateful operators in the order the flow declared them (an
//     operator's state is kept under its number, encoded by its state's
//     type, or a codec given), with what decides how they keep it:
//     windows, TTL, a view's algebra, the operator a view reads, and the
//     views that read an operator (which tell two operators alike apart).
//
// A flow changed in any of these reads a checkpoint of the old flow
// wrongly: a stage added before a count gives the count's state to the new
// stage, silently; a new state type fails to decode, or decodes into
// nonsense. The engine therefore refuses to start a flow on checkpoints
// written by another layout (recovery.Store.CheckLayout), and a cluster
// refuses a node whose flow has another layout. What the layout leaves out
// may change between runs: the functions (a fixed Map, a new filter),
// sinks called at once, more source partitions, versions.

// addOp reserves the next stateful operator's number for an operator of
// stage described by what (its kind, its state's type, its windows), and
// adds its line to the layout.
func (f *Flow) addOp(stage int, what string) int {
	op := f.ops
	f.ops++
	f.opLines = append(f.opLines, fmt.Sprintf("operator %d of stage %d: %s", op, stage, what))
	return op
}

// opView adds to operator op's layout line the name of a view that reads
// its state: two operators alike but for their views, declared in the
// other order, must not take each other's state.
func (f *Flow) opView(op int, name string) {
	if op >= 0 && op < len(f.opLines) {
		f.opLines[op] += fmt.Sprintf(", view %q", name)
	}
}

// typeName is type T in a layout line: its name with its package's path,
// and for a struct its exported fields in order, as the default codec
// encodes them (by position: two fields swapped would swap their
// values), into the types of the fields. A type that encodes itself
// (protobuf, MarshalBinary, JSON or text marshalers, time.Time) is its
// name.
func typeName[T any]() string { return typeDesc(reflect.TypeFor[T](), map[reflect.Type]bool{}) }

func typeDesc(t reflect.Type, seen map[reflect.Type]bool) string {
	name := t.String()
	if t.Name() != "" && t.PkgPath() != "" {
		name = t.PkgPath() + "." + t.Name()
	}
	if seen[t] || selfEncoded(t) {
		return name
	}
	seen[t] = true
	var inner string
	switch t.Kind() {
	case reflect.Struct:
		var fields []string
		for i := range t.NumField() {
			if f := t.Field(i); f.IsExported() {
				field := f.Name + " " + typeDesc(f.Type, seen)
				if tag, ok := f.Tag.Lookup("json"); ok {
					// A struct the JSON codec encodes: by these names.
					field += fmt.Sprintf(" json:%q", tag)
				}
				fields = append(fields, field)
			}
		}
		return name + "{" + strings.Join(fields, "; ") + "}"
	case reflect.Pointer:
		inner = "*" + typeDesc(t.Elem(), seen)
	case reflect.Slice:
		inner = "[]" + typeDesc(t.Elem(), seen)
	case reflect.Array:
		inner = fmt.Sprintf("[%d]%s", t.Len(), typeDesc(t.Elem(), seen))
	case reflect.Map:
		inner = "map[" + typeDesc(t.Key(), seen) + "]" + typeDesc(t.Elem(), seen)
	default:
		return name
	}
	if t.Name() != "" {
		return name + "(" + inner + ")"
	}
	return inner
}

// selfEncoded reports whether values of t encode themselves, whatever
// their fields.
func selfEncoded(t reflect.Type) bool {
	for _, i := range []reflect.Type{reflect.TypeFor[proto.Message](), reflect.TypeFor[encoding.BinaryMarshaler](),
		reflect.TypeFor[encoding.TextMarshaler](), reflect.TypeFor[json.Marshaler]()} {
		if t.Implements(i) || reflect.PointerTo(t).Implements(i) {
			return true
		}
	}
	return false
}

// algebraDesc is an algebra in a layout line: its name, and its
// parameters (a histogram's bounds, a top's k) when it holds nothing but
// plain data, which prints the same in every run.
func algebraDesc(alg interface{ Name() string }) string {
	if plainData(reflect.TypeOf(alg), map[reflect.Type]bool{}) {
		return fmt.Sprintf("%s %+v", alg.Name(), alg)
	}
	return alg.Name()
}

// plainData reports whether values of t are made of numbers, strings and
// booleans only: no functions, pointers, interfaces, maps or channels.
func plainData(t reflect.Type, seen map[reflect.Type]bool) bool {
	if seen[t] {
		return true
	}
	seen[t] = true
	switch t.Kind() {
	case reflect.Struct:
		for i := range t.NumField() {
			if !plainData(t.Field(i).Type, seen) {
				return false
			}
		}
		return true
	case reflect.Slice, reflect.Array:
		return plainData(t.Elem(), seen)
	case reflect.Bool, reflect.String, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return true
	}
	return false
}

// codecNote names a codec the flow gave (nil: the default) in a layout
// line: another codec may encode the same type otherwise.
func codecNote(what string, c any) string {
	if c == nil {
		return ""
	}
	return fmt.Sprintf(", %s codec %T", what, c)
}

// layoutFormat is the first line of a layout: the format of the lines
// after it. A store takes checkpoints recorded under another format as
// they are (recovery.Store.CheckLayout): a change of the lines' wording
// must come with a new format, or every store of an earlier one would be
// refused for it.
const layoutFormat = "layout 1"

// Layout lists what the flow's checkpoints are laid out by, a line each
// (see above): two plans with equal layouts read each other's checkpoints.
func (p *Plan) Layout() []string {
	f := p.f
	out := []string{layoutFormat, fmt.Sprintf("fragments %d", f.fragments)}
	for i, s := range f.sources {
		line := fmt.Sprintf("source %d: %q", i, s.name)
		if s.et != nil {
			// Records crossing an exchange carry their time only then.
			line += ", with event time"
		}
		out = append(out, line)
	}
	for i, s := range f.stages {
		switch {
		case s.parent >= 0:
			out = append(out, fmt.Sprintf("stage %d: the window results of stage %d, keyed alike", i, s.parent))
		case s.edge >= 0:
			out = append(out, fmt.Sprintf("stage %d: %s through exchange %d from stage %d", i, s.keyed, s.edge, f.edges[s.edge].from))
		default:
			out = append(out, fmt.Sprintf("stage %d: %s from source %d", i, s.keyed, s.source))
		}
	}
	return append(out, f.opLines...)
}

// LayoutHash is a hash of Layout and of the sources' partition counts,
// which nodes compare as they join. A store takes more partitions (their
// offsets start at 0), but nodes of one cluster must agree on them: they
// place the readers, and the alerts after them, by partition number, and
// a node that knew of fewer would read a partition no one else does, or
// none would.
func (p *Plan) LayoutHash() uint64 {
	lines := p.Layout()
	for _, s := range p.f.sources {
		lines = append(lines, fmt.Sprintf("partitions of %q: %d", s.name, s.partitions))
	}
	return fnv64(strings.Join(lines, "\n"))
}

// fnv64 is the 64-bit FNV-1a hash of s: stable across processes and
// builds, as a hash nodes compare must be.
func fnv64(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(s) {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// ttlNote marks a layout line of state under a TTL, which keeps its
// expiries in the namespace where state without one keeps its blocks.
func ttlNote(ttl int64) string {
	if ttl > 0 {
		return ", with a TTL"
	}
	return ""
}

// processTTLNote marks a layout line of a Process under a TTL, with the
// TTL: a Process keeps a key's expiry, from which a restore works out
// its last event by the TTL.
func processTTLNote(ttl int64) string {
	if ttl > 0 {
		return fmt.Sprintf(", with a TTL of %v", time.Duration(ttl))
	}
	return ""
}

// layout is the windows in a layout line: their bounds are where their
// state is kept.
func (w Windows) layout() string {
	if w.global {
		return "one global window"
	}
	return fmt.Sprintf("windows of %v every %v", time.Duration(w.size), time.Duration(w.slide))
}

// Layout is the layout of flow f (Plan.Layout), or why f does not
// compile.
func Layout(f *Flow) ([]string, error) {
	p, err := Compile(f)
	if err != nil {
		return nil, err
	}
	return p.Layout(), nil
}
