package flowcore

import (
	"fmt"
	"reflect"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/tessera-streams/tessera/shard"
)

type side int8

const (
	readerSide   side = iota // before the key: runs in the reader of a source partition
	fragmentSide             // after the key: runs in the fragment that owns the key
)

// Stream is a typed stream of events inside a flow.
type Stream[T any] struct {
	f     *Flow
	what  string
	side  side
	src   int // reader side: the source
	stage int // fragment side: the keyed stage whose records or timers produce the events
	// attach subscribes fn to this stream's events in one reader or fragment.
	attach func(c *core, fn func(T))
}

// Flow is the flow the stream belongs to.
func (s Stream[T]) Flow() *Flow { return s.f }

func (s Stream[T]) ok(op string, fns ...any) bool {
	if s.f == nil {
		panic(fmt.Sprintf("tessera: %s on a zero Stream: streams come from flows.From or an operator", op))
	}
	for _, fn := range fns {
		if isNil(fn) {
			s.f.errorf("%s after %s: function is nil", op, s.what)
			return false
		}
	}
	return true
}

func isNil(v any) bool {
	if v == nil {
		return true
	}
	switch rv := reflect.ValueOf(v); rv.Kind() {
	case reflect.Func, reflect.Pointer, reflect.Interface, reflect.Map, reflect.Slice, reflect.Chan:
		return rv.IsNil()
	}
	return false
}

// From adds a source to the flow. Options give it event time.
func From[T any](f *Flow, name string, src Source[T], opts ...SourceOption) Stream[T] {
	idx := len(f.sources)
	d := sourceDef{name: name}
	ts := sourceOptions[T](f, name, &d, opts)
	if src == nil {
		f.errorf("source %q is nil", name)
	} else if d.partitions = src.Partitions(); d.partitions < 1 {
		f.errorf("source %q has %d partitions", name, d.partitions)
	}
	d.open = func(r *Reader, p int, from int64) error {
		pr, err := src.Open(p, from)
		if err != nil {
			return fmt.Errorf("open %s/%d at %d: %w", name, p, from, err)
		}
		pm := &pump[T]{r: pr, b: ReadBatch[T]{End: from}, ts: ts}
		for _, s := range r.srcSubs {
			pm.subs = append(pm.subs, s.(func(T)))
		}
		r.pump = pm
		return nil
	}
	f.sources = append(f.sources, d)
	return Stream[T]{f: f, what: "source " + name, side: readerSide, src: idx,
		attach: func(c *core, fn func(T)) { c.srcSubs = append(c.srcSubs, fn) }}
}

// Map transforms every event.
func Map[T, U any](s Stream[T], fn func(T) U) Stream[U] {
	s.ok("Map", fn)
	return Stream[U]{f: s.f, what: "Map", side: s.side, src: s.src, stage: s.stage,
		attach: func(c *core, next func(U)) { s.attach(c, func(v T) { next(fn(v)) }) }}
}

// Filter keeps the events for which keep returns true.
func Filter[T any](s Stream[T], keep func(T) bool) Stream[T] {
	s.ok("Filter", keep)
	return Stream[T]{f: s.f, what: "Filter", side: s.side, src: s.src, stage: s.stage,
		attach: func(c *core, next func(T)) {
			s.attach(c, func(v T) {
				if keep(v) {
					next(v)
				}
			})
		}}
}

// FlatMap turns every event into zero or more events: fn calls emit for
// each. The events it emits share the input's offset.
func FlatMap[T, U any](s Stream[T], fn func(v T, emit func(U))) Stream[U] {
	s.ok("FlatMap", fn)
	return Stream[U]{f: s.f, what: "FlatMap", side: s.side, src: s.src, stage: s.stage,
		attach: func(c *core, next func(U)) { s.attach(c, func(v T) { fn(v, next) }) }}
}

