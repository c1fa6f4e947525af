package flowcore

import (
	"cmp"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	"reflect"
	"slices"
	"sync"
	"unsafe"

	"github.com/tessera-streams/tessera/shard"
)

// An exchange is a KeyBy of a stream inside the fragments (after Process,
// a table's Updates, window results): the records go to the fragments that
// own their new keys. Every fragment's output on an exchange is one
// partition of an input channel of the next stage, exactly as a source
// partition is:
//
//   - each output gets the next number of the fragment's sequence on that
//     exchange, and is sent only once a durable checkpoint of the fragment
//     covers it. A fragment's outputs depend on how its input partitions
//     interleaved, which a replay after a crash does not repeat; but what
//     was sent was in a durable checkpoint — records, numbers and the
//     state that made them — so a restored fragment never contradicts what
//     any fragment downstream has seen: its new outputs continue the
//     sequence after the checkpoint. Downstream fragments keep their offset
//     vector over upstream fragments and drop what they applied. The price
//     is latency: a stage sees its input one checkpoint interval late; the
//     watermark it is sent is the one of the same checkpoint. A restored
//     fragment holds only what its copy holds: recovery's strong rule
//     (MachineConfig.Confirm), which the engine and the simulation run,
//     also waits for the standby's confirmed copy, and checks a restored
//     copy against what downstream fragments applied, since both copies of
//     the newest checkpoint can be lost at once;
//   - the upstream keeps its outputs until the durable checkpoint of the
//     fragment each goes to covers them (Trim), and writes them into its
//     own checkpoints — one entry per checkpoint, for every downstream
//     fragment — so a downstream fragment restored to an older checkpoint
//     is sent them again (Resend) — from memory, or from the upstream's
//     checkpoint if the upstream restarted too — while nobody else stops
//     or rolls back. The outputs are one log in the order of their
//     numbers, split by destination only when a checkpoint releases them
//     (see exWriter).
//
// This is MillWheel's "strong productions" with the production log kept
// in the producer's own checkpoint, and Kafka Streams' repartition topics
// without the topic: records cross by pointer inside a node and in the
// node-to-node batches otherwise, and only the tail that no downstream
// checkpoint covers yet touches the disk, in the same group-committed batch
// as the producer's checkpoint.

// ChannelInfo describes an input channel of the fragments: a source, or an
// exchange whose partitions are the upstream fragments.
type ChannelInfo struct {
	Name       string
	Partitions int
	Exchange   bool
}

// Channels lists the fragments' input channels: the sources in
// declaration order, then the exchanges. Batch.Source and the channel of
// an offset vector's entries index this list.
func (p *Plan) Channels() []ChannelInfo {
	out := make([]ChannelInfo, 0, len(p.f.sources)+len(p.f.edges))
	for _, s := range p.f.sources {
		out = append(out, ChannelInfo{Name: s.name, Partitions: s.partitions})
	}
	for _, e := range p.f.edges {
		out = append(out, ChannelInfo{Name: p.f.stages[e.stage].name, Partitions: p.f.fragments, Exchange: true})
	}
	return out
}

// channels is the number of input channels.
func (p *Plan) channels() int { return len(p.f.sources) + len(p.f.edges) }

// edgeChannel is the channel of exchange e.
func (p *Plan) edgeChannel(e int) int { return len(p.f.sources) + e }

// IsExchange reports whether channel ch is an exchange.
func (p *Plan) IsExchange(ch int) bool { return ch >= len(p.f.sources) && ch < p.channels() }

// channelParts is the number of partitions of channel ch.
func (p *Plan) channelParts(ch int) int {
	if ch < len(p.f.sources) {
		return p.f.sources[ch].partitions
	}
	return p.f.fragments
}

// channelET reports whether channel ch carries event time.
func (p *Plan) channelET(ch int) bool {
	if ch < len(p.f.sources) {
		return p.f.sources[ch].et != nil
	}
	return p.f.sources[p.f.stages[p.f.edges[ch-len(p.f.sources)].from].source].et != nil
}

// stageChannel is the channel that feeds stage s.
func (p *Plan) stageChannel(s int) int {
	st := p.f.stages[s]
	switch {
	case st.parent >= 0:
		return p.stageChannel(st.parent)
	case st.edge >= 0:
		return p.edgeChannel(st.edge)
	}
	return st.source
}

// HasExchanges reports whether the flow re-keys inside the fragments.
func (p *Plan) HasExchanges() bool { return len(p.f.edges) > 0 }

// Exchanges lists the channels on which fragments send each other records.
func (p *Plan) Exchanges() []int {
	out := make([]int, len(p.f.edges))
	for e := range out {
		out[e] = p.edgeChannel(e)
	}
	return out
}

// exchangeOut is a fragment's side of one exchange, typed inside.
type exchangeOut interface {
	channel() int
	takeDue(fn func(dest int, b *Batch))
	resend(d int, from int64) *Batch
	trim(d int, upto int64)
	delta(d *Delta) error
	restore(key, val []byte) error
	restored()
	released(lag bool)
	sentAll() bool
	holding() bool
	retained() int
	kept(d int) (base, sent int64)
	made() int64
	unreleased() bool
	ended() bool
	finished() bool
}

