package flows

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

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
//   - the upstream keeps its outputs, per downstream fragment, until that
//     fragment's durable checkpoint covers them (Trim), and writes the ones
//     not yet covered into its own checkpoints, so a downstream fragment
//     restored to an older checkpoint is sent them again (Resend) — from
//     memory, or from the upstream's checkpoint if the upstream restarted
//     too — while nobody else stops or rolls back.
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
}

// exWriter is fragment fr's output on one exchange.
type exWriter[K comparable, T any] struct {
	edge, stage int
	ch          int
	from        int // the channel whose watermark the re-keyed stream follows
	et          bool
	fr          *Fragment
	codec       *recsCodec[K, T]
	hash        func(K) uint64
	seq         int64 // the number of the next output
	dests       []exDest[K, T]
	saved       int64 // outputs before it are in checkpoints
	seqSaved    int64 // the sequence number last written to a checkpoint
	recBytes    int   // about how many bytes a record takes encoded, to size a checkpoint entry at once
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
	// nkept is the number of records in the dests' logs (retained).
	nkept int
	// After a scan that took every batch due, no fragment is due again
	// until what was released, its watermark or the end changes, or a
	// restore forces a batch to every fragment: scanned says so, with
	// what the scan saw; a fragment asks it for every batch it applies.
	scanned               bool
	scannedRel, scannedWM int64
	scannedFinished       bool
}

// exDest is what an upstream fragment keeps for one downstream fragment.
type exDest[K comparable, T any] struct {
	log    []Rec[K, T] // records for it numbered base and up, in order
	ts     []int64     // their event times, with event time
	base   int64       // records numbered below are covered by its durable checkpoint
	sent   int64       // End of the last batch sent
	sentAt int         // index in log of the first record not sent
	sentWM int64
	force  bool       // send a batch even if nothing changed (after a restore)
	done   bool       // its last batch said the partition ended
	spans  [][2]int64 // checkpoint entries holding its records: [from, to)
	// baseSaved is the base the checkpoint holds: a restored fragment
	// knows which records it no longer has (Kept), so a fragment
	// downstream that asks for them learns it restored an older copy
	// instead of being sent the records after them as if they followed.
	baseSaved int64
}