// Restamp gives the events of a stream after a key a new event time:
// the stages downstream (a KeyBy's windows, InEventTimeOrder) see ts(v)
// as the event's time. A process function that emits a trip when a timer
// confirms it, say, can date the trip by its departure. An event restamped
// behind its stage's watermark arrives late downstream: windows take it
// within their allowed lateness (AllowedLateness), and send it to TooLate
// after. Before the key, event time is the source's (WithEventTime). A time
// outside [MinEventTime, MaxEventTime) fails the event, which goes to the
// dead letters.
func Restamp[T any](s Stream[T], ts func(T) time.Time) Stream[T] {
	s.ok("Restamp", ts)
	if s.side == readerSide {
		s.f.errorf("Restamp after %s: before the key, event time comes from the source (flows.WithEventTime)", s.what)
	}
	return Stream[T]{f: s.f, what: "Restamp", side: s.side, src: s.src, stage: s.stage,
		attach: func(c *core, next func(T)) {
			s.attach(c, func(v T) {
				at := ts(v)
				if !inEventTime(at) {
					panic("Restamp: " + outOfTime(at))
				}
				was := c.cur.TS
				c.cur.TS = at.UnixNano()
				next(v)
				c.cur.TS = was
			})
		}}
}

// To sends the stream's events to a sink. Before the key, the sink is
// called by the readers; after it, by the fragments. See OnCheckpoint for
// when outputs are delivered, and what exactly-once means for each way.
func To[T any](s Stream[T], sink Sink[T], opts ...SinkOption) {
	s.ok("To", sink)
	s.f.sinks++
	committed := false
	for _, o := range opts {
		committed = committed || o.committed
	}
	if committed {
		toCommitted(s, sink)
		return
	}
	wire := func(c *core) {
		buf := &sinkBuf[T]{sink: sink}
		c.sinks = append(c.sinks, buf)
		s.attach(c, func(v T) {
			// In place: an Output made whole and then appended was built
			// on the stack and copied (twice the stores, per output).
			n := len(buf.out)
			if n == cap(buf.out) {
				buf.out = slices.Grow(buf.out, 1)
			}
			buf.out = buf.out[:n+1]
			o := &buf.out[n]
			c.setOutputID(&o.ID)
			o.Value = v
			if len(buf.out) >= sinkChunk {
				c.flushEarly(buf)
			}
		})
	}
	if s.side == readerSide {
		s.f.readerW = append(s.f.readerW, func(r *Reader) {
			if r.src == s.src {
				wire(&r.core)
			}
		})
	} else {
		s.f.fragW = append(s.f.fragW, func(fr *Fragment) { wire(&fr.core) })
	}
}

// sinkChunk bounds the outputs a sink's buffer holds. A batch that makes
// more — a watermark firing every key's windows at once, the end of a
// bounded input firing all windows still open — writes them in chunks as
// they are made: one buffer grown to hold them all cost the fragment its
// peak for good (a buffer keeps its capacity) and a copy at every growth.
// Outputs written early are not taken back if the batch then fails; its
// replay makes them again with the same ids, as any replay does.
//
// 1024 outputs (100–200 bytes each) stay in a core's cache from one
// chunk to the next, so the buffer is rewritten in place; at 4096 a
// fragment's buffer outgrew it, and a firing of every key's window paid a
// miss for every output written, again to clear it, and once more in the
// sink, with 64 fragments' buffers on the heap for the GC to scan. It is
// also the engine's default batch (512 records), with room: a batch's
// outputs still go in one write.
const sinkChunk = 1024

type sinkBuf[T any] struct {
	sink Sink[T]
	out  []Output[T]
}

func (b *sinkBuf[T]) discard() {
	clear(b.out)
	b.out = b.out[:0]
}

// flush writes the buffer to the sink. A refused write keeps it, to be
// written again (Fragment.RetrySinks) before anything else reaches it.
func (b *sinkBuf[T]) flush() error {
	if len(b.out) == 0 {
		return nil
	}
	if err := b.sink.Write(b.out); err != nil {
		return err
	}
	clear(b.out)
	b.out = b.out[:0]
	return nil
}

// Rec is a keyed record in a batch: the key, the event, and the offset of
// the source event it came from. Event times, for sources that have them,
// travel beside the records (recs.ts), so records of other flows stay small.
type Rec[K comparable, T any] struct {
	Key K
	Val T
	Off int64
	// h is the key's stable hash if the reader that routed the record
	// computed it, or the decoding of another node's batch for a
	// hash-indexed table (0: not known; an exchange's): the fragment's
	// table finds the key by it (tableindex.go).
	h uint64
}