// exWriter is fragment fr's output on one exchange.
//
// Its outputs are kept in one log, in the order of their numbers, each
// with the fragment it goes to: emitting a record appends it, and no more.
// The log is split by destination only when a checkpoint releases a range
// of it (takeDue): each destination's records of that range are copied
// once into its batch, which owns them. Keeping 64 logs, one per
// destination, made every output a scattered append and every log's
// growth a copy; and it made a checkpoint write one entry per destination.
// The price of one log: a range is forgotten only once no destination can
// ask for any of its records again (trim), so one downstream fragment that
// falls behind keeps every record after its oldest one, not only its own.
type exWriter[K comparable, T any] struct {
	edge, stage int
	ch          int
	from        int // the channel whose watermark the re-keyed stream follows
	et          bool
	fr          *Fragment
	codec       *recsCodec[K, T]
	hash        func(K) uint64
	intKey      bool  // K is a 64-bit integer: hash is shard.Uint64 of it, inlined by emit
	seq         int64 // the number of the next output
	dests       []exDest
	// The log: the records numbered lo to seq, in chunks of exChunk records;
	// chunks[0] holds the numbers from first*exChunk on. holes counts the
	// slots that hold no record (noDest: from a restore of entries that
	// left out what their destinations had).
	chunks []*exChunk[K, T]
	pools  *exPools[K, T] // chunks forgotten and batch parts released, for the exchange's writers to reuse
	first  int64
	lo     int64
	holes  int
	split  int64 // records numbered below were handed to their batches
	// Checkpoint entries: spans of records written, from the newest
	// delta's saved on; legacy, the keys of entries in the format of one
	// entry per destination, which a restore read and the next delta
	// replaces.
	saved    int64 // outputs before it are in checkpoints
	seqSaved int64 // the sequence number last written to a checkpoint
	spans    [][2]int64
	legacy   [][]byte
	// trimsSaved says the checkpoint holds the trim points' entry (kind
	// 6); legacyTrims are the fragments whose trim point a restore read
	// from an entry of its own (kind 2), which the next delta replaces.
	trimsSaved  bool
	legacyTrims []int
	rest        []restoredRec[K, T] // records read by restore, until restored
	needN       int                 // records in the dests' need ranges
	recBytes    int                 // about how many bytes a record takes encoded, to size a checkpoint entry at once
	// The kind of the records entries it writes: exDenseEntry with
	// compact, else exRecordEntry. restKind is the kind of those a
	// restore read (entries of another kind are rewritten, as legacy).
	recKind, restKind byte
	compact           *exCompact[K, T]
	// Outputs numbered below rel may be sent, with the watermark relWM: a
	// durable checkpoint covers them; mark and markWM are the checkpoint
	// being written's (Fragment.Released); behind and behindWM the
	// previous checkpoint's, released instead of the newest with
	// Fragment.LagReleases.
	rel, relWM, mark, markWM int64
	behind, behindWM         int64
	// ancestors are the channels the re-keyed stream comes from, directly
	// or through earlier exchanges: when all their partitions ended and
	// every output is released, the exchange's partition ends too.
	ancestors []int
	// After a scan that took every batch due, no fragment is due again
	// until what was released, its watermark or the end changes, or a
	// restore forces a batch to every fragment: scanned says so, with
	// what the scan saw; a fragment asks it for every batch it applies.
	scanned               bool
	scannedRel, scannedWM int64
	scannedFinished       bool
	// Per destination, scratch of takeDue.
	counts []int
	parts  []*recs[K, T]
}

// exChunkBits sizes the log's chunks: 1024 records.
const exChunkBits = 10

const exChunkLen = 1 << exChunkBits

// exFree is how many forgotten chunks an exchange keeps to reuse, per
// fragment: a fragment that keeps up forgets about as many chunks per
// checkpoint interval as it fills, and fresh chunks were a quarter of what
// the fragments allocated (the two-stage bench). With 8, the two-stage
// bench still allocated a third more chunks than its logs hold at once (a
// burst of forgotten chunks overflowed the list while others were about
// to grow): 24 leaves about the chunks that first fill the logs. What it
// may hold idle is 24 chunks of 36 KiB per fragment of that exchange.
const exFree = 24

// exPools holds the forgotten chunks of one exchange, shared by the logs
// of all its fragments, and the records of its batch parts once applied.
//
// Chunks: a log forgets in bursts — a whole checkpoint interval's chunks
// once the slowest fragment downstream covers them — and fills at an even
// pace: with a few free chunks of its own, a third of
// the chunks the two-stage bench's logs filled were fresh (and a fresh
// chunk's pages are faulted in as emit first writes them). Shared, one
// log's burst serves the others' growth, with the same bound on what is
// held idle (exFree per fragment). The lock is taken once per chunk.
//
// Parts: a release splits its records by destination into parts of any
// size, from one record to thousands (a count of counts sends most to a
// few fragments), so one pool of slices missed whenever the slice it
// offered was too small, and the parts were a fifth of what the
// two-stage bench allocated. A part's capacity is a power of two, and it
// goes back to the pool of its size (recs.release puts it in p.pool).
type exPools[K comparable, T any] struct {
	mu    sync.Mutex
	free  []*exChunk[K, T]
	max   int
	parts [exPartClasses]sync.Pool
}

// exPartClasses bounds the parts pooled: up to 2^23 records.
const exPartClasses = 24

func newExPools[K comparable, T any](fragments int) *exPools[K, T] {
	return &exPools[K, T]{max: exFree * max(fragments, 1)}
}

