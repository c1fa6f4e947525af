package flowcore

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// A flow's layout is what its checkpoints are laid out by: the fragment
// count (keys are placed in fragments by it), the sources
// (offsets and watermarks are kept by source number), the keyed stages
// and the exchanges between them (an exchange keeps the outputs it has
// not yet delivered, encoded by the event type it re-keys), and the
// stateful operators in the order the flow declared them (an operator's
// state is kept under its number, encoded by its state's type). A flow
// changed in any of these reads a checkpoint of the old flow wrongly: a
// stage added before a count gives the count's state to the new stage,
// silently; a new state type fails to decode, or decodes into nonsense.
// The engine therefore refuses to start a flow on checkpoints written by
// another layout (recovery.Store.CheckLayout), and a cluster refuses a
// node whose flow has another layout. What the layout leaves out may
// change between runs: the functions (a fixed Map, a new filter), views
// that read a table, sinks called at once, partition counts, versions.

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

// typeName is the name of type T in a layout line.
func typeName[T any]() string { return reflect.TypeFor[T]().String() }

// Layout lists what the flow's checkpoints are laid out by, a line each
// (see above): two plans with equal layouts read each other's checkpoints.
func (p *Plan) Layout() []string {
	f := p.f
	out := []string{fmt.Sprintf("fragments %d", f.fragments)}
	for i, s := range f.sources {
		out = append(out, fmt.Sprintf("source %d: %q", i, s.name))
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

// LayoutHash is a hash of Layout, which nodes compare as they join.
func (p *Plan) LayoutHash() uint64 {
	return fnv64(strings.Join(p.Layout(), "\n"))
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

// layout is the windows in a layout line: their bounds are where their
// state is kept.
func (w Windows) layout() string {
	if w.global {
		return "one global window"
	}
	return fmt.Sprintf("windows of %v every %v", time.Duration(w.size), time.Duration(w.slide))
}