// grow1 returns s with one more element, and a pointer to it, to be
// written field by field (all of them: it may hold what s's array held).
// A record built aside and appended was copied with 16-byte loads that
// straddled the 8-byte stores that had just built it, which the CPU does
// not forward to a load: a stall for every record appended on the paths
// that append one record at a time.
func grow1[E any](s []E) ([]E, *E) {
	n := len(s)
	if n == cap(s) {
		s = slices.Grow(s, 1)
	}
	s = s[:n+1]
	return s, &s[n]
}

// KeyedStream is a stream partitioned by key: the input of the stateful
// operators. Every key belongs to one fragment.
type KeyedStream[K comparable, T any] struct {
	f     *Flow
	stage int
	kc    KeyCodec[K]
	hash  func(K) uint64
}

// KeyOption configures KeyBy.
type KeyOption struct{ keyCodec, eventCodec any }

// WithKeyCodec sets the codec of the key type (needed for keys other than
// strings and integers). Its type must be the KeyBy's key type: a codec of
// another type fails the flow's Validate.
func WithKeyCodec[K any](kc KeyCodec[K]) KeyOption { return KeyOption{keyCodec: kc} }

// WithEventCodec sets the codec of the event type, used when events cross
// nodes. Its type must be the keyed stream's event type: a codec of another
// type fails the flow's Validate.
func WithEventCodec[T any](c Codec[T]) KeyOption { return KeyOption{eventCodec: c} }

// KeyBy partitions a stream by key: events with the same key go to the
// same fragment, in source order per partition. Any stream can be keyed:
// a source's (the readers route it), or one inside the fragments — the
// output of Process, a table's Updates, window results — which goes
// through an exchange (see exchange.go): exactly once, in the order each
// upstream fragment emitted it.
func KeyBy[T any, K comparable](s Stream[T], key func(T) K, opts ...KeyOption) KeyedStream[K, T] {
	f := s.f
	s.ok("KeyBy", key)
	stage := len(f.stages)
	name := fmt.Sprintf("KeyBy#%d", stage)
	sd := stageDef{name: name, keyed: fmt.Sprintf("KeyBy %s of %s", typeName[K](), typeName[T]()), source: s.src, edge: -1, parent: -1}
	if s.side == fragmentSide {
		sd.source = f.stages[s.stage].source
		sd.edge = len(f.edges)
		f.edges = append(f.edges, edgeDef{stage: stage, from: s.stage})
	}
	f.stages = append(f.stages, sd)
	ks := KeyedStream[K, T]{f: f, stage: stage}
	var err error
	var ec Codec[T]
	for _, o := range opts {
		f.stages[stage].keyed += codecNote("key", o.keyCodec) + codecNote("event", o.eventCodec)
		if o.keyCodec != nil {
			if kc, ok := o.keyCodec.(KeyCodec[K]); ok {
				ks.kc = kc
			} else {
				f.errorf("%s: key codec %T is not a KeyCodec[%s]", name, o.keyCodec, reflect.TypeFor[K]())
			}
		}
		if o.eventCodec != nil {
			if c, ok := o.eventCodec.(Codec[T]); ok {
				ec = c
			} else {
				f.errorf("%s: event codec %T is not a Codec[%s]", name, o.eventCodec, reflect.TypeFor[T]())
			}
		}
	}
	if ec == nil {
		if ec, err = DefaultCodec[T](); err != nil {
			f.errorf("%s: missing codec for events: %w; pass WithEventCodec", name, err)
		}
	}
	if ks.kc == nil {
		if ks.kc, err = DefaultKeyCodec[K](); err != nil {
			f.errorf("%s: missing codec: %w; pass WithKeyCodec", name, err)
		}
	}
	if ks.kc != nil {
		ks.hash = keyHasher(ks.kc)
	}
	pool := &sync.Pool{}
	codec := &recsCodec[K, T]{stage: stage, kc: ks.kc, ec: ec, pool: pool}
	f.stages[stage].codec = codec
	f.fragW = append(f.fragW, func(fr *Fragment) {
		fr.stages[stage] = &fragStage[K, T]{kc: ks.kc}
	})
	if s.side == fragmentSide {
		edge := sd.edge
		pools := newExPools[K, T](f.fragments)
		f.fragW = append(f.fragW, func(fr *Fragment) {
			w := newExWriter(fr, edge, codec, ks.hash, pools)
			fr.out = append(fr.out, w)
			s.attach(&fr.core, func(v T) { w.emit(key(v), v) })
		})
		return ks
	}
	g := f.fragments
	f.readerW = append(f.readerW, func(r *Reader) {
		if r.src != s.src {
			return
		}
		rt := &router[K, T]{stage: stage, pool: pool, bufs: make([][]Rec[K, T], g), r: r, at: make([]int32, g+1)}
		if codec.canAhead() {
			rt.codec = codec
		}
		r.routers = append(r.routers, rt)
		if f.sources[s.src].et != nil {
			rt.ts = make([][]int64, g)
		}
		s.attach(&r.core, func(v T) {
			k := key(v)
			h := ks.hash(k)
			var rec *Rec[K, T]
			rt.in, rec = grow1(rt.in)
			rec.Key, rec.Val, rec.Off, rec.h = k, v, r.cur.Offset, h
			rt.inFr = append(rt.inFr, int32(shard.Fragment(h, g)))
			if len(r.routers) > 1 {
				rt.inAt = append(rt.inAt, r.routed) // else a record's place is its index in in
			}
			r.routed++
			if rt.ts != nil {
				rt.inTS = append(rt.inTS, r.cur.TS)
			}
		})
	})
	return ks
}