// part is an empty slice of records with room for n, and the pool it
// goes back to (nil if too large to pool).
func (p *exPools[K, T]) part(n int) ([]Rec[K, T], *sync.Pool) {
	c := bits.Len(uint(max(n, 1) - 1))
	if c >= exPartClasses {
		return make([]Rec[K, T], 0, n), nil
	}
	pool := &p.parts[c]
	if s, ok := pool.Get().(*[]Rec[K, T]); ok {
		return (*s)[:0], pool
	}
	return make([]Rec[K, T], 0, 1<<c), pool
}

// get is a free chunk, or nil.
func (p *exPools[K, T]) get() *exChunk[K, T] {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.free)
	if n == 0 {
		return nil
	}
	ck := p.free[n-1]
	p.free[n-1] = nil
	p.free = p.free[:n-1]
	return ck
}

// put keeps the chunks for reuse, as many as there is room for.
func (p *exPools[K, T]) put(cks []*exChunk[K, T]) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// Not cleared: every slot is written before it is read again, and
	// what a few free chunks keep alive was live a moment ago (clearing
	// would write every slot once more).
	p.free = append(p.free, cks[:min(len(cks), p.max-len(p.free))]...)
}

// noDest marks a slot of the log that holds no record.
const noDest = math.MaxUint32

// exChunk is a piece of the log. The record in the slot of number n is
// numbered n: a slot holds the record without its number, which a loop
// over slots knows (runs), and a batch part is given (Rec.Off). Without
// it a record of the two-stage bench takes 32 bytes instead of 40, and
// emit's stores to the log (a tenth of that bench's CPU, mostly waiting
// for the lines they write) touch a fifth fewer lines.
type exChunk[K comparable, T any] struct {
	recs [exChunkLen]exRec[K, T]
	dest [exChunkLen]uint32
	ts   []int64 // with event time
}

// exAhead: emit asks for the lines of the log's next exAhead slots, to be
// written, each time it reaches a multiple of exAhead (prefetchLines). A
// chunk is reused long after its records were split, on whichever core,
// and stores to lines that are not in this core's cache waited for them
// one line after the other: emit's store was a tenth of the two-stage
// bench's CPU.
const exAhead = 16

// prefetch asks for the lines of slots i to i+exAhead (records and
// destinations).
func (c *exChunk[K, T]) prefetch(i int) {
	prefetchLines(unsafe.Pointer(&c.recs[i]), exAhead*unsafe.Sizeof(c.recs[0]))
	prefetchLines(unsafe.Pointer(&c.dest[i]), exAhead*unsafe.Sizeof(c.dest[0]))
}

// exRec is a record in the log.
type exRec[K comparable, T any] struct {
	Key K
	Val T
}

// rec is the record in slot i of the chunk, numbered n.
func (c *exChunk[K, T]) rec(i int, n int64) Rec[K, T] {
	return Rec[K, T]{Key: c.recs[i].Key, Val: c.recs[i].Val, Off: n}
}

type restoredRec[K comparable, T any] struct {
	rec Rec[K, T]
	ts  int64
}

// exDest is what an upstream fragment keeps of one downstream fragment.
type exDest struct {
	base   int64 // records numbered below are covered by its durable checkpoint
	sent   int64 // End of the last batch sent
	sentWM int64
	force  bool // send a batch even if nothing changed (after a restore)
	done   bool // its last batch said the partition ended
	// baseSaved is the base the checkpoint holds: a restored fragment
	// knows which records it no longer has (Kept), so a fragment
	// downstream that asks for them learns it restored an older copy
	// instead of being sent the records after them as if they followed.
	baseSaved int64
	// need is where its records not covered by its durable checkpoint
	// are: the ranges of the log handed to its batches, oldest first. The
	// log keeps everything from the oldest range of any fragment on.
	need []exRange
}

// exRange is a range of the log, [from, to), holding n records for one
// fragment.
type exRange struct {
	from, to int64
	n        int
}

func newExWriter[K comparable, T any](fr *Fragment, edge int, codec *recsCodec[K, T], hash func(K) uint64, pools *exPools[K, T]) *exWriter[K, T] {
	p := fr.plan
	e := p.f.edges[edge]
	w := &exWriter[K, T]{edge: edge, stage: e.stage, ch: p.edgeChannel(edge), from: p.stageChannel(e.from),
		fr: fr, codec: codec, hash: hash, pools: pools, dests: make([]exDest, p.f.fragments), counts: make([]int, p.f.fragments),
		parts: make([]*recs[K, T], p.f.fragments)}
	w.et = p.channelET(w.ch)
	switch reflect.TypeFor[K]().Kind() {
	case reflect.Int64, reflect.Uint64, reflect.Int, reflect.Uint:
		w.intKey = unsafe.Sizeof(*new(K)) == 8
	}
	w.recKind = exRecordEntry
	if w.compact = newExCompact(codec.kc, codec.ec, w.et); w.compact != nil {
		w.recKind = exDenseEntry
	}
	for ch := w.from; ; {
		w.ancestors = append(w.ancestors, ch)
		if !p.IsExchange(ch) {
			break
		}
		ch = p.stageChannel(p.f.edges[ch-len(p.f.sources)].from)
	}
	w.relWM, w.markWM, w.behindWM = NoWatermark, NoWatermark, NoWatermark
	for i := range w.dests {
		w.dests[i].sentWM = NoWatermark
	}
	return w
}