func newExWriter[K comparable, T any](fr *Fragment, edge int, codec *recsCodec[K, T], hash func(K) uint64) *exWriter[K, T] {
	p := fr.plan
	e := p.f.edges[edge]
	w := &exWriter[K, T]{edge: edge, stage: e.stage, ch: p.edgeChannel(edge), from: p.stageChannel(e.from),
		fr: fr, codec: codec, hash: hash, dests: make([]exDest[K, T], p.f.fragments)}
	w.et = p.channelET(w.ch)
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

// emit numbers a record and keeps it for its fragment.
func (w *exWriter[K, T]) emit(k K, v T) {
	n := w.seq
	w.seq++
	d := &w.dests[shard.Fragment(w.hash(k), len(w.dests))]
	if n < d.base {
		return // its fragment has it in a durable checkpoint already (a replay)
	}
	d.log = append(d.log, Rec[K, T]{Key: k, Val: v, Off: n})
	w.nkept++
	if w.et {
		d.ts = append(d.ts, w.fr.cur.TS)
	}
}

func (w *exWriter[K, T]) wm() int64 { return w.fr.wms[w.from].wm }

// releasedAt is the index in dd's log of the first record not released.
func (w *exWriter[K, T]) releasedAt(dd *exDest[K, T]) int {
	n := dd.sentAt
	for n < len(dd.log) && dd.log[n].Off < w.rel {
		n++
	}
	return n
}

// mayBeDue reports whether a fragment may be due a batch: not if nothing
// changed since the last scan (takeDue).
func (w *exWriter[K, T]) mayBeDue() bool {
	return !w.scanned || w.rel != w.scannedRel || w.relWM != w.scannedWM || w.finished() != w.scannedFinished
}

// takeDue hands fn the batch due to each fragment.
func (w *exWriter[K, T]) takeDue(fn func(dest int, b *Batch)) {
	if !w.mayBeDue() {
		return
	}
	for d := range w.dests {
		if w.due(d) {
			fn(d, w.take(d))
		}
	}
	w.scanned, w.scannedRel, w.scannedWM, w.scannedFinished = true, w.rel, w.relWM, w.finished()
}

func (w *exWriter[K, T]) due(d int) bool {
	dd := &w.dests[d]
	return dd.force || (dd.sentAt < len(dd.log) && dd.log[dd.sentAt].Off < w.rel) || (w.et && dd.sentWM != w.relWM) ||
		dd.done != w.finished()
}

// finished reports whether the exchange's partition of this fragment has
// ended: its inputs ended and all it made is released.
func (w *exWriter[K, T]) finished() bool {
	if w.rel != w.seq {
		return false
	}
	for _, ch := range w.ancestors {
		if slices.Contains(w.fr.done[ch], false) {
			return false
		}
	}
	return true
}

// holding reports whether outputs wait to be released or sent.
func (w *exWriter[K, T]) holding() bool {
	if w.seq != w.rel {
		return true
	}
	for i := range w.dests {
		if dd := &w.dests[i]; dd.sentAt < len(dd.log) {
			return true
		}
	}
	return false
}

// sentAll reports whether every fragment was sent everything, the end
// included.
func (w *exWriter[K, T]) sentAll() bool {
	if !w.finished() {
		return false
	}
	for i := range w.dests {
		if !w.dests[i].done {
			return false
		}
	}
	return true
}

// take is the batch for fragment d: its records released since the last
// batch, and the watermark of their checkpoint.
func (w *exWriter[K, T]) take(d int) *Batch {
	dd := &w.dests[d]
	n := w.releasedAt(dd)
	end := max(w.rel, dd.sent)
	b := &Batch{Source: w.ch, Partition: w.fr.id, PrevEnd: dd.sent, End: end, Count: n - dd.sentAt}
	if b.Count > 0 {
		b.parts = []payload{w.part(dd, dd.sentAt, n)}
	}
	if w.et {
		b.EventTime, b.Watermark = true, w.relWM
		dd.sentWM = b.Watermark
	}
	b.Done = n == len(dd.log) && w.finished()
	dd.sent, dd.sentAt, dd.force, dd.done = end, n, false, b.Done
	return b
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

// part is the records log[i:j] of dd as a batch part. The batch shares the
// log's array: records are never changed once logged.
func (w *exWriter[K, T]) part(dd *exDest[K, T], i, j int) *recs[K, T] {
	p := &recs[K, T]{stage: w.stage, items: dd.log[i:j:j]}
	if w.et {
		p.ts = dd.ts[i:j:j]
	}
	return p
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
	i, _ := slices.BinarySearchFunc(dd.log[:dd.sentAt], from, func(r Rec[K, T], off int64) int {
		switch {
		case r.Off < off:
			return -1
		case r.Off > off:
			return 1
		}
		return 0
	})
	b := &Batch{Source: w.ch, Partition: w.fr.id, PrevEnd: from, End: dd.sent, Count: dd.sentAt - i, Done: dd.done}
	if b.Count > 0 {
		b.parts = []payload{w.part(dd, i, dd.sentAt)}
	}
	if w.et {
		b.EventTime, b.Watermark = true, dd.sentWM
	}
	return b
}

// trim forgets fragment d's records numbered below upto: its durable
// checkpoint covers them.
func (w *exWriter[K, T]) trim(d int, upto int64) {
	dd := &w.dests[d]
	if upto <= dd.base {
		return
	}
	dd.base = upto
	i := 0
	for i < len(dd.log) && dd.log[i].Off < upto {
		i++
	}
	if i == 0 {
		return
	}
	w.nkept -= i
	clear(dd.log[:i]) // the batches sent keep their own view
	dd.log = dd.log[i:]
	if w.et {
		dd.ts = dd.ts[i:]
	}
	dd.sentAt = max(dd.sentAt-i, 0)
	if len(dd.log) == 0 {
		// A new array, not the tail of the old one, sized for about as
		// many records as this trim forgot: growing from nil again each
		// interval copied every record several times.
		dd.log = make([]Rec[K, T], 0, i)
		if w.et {
			dd.ts = make([]int64, 0, i)
		} else {
			dd.ts = nil
		}
	}
}

// kept is where fragment d's records begin (its durable checkpoint covers
// those before) and end (what was sent).
func (w *exWriter[K, T]) kept(d int) (base, sent int64) { return w.dests[d].base, w.dests[d].sent }

// made is the number of the next output: every output numbered below it
// was made.
func (w *exWriter[K, T]) made() int64 { return w.seq }

// unreleased reports whether outputs wait for a checkpoint to release them.
func (w *exWriter[K, T]) unreleased() bool { return w.rel < w.seq }

// retained is the number of records kept for downstream fragments.
func (w *exWriter[K, T]) retained() int { return w.nkept }

// An exchange's checkpoint entries live in exchangeNamespace under
// edge (2 bytes) and a kind byte: kind 0 holds the sequence number; kind 1
// the records for fragment d (4 bytes) numbered from (8 bytes) on, up to
// the number in the value's head; kind 2 the number below which fragment
// d's records are forgotten (its durable checkpoint covers them: trim).
const exchangeNamespace = math.MaxUint16 - 1

func (w *exWriter[K, T]) entryKey(kind byte, d int, from int64) []byte {
	k := binary.BigEndian.AppendUint16(nil, uint16(w.edge))
	k = append(k, kind)
	switch kind {
	case 1:
		k = binary.BigEndian.AppendUint32(k, uint32(d))
		k = binary.BigEndian.AppendUint64(k, uint64(from))
	case 2:
		k = binary.BigEndian.AppendUint32(k, uint32(d))
	}
	return k
}

// delta writes the records logged since the last checkpoint that no
// downstream checkpoint covers yet, deletes the entries now covered, and
// writes the sequence number and the trim points that moved.
func (w *exWriter[K, T]) delta(d *Delta) error {
	for i := range w.dests {
		dd := &w.dests[i]
		if dd.base != dd.baseSaved {
			d.Puts = append(d.Puts, StateEntry{Namespace: exchangeNamespace, Key: w.entryKey(2, i, 0),
				Value: binary.AppendVarint(nil, dd.base)})
			dd.baseSaved = dd.base
		}
		keep := dd.spans[:0]
		for _, sp := range dd.spans {
			if sp[1] <= dd.base {
				d.Deletes = append(d.Deletes, StateEntry{Namespace: exchangeNamespace, Key: w.entryKey(1, i, sp[0])})
				continue
			}
			keep = append(keep, sp)
		}
		dd.spans = keep
		from := max(w.saved, dd.base)
		j, _ := slices.BinarySearchFunc(dd.log, from, func(r Rec[K, T], off int64) int {
			if r.Off < off {
				return -1
			}
			if r.Off > off {
				return 1
			}
			return 0
		})
		if j == len(dd.log) || from >= w.seq {
			continue
		}
		val := binary.AppendVarint(make([]byte, 0, 32+(len(dd.log)-j)*max(w.recBytes, 8)), w.seq)
		var err error
		if val, err = w.part(dd, j, len(dd.log)).encode(w.fr.plan, val, w.et); err != nil {
			return fmt.Errorf("exchange %d: %w", w.edge, err)
		}
		w.recBytes = (len(val) + len(dd.log) - j - 1) / (len(dd.log) - j)
		d.Puts = append(d.Puts, StateEntry{Namespace: exchangeNamespace, Key: w.entryKey(1, i, from), Value: val})
		dd.spans = append(dd.spans, [2]int64{from, w.seq})
	}
	w.saved = w.seq
	w.mark, w.markWM = w.seq, w.wm()
	if w.seq != w.seqSaved {
		d.Puts = append(d.Puts, StateEntry{Namespace: exchangeNamespace, Key: w.entryKey(0, 0, 0),
			Value: binary.AppendVarint(nil, w.seq)})
		w.seqSaved = w.seq
	}
	if w.seqSaved > 0 {
		d.Entries++
	}
	for i := range w.dests {
		d.Entries += int64(len(w.dests[i].spans))
		if w.dests[i].baseSaved > 0 {
			d.Entries++
		}
	}
	return nil
}

func (w *exWriter[K, T]) restore(key, val []byte) error {
	if len(key) == 3 && key[2] == 0 {
		n, k := binary.Varint(val)
		if k <= 0 || k != len(val) || n < 0 {
			return fmt.Errorf("exchange %d: malformed sequence number", w.edge)
		}
		w.seq, w.saved, w.seqSaved, w.mark, w.rel = n, n, n, n, n
		w.scanned = false
		return nil
	}
	if len(key) == 7 && key[2] == 2 {
		// Keys sort the trim point of fragment d after its records.
		d := int(binary.BigEndian.Uint32(key[3:]))
		base, k := binary.Varint(val)
		if d >= len(w.dests) || k <= 0 || k != len(val) || base < 0 {
			return fmt.Errorf("exchange %d: malformed trim point", w.edge)
		}
		w.trim(d, base)
		w.dests[d].baseSaved = base
		return nil
	}
	if len(key) != 15 || key[2] != 1 {
		return fmt.Errorf("exchange %d: malformed entry key", w.edge)
	}
	d := int(binary.BigEndian.Uint32(key[3:]))
	from := int64(binary.BigEndian.Uint64(key[7:]))
	if d >= len(w.dests) {
		return fmt.Errorf("exchange %d: records for fragment %d of %d", w.edge, d, len(w.dests))
	}
	to, k := binary.Varint(val)
	if k <= 0 || to < from {
		return fmt.Errorf("exchange %d: malformed records entry", w.edge)
	}
	r := &batchReader{b: val[k:], kind: "exchange entry"}
	stage, n := r.uvarint("stage"), r.uvarint("records")
	if r.err != nil || stage != uint64(w.stage) || n > maxBatchRecords {
		return fmt.Errorf("exchange %d: malformed records entry", w.edge)
	}
	pl, rest, err := w.codec.decode(r.b, int(n), w.et, nil)
	if err != nil {
		return fmt.Errorf("exchange %d: %w", w.edge, err)
	}
	if len(rest) != 0 {
		return fmt.Errorf("exchange %d: %d trailing bytes in a records entry", w.edge, len(rest))
	}
	p := pl.(*recs[K, T])
	dd := &w.dests[d]
	if len(dd.log) > 0 && len(p.items) > 0 && p.items[0].Off <= dd.log[len(dd.log)-1].Off {
		return fmt.Errorf("exchange %d: records entries out of order", w.edge)
	}
	dd.log = append(dd.log, p.items...)
	w.nkept += len(p.items)
	if w.et {
		dd.ts = append(dd.ts, p.ts...)
	}
	dd.spans = append(dd.spans, [2]int64{from, to})
	return nil
}

// restored follows a restore: everything restored is durable, and every
// fragment is sent a batch that tells it where this one is, and asks for
// what it lacks (a gap).
func (w *exWriter[K, T]) restored() {
	w.scanned = false
	w.mark, w.rel, w.behind = w.seq, w.seq, w.seq
	w.markWM, w.relWM, w.behindWM = w.wm(), w.wm(), w.wm()
	for i := range w.dests {
		dd := &w.dests[i]
		dd.sent, dd.sentAt, dd.force = w.seq, len(dd.log), true
		dd.sentWM = w.relWM
	}
}