// Values is the stream of the keyed stream's events, in the fragments.
func (ks KeyedStream[K, T]) Values() Stream[T] {
	return Stream[T]{f: ks.f, what: ks.f.stages[ks.stage].name, side: fragmentSide, stage: ks.stage,
		attach: func(c *core, fn func(T)) {
			st := c.frag.stages[ks.stage].(*fragStage[K, T])
			st.subs = append(st.subs, func(_ K, v T) { fn(v) })
		}}
}

func (ks KeyedStream[K, T]) subscribe(fr *Fragment, fn func(K, T)) {
	st := fr.stages[ks.stage].(*fragStage[K, T])
	st.subs = append(st.subs, fn)
}

// subscribeBulk subscribes fn, and says that bulk may apply a whole
// batch's records for it at once while may() holds (see fragStage).
func (ks KeyedStream[K, T]) subscribeBulk(fr *Fragment, fn func(K, T), bulk bulkFunc[K, T], may func() bool) {
	st := fr.stages[ks.stage].(*fragStage[K, T])
	st.bulks = append(st.bulks, make([]bulkSub[K, T], len(st.subs)-len(st.bulks))...)
	st.subs = append(st.subs, fn)
	st.bulks = append(st.bulks, bulkSub[K, T]{fn: bulk, may: may})
}

// router is a reader's pending batches for one keyed stage, per fragment.
//
// A poll's records are first kept in the order they come (in), then
// appended to their fragments' batches one fragment after the other
// (route). Appended as they came, every record went to another of 64
// batches, a store to a line no cache held: a fifth of a two-stage
// pipeline's CPU. One fragment's records at a time are stores to
// consecutive memory, and in is read back from the cache.
type router[K comparable, T any] struct {
	stage int
	pool  *sync.Pool
	bufs  [][]Rec[K, T]
	ts    [][]int64 // event times beside bufs; nil without event time
	r     *Reader
	// The poll's records, their fragments, their places among the records
	// of every router of the reader (Reader.routed; kept only if the
	// reader has other routers) and event times, until route.
	in   []Rec[K, T]
	inFr []int32
	inAt []int32
	inTS []int64
	// Scratch of route: per fragment, where its records begin in order
	// (at has a slot more); order lists in's indexes by fragment.
	at    []int32
	order []int32
	// The records of the fragments marked ahead (on another node) are
	// also encoded as they are routed, into runs (wireRun), when the
	// stage's records can be (codec is then set).
	codec *recsCodec[K, T]
	ahead []bool
	runs  []*wireRun
}