func (w *exWriter[K, T]) channel() int { return w.ch }

// slot is where record number n lives in the log, a chunk added if n is
// the first of one. n must be at least lo and at most seq.
func (w *exWriter[K, T]) slot(n int64) (*exChunk[K, T], int) {
	c := int(n>>exChunkBits - w.first)
	if c == len(w.chunks) {
		ck := w.pools.get()
		if ck == nil {
			ck = new(exChunk[K, T])
			if w.et {
				ck.ts = make([]int64, exChunkLen)
			}
		}
		w.chunks = append(w.chunks, ck)
	}
	return w.chunks[c], int(n & (exChunkLen - 1))
}

// emit numbers a record and logs it.
func (w *exWriter[K, T]) emit(k K, v T) {
	n := w.seq
	w.seq++
	c, i := w.slot(n)
	if i&(exAhead-1) == 0 && i+2*exAhead <= exChunkLen {
		c.prefetch(i + exAhead)
	}
	c.recs[i] = exRec[K, T]{Key: k, Val: v}
	var h uint64
	if w.intKey {
		h = shard.Uint64(*(*uint64)(unsafe.Pointer(&k))) // keyHasher's hash, without the call
	} else {
		h = w.hash(k)
	}
	c.dest[i] = uint32(shard.Fragment(h, len(w.dests)))
	if w.et {
		c.ts[i] = w.fr.cur.TS
	}
}

func (w *exWriter[K, T]) wm() int64 { return w.fr.wms[w.from].wm }

// mayBeDue reports whether a fragment may be due a batch: not if nothing
// changed since the last scan (takeDue).
func (w *exWriter[K, T]) mayBeDue() bool {
	return !w.scanned || w.rel != w.scannedRel || w.relWM != w.scannedWM || w.finished() != w.scannedFinished
}

// takeDue hands fn the batch due to each fragment: the records released
// since the last call are split by destination here.
func (w *exWriter[K, T]) takeDue(fn func(dest int, b *Batch)) {
	if !w.mayBeDue() {
		return
	}
	from, to := w.split, max(w.split, w.rel)
	clear(w.counts)
	plain := w.plainSplit(from)
	if plain {
		counts := w.counts
		for n := from; n < to; {
			c, i := w.slot(n)
			j := min(exChunkLen, i+int(to-n))
			for _, d := range c.dest[i:j] {
				counts[d]++
			}
			n += int64(j - i)
		}
	} else {
		w.runs(from, to, func(c *exChunk[K, T], i, j int, n int64) {
			for k, d := range c.dest[i:j] {
				if d != noDest && n+int64(k) >= w.dests[d].base {
					w.counts[d]++
				}
			}
		})
	}
	parts := w.parts
	defer clear(parts)
	for d, n := range w.counts {
		if n > 0 {
			parts[d] = w.newPart(n)
			w.dests[d].need = append(w.dests[d].need, exRange{from, to, n})
			w.needN += n
		}
	}
	if plain {
		w.splitPlain(from, to, parts)
	} else {
		w.runs(from, to, func(c *exChunk[K, T], i, j int, n int64) {
			for k := i; k < j; k++ {
				d := c.dest[k]
				if d == noDest || n+int64(k-i) < w.dests[d].base {
					continue // its fragment has it in a durable checkpoint already (a replay)
				}
				p := parts[d]
				p.items = append(p.items, c.rec(k, n+int64(k-i)))
				if w.et {
					p.ts = append(p.ts, c.ts[k])
				}
			}
		})
	}
	w.split = to
	fin := w.finished()
	for d := range w.dests {
		dd := &w.dests[d]
		if parts[d] == nil && !dd.force && (!w.et || dd.sentWM == w.relWM) && dd.done == fin {
			continue
		}
		end := max(w.rel, dd.sent)
		b := &Batch{Source: w.ch, Partition: w.fr.id, PrevEnd: dd.sent, End: end, Done: fin}
		if p := parts[d]; p != nil {
			b.Count, b.parts = len(p.items), []payload{p}
		}
		if w.et {
			b.EventTime, b.Watermark = true, w.relWM
			dd.sentWM = b.Watermark
		}
		dd.sent, dd.force, dd.done = end, false, fin
		fn(d, b)
	}
	w.scanned, w.scannedRel, w.scannedWM, w.scannedFinished = true, w.rel, w.relWM, fin
}

// plainSplit reports whether every record numbered from from on goes to
// its fragment's part as it is: no hole in the log, no event time, and no
// fragment whose durable checkpoint covers any of them (a replay).
func (w *exWriter[K, T]) plainSplit(from int64) bool {
	if w.holes > 0 || w.et {
		return false
	}
	for i := range w.dests {
		if w.dests[i].base > from {
			return false
		}
	}
	return true
}

