package flowcore

import "reflect"

// ViewOption configures a keyed view: Table.View, Processed.View and
// Windowed.KeyedView take them.
type ViewOption[V any] struct {
	score func(V) float64
	keep  func(V) bool
}

// ScoreBy ranks the view's values for ?top= queries. Without it numbers
// rank by value, and other values cannot be ranked.
func ScoreBy[V any](score func(V) float64) ViewOption[V] { return ViewOption[V]{score: score} }

// PublishIf answers only the entries whose value keep accepts. The others
// are left out of every answer — a key's lookup, pages (limit and after),
// prefix, top, every window of a windowed keyed view and its count of
// keys, watch streams — as if the view did not hold them: they never
// leave the fragment. keep sees a key's whole value, since a key lives in
// one fragment, and runs before pages and top are cut, so a page is as
// full as the published entries allow and paging neither skips nor
// repeats one.
//
// For k-anonymity, a value that counts its distinct subjects publishes
// only the entries backed by at least k of them:
//
//	flows.PublishIf(func(c Cell) bool { return c.Subscribers() >= k })
func PublishIf[V any](keep func(V) bool) ViewOption[V] { return ViewOption[V]{keep: keep} }

// viewOptions are the options of a view, resolved.
type viewOptions[V any] struct {
	score func(V) float64 // nil: ?top= is a bad request
	keep  func(V) bool    // nil: publish every entry
	// byValue: score is numberScore's, so values compare as their
	// scores do (see skipInt).
	byValue bool
}

func (o viewOptions[V]) publish(v V) bool { return o.keep == nil || o.keep(v) }

func resolveViewOptions[V any](opts []ViewOption[V]) viewOptions[V] {
	var o viewOptions[V]
	for _, opt := range opts {
		if opt.score != nil {
			o.score = opt.score
		}
		if opt.keep != nil {
			o.keep = opt.keep
		}
	}
	if o.score == nil {
		o.score = numberScore[V]()
		o.byValue = o.score != nil
	}
	return o
}

// numberScore ranks numbers by value; nil for other types. The common
// types convert without reflection: a top set scores every change of a
// key (topindex.go).
func numberScore[V any]() func(V) float64 {
	var zero V
	switch any(zero).(type) {
	case int64:
		return func(v V) float64 { return float64(any(v).(int64)) }
	case int:
		return func(v V) float64 { return float64(any(v).(int)) }
	case float64:
		return func(v V) float64 { return any(v).(float64) }
	case uint64:
		return func(v V) float64 { return float64(any(v).(uint64)) }
	}
	switch reflect.TypeFor[V]().Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return func(v V) float64 { return float64(reflect.ValueOf(v).Int()) }
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return func(v V) float64 { return float64(reflect.ValueOf(v).Uint()) }
	case reflect.Float32, reflect.Float64:
		return func(v V) float64 { return reflect.ValueOf(v).Float() }
	}
	return nil
}