// route appends the poll's records to their fragments' batches, in their
// order within each fragment, and notes the batches that became full with
// the place of the record that filled them (Reader.crossed).
func (rt *router[K, T]) route() {
	if len(rt.in) == 0 {
		return
	}
	at := rt.at
	clear(at)
	for _, f := range rt.inFr {
		at[f+1]++
	}
	for f := 1; f < len(at); f++ {
		at[f] += at[f-1]
	}
	rt.order = slices.Grow(rt.order[:0], len(rt.in))[:len(rt.in)]
	for i, f := range rt.inFr {
		rt.order[at[f]] = int32(i)
		at[f]++
	}
	// Now at[f] is where fragment f's records end, and f+1's begin.
	g := len(at) - 1
	if canPrefetch {
		for f := range min(routeAhead, g) {
			rt.prefetchDest(f)
		}
	}
	lo := int32(0)
	for f, hi := range at[:g] {
		if canPrefetch && f+routeAhead < g {
			rt.prefetchDest(f + routeAhead)
		}
		if hi == lo {
			continue
		}
		was := rt.pending(f)
		if !rt.routeBare(f, rt.order[lo:hi]) {
			b := rt.bufs[f]
			if b == nil {
				b = rt.get()
			}
			from := len(b)
			for _, i := range rt.order[lo:hi] {
				b = append(b, rt.in[i])
			}
			rt.bufs[f] = b
			if rt.ts != nil {
				ts := rt.ts[f]
				if ts == nil {
					// Sized once for the batch: grown by appends it would be
					// allocated, copied and cleared a dozen times.
					ts = make([]int64, 0, max(rt.r.batchSize, int(hi-lo)))
				}
				for _, i := range rt.order[lo:hi] {
					ts = append(ts, rt.inTS[i])
				}
				rt.ts[f] = ts
			}
			if rt.ahead != nil {
				rt.encodeAhead(f, b, from)
			}
		}
		if bs := rt.r.batchSize; was < bs && was+int(hi-lo) >= bs {
			at := rt.order[lo+int32(bs-was)-1]
			if len(rt.inAt) > 0 {
				at = rt.inAt[at]
			}
			rt.r.crossed = append(rt.r.crossed, crossing{at: at, f: f})
		}
		lo = hi
	}
	clear(rt.in) // holds no event past the poll
	rt.in, rt.inFr, rt.inAt, rt.inTS = rt.in[:0], rt.inFr[:0], rt.inAt[:0], rt.inTS[:0]
}

// routeAhead is how many fragments ahead route asks for the lines it will
// write (prefetchDest): enough for them to come while it copies a
// fragment's records. (Asked for all fragments at once, or eight ahead,
// the bench's keyed count did no better.)
const routeAhead = 2

// prefetchDest asks for the lines that fragment f's records of the poll
// will be appended to, once route has ordered them (at[f] is where they
// end in order). A poll's records go to every fragment's batch, a few
// lines each, lines that a buffer's last batch left in the cache of the
// core that applied it: without asking ahead, route's stores waited for
// them one fragment after the other.
func (rt *router[K, T]) prefetchDest(f int) {
	if rt.bare(f) {
		return // its records go to the run, not the buffer
	}
	n := rt.at[f]
	if f > 0 {
		n -= rt.at[f-1]
	}
	b := rt.bufs[f]
	// Within the buffer only: a poll larger than its room grows it anew.
	n = min(n, int32(cap(b)-len(b)))
	if n <= 0 {
		return
	}
	size := unsafe.Sizeof(b[0])
	prefetchLines(unsafe.Add(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b))*size), uintptr(n)*size)
}

// get returns an empty batch buffer with room for an eighth more records
// than a full batch (batchSlack): the poll that fills a batch routes the
// rest of its records to it too, and a buffer of exactly the batch size
// was then copied into one twice its size (a twentieth of a keyed count's
// CPU in growslice, and twice the memory while the buffer is reused).
func (rt *router[K, T]) get() []Rec[K, T] {
	want := rt.r.batchSize + rt.r.batchSize/batchSlack
	if p, ok := rt.pool.Get().(*[]Rec[K, T]); ok {
		if cap(*p) >= want {
			return (*p)[:0]
		}
		// A smaller one (a decoded batch's, or from before the batch size
		// grew) would grow as it fills: let it go.
	}
	return make([]Rec[K, T], 0, want)
}

// batchSlack: a batch buffer holds batchSize + batchSize/batchSlack
// records (see get).
const batchSlack = 8

func (rt *router[K, T]) pending(f int) int {
	if rt.bare(f) {
		return rt.runs[f].e.n
	}
	return len(rt.bufs[f])
}