// splitPlain appends the records numbered from from to to to their
// fragments' parts, when plainSplit says each goes as it is. A loop
// without a closure or the checks of takeDue's general one: with them,
// the split was two fifths of what the exchange cost the two-stage bench.
//
// Splitting earlier, while the records are warmer, measured worse on that
// bench: at emit, each record also appended to its destination's part
// (64 parts written a record at a time between the first stage's table
// lookups lose their lines between writes: emit took five times its
// CPU); at the checkpoint, right after encoding the same range, into
// parts held until the release (3 to 6% more CPU per event than here,
// the split itself no cheaper).
func (w *exWriter[K, T]) splitPlain(from, to int64, parts []*recs[K, T]) {
	for n := from; n < to; {
		c, i := w.slot(n)
		j := min(exChunkLen, i+int(to-n))
		dest, rs := c.dest[i:j], c.recs[i:j]
		off := n
		for k, d := range dest {
			p := parts[d]
			r := &rs[k]
			var it *Rec[K, T]
			p.items, it = grow1(p.items)
			it.Key, it.Val, it.Off, it.h = r.Key, r.Val, off+int64(k), 0
		}
		n += int64(j - i)
	}
}

// newPart is an empty batch part with room for n records.
func (w *exWriter[K, T]) newPart(n int) *recs[K, T] {
	p := &recs[K, T]{stage: w.stage, keep: true}
	p.items, p.pool = w.pools.part(n)
	if w.et {
		p.ts = make([]int64, 0, n)
	}
	return p
}

// runs calls fn with every chunk of the log that holds the records
// numbered from from to to (within lo and seq), its slots i to j of them,
// and the number of slot i. Loops over a chunk's slots in fn cost no call
// per record, as scan's do.
func (w *exWriter[K, T]) runs(from, to int64, fn func(c *exChunk[K, T], i, j int, n int64)) {
	for n := from; n < to; {
		c, i := w.slot(n)
		j := min(exChunkLen, i+int(to-n))
		fn(c, i, j, n)
		n += int64(j - i)
	}
}

// scan calls fn with the slot of every record numbered from from to to
// (within lo and seq).
func (w *exWriter[K, T]) scan(from, to int64, fn func(c *exChunk[K, T], i int)) {
	for n := from; n < to; {
		c, i := w.slot(n)
		j := min(exChunkLen, i+int(to-n))
		for k := i; k < j; k++ {
			fn(c, k)
		}
		n += int64(j - i)
	}
}

// finished reports whether the exchange's partition of this fragment has
// ended: its inputs ended and all it made is released, and with event
// time the watermark they ended with too. A partition that ends counts
// as complete downstream (Fragment.Complete): ended under a watermark
// still held back by the checkpoints, its fragments answered complete
// before their windows had fired.
func (w *exWriter[K, T]) finished() bool {
	return w.rel == w.seq && w.ended() && (!w.et || w.relWM >= w.wm())
}

// ended reports whether the inputs the exchange's records come from
// ended: no more are made.
func (w *exWriter[K, T]) ended() bool {
	for _, ch := range w.ancestors {
		if slices.Contains(w.fr.done[ch], false) {
			return false
		}
	}
	return true
}

// holding reports whether outputs wait to be released or sent.
func (w *exWriter[K, T]) holding() bool { return w.seq != w.rel || w.split != w.rel }

// sentAll reports whether every fragment was sent everything, the end
// included.
func (w *exWriter[K, T]) sentAll() bool {
	if !w.finished() || w.split != w.rel {
		return false
	}
	for i := range w.dests {
		if !w.dests[i].done {
			return false
		}
	}
	return true
}

// released makes the outputs of the checkpoint just durable sendable; with
// lag, those of the checkpoint before it (a standby may restore that one).
func (w *exWriter[K, T]) released(lag bool) {
	mark, markWM := w.mark, w.markWM
	if lag {
		mark, markWM, w.behind, w.behindWM = w.behind, w.behindWM, w.mark, w.markWM
	}
	w.rel, w.relWM = max(w.rel, mark), max(w.relWM, markWM)
}

// resend is fragment d's records again from number from up to what was
// sent: d restored an older checkpoint. A fragment that is not behind gets
// an empty batch at from: it answers its request.
func (w *exWriter[K, T]) resend(d int, from int64) *Batch {
	dd := &w.dests[d]
	if from >= dd.sent {
		b := &Batch{Source: w.ch, Partition: w.fr.id, PrevEnd: from, End: from, Done: dd.done && from == dd.sent}
		if w.et {
			b.EventTime, b.Watermark = true, dd.sentWM
		}
		return b
	}
	lo, hi := max(from, w.lo), min(dd.sent, w.split)
	n := 0
	w.scan(lo, hi, func(c *exChunk[K, T], i int) {
		if c.dest[i] == uint32(d) {
			n++
		}
	})
	b := &Batch{Source: w.ch, Partition: w.fr.id, PrevEnd: from, End: dd.sent, Count: n, Done: dd.done}
	if n > 0 {
		p := w.newPart(n)
		w.runs(lo, hi, func(c *exChunk[K, T], i, j int, n int64) {
			for k := i; k < j; k++ {
				if c.dest[k] == uint32(d) {
					p.items = append(p.items, c.rec(k, n+int64(k-i)))
					if w.et {
						p.ts = append(p.ts, c.ts[k])
					}
				}
			}
		})
		b.parts = []payload{p}
	}
	if w.et {
		b.EventTime, b.Watermark = true, dd.sentWM
	}
	return b
}

// trim notes that fragment d's durable checkpoint covers its records
// numbered below upto, and forgets the log's chunks no fragment needs.
func (w *exWriter[K, T]) trim(d int, upto int64) {
	dd := &w.dests[d]
	if upto <= dd.base {
		return
	}
	dd.base = upto
	i := 0
	for i < len(dd.need) && dd.need[i].to <= upto {
		w.needN -= dd.need[i].n
		i++
	}
	dd.need = append(dd.need[:0], dd.need[i:]...)
	w.forget(w.needed())
}