// bare reports whether fragment f's pending records are all in its run
// (routeBare), none in its buffer.
func (rt *router[K, T]) bare(f int) bool {
	return rt.runs != nil && rt.runs[f] != nil && rt.runs[f].bare
}

// encodeAhead encodes the records routed to fragment f's batch b from
// was on, if f is marked ahead, into the batch's run. A run begins once
// the batch holds the records that choose its key coding (frontCodes
// samples the first frontSample+1), with all of them: the bytes are those
// encodeWire would write for the whole batch. A batch that reached them
// before f was marked has no run.
func (rt *router[K, T]) encodeAhead(f int, b []Rec[K, T], was int) {
	run := rt.runs[f]
	if run != nil && (!rt.ahead[f] || was == 0) {
		run.release()
		rt.runs[f], run = nil, nil
	}
	switch {
	case !rt.ahead[f]:
		return
	case run == nil && was <= frontSample && len(b) > frontSample:
		run, was = rt.codec.beginRun(b), 0
		rt.runs[f] = run
	case run == nil:
		return
	}
	if !run.ok {
		return
	}
	var ts []int64
	if rt.ts != nil {
		ts = rt.ts[f][was:]
	}
	run.et = rt.ts != nil
	rt.codec.appendRun(run, b[was:], nil, ts)
	if run.ok && run.e.n == len(b) {
		// From now on the batch's records are only in the run (bare):
		// the buffer's copies are dropped, and the next records are not
		// copied into it at all.
		run.bare = true
		rt.bufs[f] = b[:0]
		if rt.ts != nil {
			rt.ts[f] = rt.ts[f][:0]
		}
	}
}

// routeBare encodes the records of the poll at idx, routed to fragment
// f, straight into its batch's run, if the run is bare: the records of a
// fragment on another node are only ever read as the run's bytes, and
// copying each one into a batch buffer first cost a store to a line no
// cache held. A run that can take no more (front-coded keys past
// maxFrontKeys) or whose fragment is no longer marked ahead gets its
// records back in the buffer (unbare), and routeBare reports false: the
// caller routes the records as for any batch.
func (rt *router[K, T]) routeBare(f int, idx []int32) bool {
	if !rt.bare(f) {
		return false
	}
	if !rt.ahead[f] {
		rt.unbare(f)
		return false
	}
	run := rt.runs[f]
	if run.e.front {
		keys := run.e.keys
		for _, i := range idx {
			keys += len(*(*string)(unsafe.Pointer(&rt.in[i].Key)))
		}
		if keys > maxFrontKeys {
			rt.unbare(f)
			return false
		}
	}
	var ts []int64
	if rt.ts != nil {
		ts = rt.inTS
	}
	rt.codec.appendRun(run, rt.in, idx, ts)
	return true
}

// unbare puts the records of fragment f's bare run back in its batch
// buffer, decoded from the run's bytes, which stays as it was.
func (rt *router[K, T]) unbare(f int) {
	run := rt.runs[f]
	d := rt.codec.decodeRun(run)
	b := rt.bufs[f]
	if b == nil {
		b = rt.get()
	}
	rt.bufs[f] = append(b, d.items...)
	if rt.ts != nil {
		rt.ts[f] = append(rt.ts[f], d.ts...)
	}
	run.bare = false
	d.release()
}

// setAhead marks fragment f's batches, from the next one on, to be encoded
// as they are routed (on: f is on another node), if the stage's records
// can be.
func (rt *router[K, T]) setAhead(f int, on bool) {
	if rt.codec == nil || (rt.ahead == nil && !on) {
		return
	}
	if rt.ahead == nil {
		rt.ahead, rt.runs = make([]bool, len(rt.bufs)), make([]*wireRun, len(rt.bufs))
	}
	rt.ahead[f] = on
}

func (rt *router[K, T]) take(f int) payload {
	if rt.pending(f) == 0 {
		return nil
	}
	b := rt.bufs[f]
	rt.bufs[f] = nil
	p := &recs[K, T]{stage: rt.stage, items: b, pool: rt.pool}
	if rt.ts != nil {
		p.ts, rt.ts[f] = rt.ts[f], nil
	}
	if rt.runs != nil {
		p.run, rt.runs[f] = rt.runs[f], nil
		// Sent as the run's bytes, the records are not read again: clearing
		// them when the batch is released, out of the caches by then, cost
		// as much as encoding them.
		p.keep = p.run != nil && p.run.ok
		if p.run != nil && p.run.bare {
			p.bare = rt.codec
		}
	}
	return p
}

// recs is one keyed stage's records in a batch.
type recs[K comparable, T any] struct {
	stage int
	items []Rec[K, T]
	ts    []int64 // event times of items, if the source has event time
	pool  *sync.Pool
	// keep: release pools the records without clearing them. An
	// exchange's part: its log holds the same records until a checkpoint
	// of their fragment covers them, and a pooled slice that nobody takes
	// goes at the second GC, so clearing freed little sooner; it wrote
	// every record once more (while the GC marks, through a barrier). A
	// batch sent as its run's bytes (take) too.
	keep bool
	// run holds the records encoded for another node as they were routed
	// (nil: none).
	run *wireRun
	// bare, when set, decodes the records from run, which holds them all:
	// items holds none until full.
	bare *recsCodec[K, T]
	// slots of the records' keys in their fragment's table, when decoded
	// from another node's batch (nil: none).
	slots *keySlots
}

func (p *recs[K, T]) len() int {
	if p.bare != nil {
		return p.run.e.n
	}
	return len(p.items)
}

// full puts the records of a bare batch in items, decoded from its run:
// for the rare batch read as records after all (its fragment came back to
// this node, or the node it goes to reads an older form).
func (p *recs[K, T]) full() {
	if p.bare == nil {
		return
	}
	c := p.bare
	// Not tried again: a run that does not decode panics (decodeRun),
	// apply's recover then describes the record (applySafe).
	p.bare = nil
	d := c.decodeRun(p.run)
	p.items = append(p.items[:0], d.items...)
	p.ts, d.ts = d.ts, nil
	p.keep = false
	d.release()
}

func (p *recs[K, T]) ahead() *wireRun { return p.run }

func (p *recs[K, T]) stageOf() int { return p.stage }

func (p *recs[K, T]) apply(fr *Fragment, min int64, from int) {
	p.full()
	st := fr.stages[p.stage].(*fragStage[K, T])
	subs := st.subs
	if from == 0 && fr.skip == nil && st.bulks != nil {
		var bulk []bulkFunc[K, T]
		bulk, subs = st.split()
		st.slots = p.slots
		for _, b := range bulk {
			b(fr, p.items, p.ts, min)
		}
		st.slots = nil
		if len(subs) == 0 {
			p.applied(fr, min)
			return
		}
	}
	for i := from; i < len(p.items); i++ {
		it := &p.items[i]
		if it.Off < min || (fr.skip != nil && fr.skipped(it.Off)) {
			continue
		}
		rec := 0
		if i > 0 && p.items[i-1].Off == it.Off {
			rec = fr.record + 1 // another record of the same event
		}
		fr.event(it.Off, rec)
		fr.curIdx = i
		if p.ts != nil {
			fr.cur.TS = p.ts[i]
		}
		for _, sub := range subs {
			sub(it.Key, it.Val)
		}
		fr.events++
	}
}

// applied does what the loop of apply does for records nobody subscribed
// to one by one (every subscriber took the batch in bulk): it counts the
// records at or above min and leaves the fragment at the last of them, as
// the loop would, without a pass that calls nothing per record. (The
// loop cost the second stage of a count of counts a tenth of its apply.)
func (p *recs[K, T]) applied(fr *Fragment, min int64) {
	last, n := -1, int64(0)
	for i := range p.items {
		if p.items[i].Off >= min {
			last = i
			n++
		}
	}
	if last < 0 {
		return
	}
	off, rec := p.items[last].Off, 0
	for i := last; i > 0 && p.items[i-1].Off == off; i-- {
		rec++ // equal offsets are one event's records, all applied or none
	}
	fr.event(off, rec)
	fr.curIdx = last
	if p.ts != nil {
		fr.cur.TS = p.ts[last]
	}
	fr.events += n
}

func (p *recs[K, T]) describe(fr *Fragment, i int) (key, val string) {
	p.full()
	if i < 0 || i >= len(p.items) {
		return "", "" // the records are lost: a bare run that did not decode
	}
	st := fr.stages[p.stage].(*fragStage[K, T])
	it := p.items[i]
	return st.kc.Format(it.Key), fmt.Sprintf("%+v", it.Val)
}