// needed is the number of the oldest record that a fragment may still be
// sent: the log keeps everything from it on.
func (w *exWriter[K, T]) needed() int64 {
	n := w.split
	for i := range w.dests {
		if nd := w.dests[i].need; len(nd) > 0 {
			n = min(n, nd[0].from)
		}
	}
	return n
}

// forget drops the log's records numbered below n, whole chunks at a time.
func (w *exWriter[K, T]) forget(n int64) {
	if n <= w.lo {
		return
	}
	if w.holes > 0 {
		w.scan(w.lo, n, func(c *exChunk[K, T], i int) {
			if c.dest[i] == noDest {
				w.holes--
			}
		})
	}
	w.lo = n
	drop := min(int(n>>exChunkBits-w.first), len(w.chunks))
	if drop > 0 {
		w.pools.put(w.chunks[:drop])
	}
	clear(w.chunks[:drop])
	w.chunks = w.chunks[drop:]
	w.first = n >> exChunkBits
}

// kept is where fragment d's records begin (its durable checkpoint covers
// those before) and end (what was sent).
func (w *exWriter[K, T]) kept(d int) (base, sent int64) { return w.dests[d].base, w.dests[d].sent }

// made is the number of the next output: every output numbered below it
// was made.
func (w *exWriter[K, T]) made() int64 { return w.seq }

// unreleased reports whether outputs wait for a checkpoint to release them.
func (w *exWriter[K, T]) unreleased() bool { return w.rel < w.seq }

// retained is the number of records kept for downstream fragments: those
// a fragment's durable checkpoint does not cover yet. (The log may hold
// more: a range goes once no fragment needs any record of it.)
func (w *exWriter[K, T]) retained() int { return int(w.seq-w.split) + w.needN }

// An exchange's checkpoint entries live in exchangeNamespace under edge (2
// bytes) and a kind byte: kind 0 holds the sequence number; kind 6, for
// every fragment in order, the number below which its records are
// forgotten (its durable checkpoint covers them: trim), as varints; kind 3
// the records numbered from (8 bytes) on, for every fragment, up to the
// number in the value's head, as a batch part encodes them; kind 5 the same in the compact form
// (exchangecompact.go), which an exchange of integer keys and plain
// structs writes instead. Kinds 1, 2 and 4 are formats before, which a
// restore still reads: kind 1 the records for fragment d (4 bytes)
// numbered from (8 bytes) on; kind 2 the trim point of fragment d (4
// bytes) alone; kind 4 the compact form with every record's number. A
// restore reads entries of any kind; the next checkpoint rewrites those of
// a kind the exchange does not write.
//
// The trim points are one entry, not one per fragment: every fragment
// downstream checkpoints once an interval and moves its trim point, so an
// entry each made a checkpoint of the two-stage bench write 64 tiny
// entries besides its records, each a key for the store to insert.
const exchangeNamespace = math.MaxUint16 - 1

const (
	exSeqEntry    = 0
	exDestEntry   = 1 // the format of one entry per destination
	exTrimEntry   = 2 // the format of one entry per trim point
	exRecordEntry = 3
	exTrimsEntry  = 6
)

func (w *exWriter[K, T]) entryKey(kind byte, from int64) []byte {
	k := binary.BigEndian.AppendUint16(make([]byte, 0, 11), uint16(w.edge))
	k = append(k, kind)
	switch kind {
	case exRecordEntry, exCompactEntry, exDenseEntry:
		k = binary.BigEndian.AppendUint64(k, uint64(from))
	case exTrimEntry:
		k = binary.BigEndian.AppendUint32(k, uint32(from))
	}
	return k
}

// delta writes the records logged since the last checkpoint as one entry,
// deletes the entries no fragment needs any more, and writes the sequence
// number and, if one moved, the trim points.
func (w *exWriter[K, T]) delta(d *Delta) error {
	moved := len(w.legacyTrims) > 0
	for i := range w.dests {
		moved = moved || w.dests[i].base != w.dests[i].baseSaved
	}
	if moved {
		val := make([]byte, 0, 3*len(w.dests))
		for i := range w.dests {
			dd := &w.dests[i]
			val = binary.AppendVarint(val, dd.base)
			dd.baseSaved = dd.base
		}
		d.Puts = append(d.Puts, StateEntry{Namespace: exchangeNamespace, Key: w.entryKey(exTrimsEntry, 0), Value: val})
		for _, i := range w.legacyTrims {
			d.Deletes = append(d.Deletes, StateEntry{Namespace: exchangeNamespace, Key: w.entryKey(exTrimEntry, int64(i))})
		}
		w.trimsSaved, w.legacyTrims = true, nil
	}
	need := w.needed()
	keep := w.spans[:0]
	for _, sp := range w.spans {
		if sp[1] <= need {
			d.Deletes = append(d.Deletes, StateEntry{Namespace: exchangeNamespace, Key: w.entryKey(w.recKind, sp[0])})
			continue
		}
		keep = append(keep, sp)
	}
	w.spans = keep
	from := max(w.saved, w.lo)
	if len(w.legacy) > 0 {
		// Entries of the format before: their records are rewritten in one.
		for _, k := range w.legacy {
			d.Deletes = append(d.Deletes, StateEntry{Namespace: exchangeNamespace, Key: k})
		}
		w.legacy, from = nil, w.lo
	}
	if from < w.seq {
		val, err := w.encodeRange(from, w.seq)
		if err != nil {
			return fmt.Errorf("exchange %d: %w", w.edge, err)
		}
		d.Puts = append(d.Puts, StateEntry{Namespace: exchangeNamespace, Key: w.entryKey(w.recKind, from), Value: val})
		w.spans = append(w.spans, [2]int64{from, w.seq})
	}
	w.saved = w.seq
	w.mark, w.markWM = w.seq, w.wm()
	if w.seq != w.seqSaved {
		d.Puts = append(d.Puts, StateEntry{Namespace: exchangeNamespace, Key: w.entryKey(exSeqEntry, 0),
			Value: binary.AppendVarint(nil, w.seq)})
		w.seqSaved = w.seq
	}
	if w.seqSaved > 0 {
		d.Entries++
	}
	d.Entries += int64(len(w.spans))
	if w.trimsSaved {
		d.Entries++
	}
	return nil
}