func (p *recs[K, T]) release() {
	if p.run != nil {
		p.run.release()
		p.run = nil
	}
	if p.slots != nil {
		p.slots.release()
		p.slots = nil
	}
	if p.pool == nil {
		return
	}
	if !p.keep {
		clear(p.items)
	}
	b := p.items[:0]
	p.items = nil
	p.pool.Put(&b)
}

// Items exposes the records, for engines that encode batches.
func (p *recs[K, T]) Items() []Rec[K, T] {
	p.full()
	return p.items
}

// fragStage is a keyed stage in a fragment: the operators subscribed to
// its records, called for every record in the order they subscribed.
//
// A subscriber whose effects stay in its own state (a table nobody
// subscribed to, without a TTL: Count, Aggregate, Reduce) may also give a
// bulk form that applies a batch's records in one loop: no call through
// two closures per record, and the record's key and the state stay in
// registers. Running it over the batch before the other subscribers run
// record by record changes nothing they or a query can see: queries come
// between batches, and after a user function fails the fragment's state
// is not trusted anyway (the engine restores it). A table whose updates
// are subscribed to (Updates: an exchange, a sink) is applied in bulk too
// when it is its stage's one subscriber: its bulk form then sets the
// current record and calls the update subscribers per record
// (bulkEvent), in the order the loop would, without the loop's calls
// through closures and, for a count, with its lookups read ahead. Sliced
// windows (sliceOp.bulk) are applied in bulk on the same terms.
type fragStage[K comparable, T any] struct {
	kc    KeyCodec[K]
	subs  []func(K, T)
	bulks []bulkSub[K, T] // beside subs (shorter if the last have none)
	// split's answer, made at the first batch (subscribers and what
	// their may says are fixed once the fragment is built).
	split1 bool
	bulk   []bulkFunc[K, T]
	each   []func(K, T)
	// slots of the keys of the batch the bulk forms apply (nil: none).
	slots *keySlots
}

// bulkFunc applies the records of items (with event times ts, nil
// without) whose offset is at least min. While it runs, fr.curIdx and
// fr.cur.Offset name the record it applies (a user function that panics
// is reported at it). The stage's slots, while it runs, are where the
// records' keys were found in a table as the batch was decoded, if they
// were (keySlots.of says whether they hold for a table).
type bulkFunc[K comparable, T any] func(fr *Fragment, items []Rec[K, T], ts []int64, min int64)

// keySlots are the slots of a decoded batch's keys in a hash-indexed
// table of their fragment, found as the batch was decoded (keyBatch,
// which looks the keys up to take the table's strings): the table's bulk
// apply takes them rather than looking every key up again. A table's
// slots move only when it removes a key: the slots hold while the index's
// dels is what it was when they were found.
type keySlots struct {
	x    *hashIndex
	dels uint64
	at   []int32 // at[i]: the slot of record i's key, -1: not in the table then
}

var keySlotsPool = sync.Pool{New: func() any { return new(keySlots) }}

// of returns the slots of n records if they are slots of the table whose
// index is x and still hold, or nil.
func (s *keySlots) of(x *hashIndex, n int) []int32 {
	if s == nil || s.x != x || s.dels != x.dels || len(s.at) != n {
		return nil
	}
	return s.at
}

// release gives s back to the pool.
func (s *keySlots) release() {
	s.x, s.at = nil, s.at[:0]
	keySlotsPool.Put(s)
}

type bulkSub[K comparable, T any] struct {
	fn  bulkFunc[K, T]
	may func() bool
}

// split returns the bulk forms to run over a batch, and the subscribers
// left to call per record.
func (st *fragStage[K, T]) split() (bulk []bulkFunc[K, T], each []func(K, T)) {
	if !st.split1 {
		st.split1 = true
		for i, fn := range st.subs {
			if i < len(st.bulks) && st.bulks[i].fn != nil && st.bulks[i].may() {
				st.bulk = append(st.bulk, st.bulks[i].fn)
			} else {
				st.each = append(st.each, fn)
			}
		}
	}
	return st.bulk, st.each
}