// encodeRange is a records entry's value: to, then the records numbered
// from to to as a batch part encodes them (the holes left out).
func (w *exWriter[K, T]) encodeRange(from, to int64) ([]byte, error) {
	n := int(to - from)
	if w.holes > 0 {
		n = 0
		w.scan(from, to, func(c *exChunk[K, T], i int) {
			if c.dest[i] != noDest {
				n++
			}
		})
	}
	// Room for a little more than the last entry's records took: one byte
	// more per record than the buffer holds (counts grow) copied it all.
	// Eight bytes a record before the first entry: the floor of eight
	// that was also applied after it gave a compact entry of 5.5 bytes a
	// record 9, and such buffers were a quarter of what the two-stage
	// bench allocated.
	per := w.recBytes + w.recBytes/8 + 1
	if w.recBytes == 0 {
		per = 8
	}
	val := binary.AppendVarint(make([]byte, 0, 32+n*per), to)
	val = binary.AppendUvarint(val, uint64(w.stage))
	val = binary.AppendUvarint(val, uint64(n))
	if w.compact != nil {
		val = w.compact.encode(w, val, from, to, w.recKind == exCompactEntry || int64(n) != to-from)
		if n > 0 {
			w.recBytes = (len(val) + n - 1) / n
		}
		return val, nil
	}
	var enc recsEncoder
	var err error
	w.runs(from, to, func(c *exChunk[K, T], i, j int, n int64) {
		for k := i; k < j && err == nil; k++ {
			if c.dest[k] == noDest {
				continue
			}
			var ts int64
			if w.et {
				ts = c.ts[k]
			}
			r := c.rec(k, n+int64(k-i))
			val, err = w.codec.appendRec(val, &enc, &r, ts, w.et, false)
		}
	})
	if err != nil {
		return nil, err
	}
	if n > 0 {
		w.recBytes = (len(val) + n - 1) / n
	}
	return val, nil
}

func (w *exWriter[K, T]) restore(key, val []byte) error {
	if len(key) == 3 && key[2] == exSeqEntry {
		n, k := binary.Varint(val)
		if k <= 0 || k != len(val) || n < 0 {
			return fmt.Errorf("exchange %d: malformed sequence number", w.edge)
		}
		w.seq, w.saved, w.seqSaved, w.mark, w.rel = n, n, n, n, n
		w.scanned = false
		return nil
	}
	if len(key) == 7 && key[2] == exTrimEntry {
		d := binary.BigEndian.Uint32(key[3:])
		base, k := binary.Varint(val)
		if d >= uint32(len(w.dests)) || k <= 0 || k != len(val) || base < 0 {
			return fmt.Errorf("exchange %d: malformed trim point", w.edge)
		}
		w.dests[d].base, w.dests[d].baseSaved = base, base
		w.legacyTrims = append(w.legacyTrims, int(d))
		return nil
	}
	if len(key) == 3 && key[2] == exTrimsEntry {
		b := val
		for i := range w.dests {
			base, k := binary.Varint(b)
			if k <= 0 || base < 0 {
				return fmt.Errorf("exchange %d: malformed trim point of fragment %d", w.edge, i)
			}
			w.dests[i].base, w.dests[i].baseSaved = base, base
			b = b[k:]
		}
		if len(b) != 0 {
			return fmt.Errorf("exchange %d: trim points for more than %d fragments (the flow changed?)", w.edge, len(w.dests))
		}
		w.trimsSaved = true
		return nil
	}
	var from int64
	var kind byte
	if len(key) > 2 {
		kind = key[2]
	}
	switch {
	case len(key) == 11 && (kind == exRecordEntry || kind == exCompactEntry || kind == exDenseEntry):
		from = int64(binary.BigEndian.Uint64(key[3:]))
	case len(key) == 15 && kind == exDestEntry:
		from = int64(binary.BigEndian.Uint64(key[7:]))
	default:
		return fmt.Errorf("exchange %d: malformed entry key", w.edge)
	}
	to, k := binary.Varint(val)
	if k <= 0 || from < 0 || to < from || to > w.seq {
		return fmt.Errorf("exchange %d: malformed records entry [%d, %d) (of %d records made)", w.edge, from, to, w.seq)
	}
	r := &batchReader{b: val[k:], kind: "exchange entry"}
	stage, n := r.uvarint("stage"), r.uvarint("records")
	if r.err != nil || stage != uint64(w.stage) || n > maxBatchRecords || n > uint64(to-from) {
		return fmt.Errorf("exchange %d: malformed records entry", w.edge)
	}
	// The entries of one checkpoint are of one kind; a restore follows
	// them in the order of their keys, which is the order of their numbers
	// within a kind.
	if w.restKind != 0 && w.restKind != kind {
		return fmt.Errorf("exchange %d: records entries mix formats", w.edge)
	}
	w.restKind = kind
	if kind != exDestEntry && len(w.rest) > 0 && from < w.rest[len(w.rest)-1].rec.Off+1 {
		return fmt.Errorf("exchange %d: records entries overlap", w.edge)
	}
	at := len(w.rest)
	if kind == exCompactEntry || kind == exDenseEntry {
		if w.compact == nil {
			return fmt.Errorf("exchange %d: a compact records entry, which this exchange's codecs cannot read", w.edge)
		}
		numbered := kind == exCompactEntry || int64(n) != to-from
		err := w.compact.decode(r.b, int(n), from, to, numbered, func(rec Rec[K, T]) {
			w.rest = append(w.rest, restoredRec[K, T]{rec: rec})
		})
		if err != nil {
			return fmt.Errorf("exchange %d: %w", w.edge, err)
		}
	} else {
		pl, rest, err := w.codec.decode(r.b, int(n), w.et, nil)
		if err != nil {
			return fmt.Errorf("exchange %d: %w", w.edge, err)
		}
		if len(rest) != 0 {
			return fmt.Errorf("exchange %d: %d trailing bytes in a records entry", w.edge, len(rest))
		}
		p := pl.(*recs[K, T])
		for i, it := range p.items {
			var ts int64
			if w.et {
				ts = p.ts[i]
			}
			w.rest = append(w.rest, restoredRec[K, T]{rec: it, ts: ts})
		}
		p.release()
	}
	got := w.rest[at:]
	for i := range got {
		if off := got[i].rec.Off; off < from || off >= to || (i > 0 && off <= got[i-1].rec.Off) {
			return fmt.Errorf("exchange %d: record numbered %d in a records entry [%d, %d)", w.edge, off, from, to)
		}
	}
	switch {
	case kind == exDestEntry:
		d := binary.BigEndian.Uint32(key[3:])
		if d >= uint32(len(w.dests)) {
			return fmt.Errorf("exchange %d: records for fragment %d of %d", w.edge, d, len(w.dests))
		}
		for i := range got {
			if f := shard.Fragment(w.hash(got[i].rec.Key), len(w.dests)); f != int(d) {
				return fmt.Errorf("exchange %d: a record for fragment %d goes to %d (the flow changed?)", w.edge, d, f)
			}
		}
		w.legacy = append(w.legacy, slices.Clone(key))
	case kind != w.recKind:
		// Rewritten in the exchange's own kind by the next checkpoint.
		w.legacy = append(w.legacy, slices.Clone(key))
	default:
		w.spans = append(w.spans, [2]int64{from, to})
	}
	return nil
}

// restored follows a restore: the log is rebuilt from the entries read,
// everything restored is durable, and every fragment is sent a batch that
// tells it where this one is, and asks for what it lacks (a gap).
func (w *exWriter[K, T]) restored() {
	if len(w.legacy) > 0 {
		// One entry per destination: the records interleave.
		slices.SortFunc(w.rest, func(a, b restoredRec[K, T]) int { return cmp.Compare(a.rec.Off, b.rec.Off) })
	}
	w.chunks, w.holes, w.lo = nil, 0, w.seq
	if len(w.rest) > 0 {
		w.lo = w.rest[0].rec.Off
	}
	w.first = w.lo >> exChunkBits
	n := w.lo
	for _, r := range append(w.rest, restoredRec[K, T]{rec: Rec[K, T]{Off: w.seq}}) {
		for ; n < r.rec.Off; n++ {
			c, i := w.slot(n)
			c.dest[i] = noDest
			w.holes++
		}
		if n == w.seq || r.rec.Off < n {
			continue // the end; or a record restored twice
		}
		c, i := w.slot(n)
		c.recs[i] = exRec[K, T]{Key: r.rec.Key, Val: r.rec.Val}
		c.dest[i] = uint32(shard.Fragment(w.hash(r.rec.Key), len(w.dests)))
		if w.et {
			c.ts[i] = r.ts
		}
		n++
	}
	w.rest, w.restKind = nil, 0
	w.scanned, w.split = false, w.seq
	w.mark, w.rel, w.behind = w.seq, w.seq, w.seq
	w.markWM, w.relWM, w.behindWM = w.wm(), w.wm(), w.wm()
	clear(w.counts)
	w.runs(w.lo, w.seq, func(c *exChunk[K, T], i, j int, n int64) {
		for k := i; k < j; k++ {
			if d := c.dest[k]; d != noDest && n+int64(k-i) >= w.dests[d].base {
				w.counts[d]++
			}
		}
	})
	w.needN = 0
	for i := range w.dests {
		dd := &w.dests[i]
		dd.sent, dd.force = w.seq, true
		dd.sentWM = w.relWM
		dd.need = dd.need[:0]
		if n := w.counts[i]; n > 0 {
			dd.need = append(dd.need, exRange{w.lo, w.seq, n})
			w.needN += n
		}
	}
}
