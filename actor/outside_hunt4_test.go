package actor

// Keys that are not strings, written as an outside user would: sales
// summed per shop (int64 keys, negative ones among them) in an Aggregate
// with a state codec of its own, its updates re-keyed by a struct key
// (region and store) with a KeyCodec of its own whose order is not the
// printed form's ("eu-10" after "eu-9"), folded by an Aggregate that
// panics on poisoned updates, and its updates re-keyed again by an int
// tier and counted. Every view is read by key (OpKey, the key as the
// codec prints it), in pages in key order (after, limit), by prefix and
// by top, and compared with a plain Go model; the engine crashes right
// after a checkpoint, with input applied since its last one, and right
// as the input ends, and is stopped and started again on the same store.

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/recovery"
	"github.com/tessera-streams/tessera/splice"
)

type o4Sale struct {
	Seq    int64
	Shop   int64
	Amount int64
}

// o4Tot is a shop's running total and the sale that made it.
type o4Tot struct{ N, Sum, LastSeq, LastAmt int64 }

// String marks the sale's number so that a dead letter's printed value
// names it.
func (t o4Tot) String() string {
	return fmt.Sprintf("tot(n=%d sum=%d sale=#%d# amount=%d)", t.N, t.Sum, t.LastSeq, t.LastAmt)
}

type o4Loc struct {
	Region string
	Store  int
}

type o4LocAcc struct{ Updates, Total, MaxShop int64 }

var o4Regions = []string{"eu", "us", "ap", "sa"}

func o4LocOf(shop int64) o4Loc {
	a := shop
	if a < 0 {
		a = -a
	}
	return o4Loc{Region: o4Regions[((shop%4)+4)%4], Store: int(a % 13)}
}

func o4Tier(l o4Loc) int { return l.Store%5 - 2 }

// o4Poisoned: the second stage's fold panics on the updates these sales make.
func o4Poisoned(seq int64) bool { return seq%29 == 0 }

// o4TotCodec is a state codec: a version byte and four varints.
type o4TotCodec struct{}

func (o4TotCodec) Append(dst []byte, v o4Tot) ([]byte, error) {
	dst = append(dst, 0x7)
	for _, x := range []int64{v.N, v.Sum, v.LastSeq, v.LastAmt} {
		dst = binary.AppendVarint(dst, x)
	}
	return dst, nil
}

func (o4TotCodec) Decode(b []byte) (o4Tot, error) {
	if len(b) == 0 || b[0] != 0x7 {
		return o4Tot{}, errors.New("o4Tot: bad version")
	}
	b = b[1:]
	var xs [4]int64
	for i := range xs {
		x, n := binary.Varint(b)
		if n <= 0 {
			return o4Tot{}, fmt.Errorf("o4Tot: field %d malformed", i)
		}
		xs[i], b = x, b[n:]
	}
	if len(b) != 0 {
		return o4Tot{}, errors.New("o4Tot: trailing bytes")
	}
	return o4Tot{xs[0], xs[1], xs[2], xs[3]}, nil
}

// o4LocAccCodec is a state codec: three fixed-width words.
type o4LocAccCodec struct{}

func (o4LocAccCodec) Append(dst []byte, v o4LocAcc) ([]byte, error) {
	for _, x := range []int64{v.Updates, v.Total, v.MaxShop} {
		dst = binary.BigEndian.AppendUint64(dst, uint64(x))
	}
	return dst, nil
}

func (o4LocAccCodec) Decode(b []byte) (o4LocAcc, error) {
	if len(b) != 24 {
		return o4LocAcc{}, fmt.Errorf("o4LocAcc: %d bytes, want 24", len(b))
	}
	return o4LocAcc{int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[8:])), int64(binary.BigEndian.Uint64(b[16:]))}, nil
}

// o4LocCodec is a key codec: "eu-10", ordered by region, then by store
// as a number.
type o4LocCodec struct{}

func (o4LocCodec) Append(dst []byte, v o4Loc) ([]byte, error) {
	dst = binary.AppendUvarint(dst, uint64(len(v.Region)))
	dst = append(dst, v.Region...)
	return binary.AppendVarint(dst, int64(v.Store)), nil
}

func (o4LocCodec) Decode(b []byte) (o4Loc, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || uint64(len(b)-k) < n {
		return o4Loc{}, errors.New("o4Loc: bad region")
	}
	region := string(b[k : k+int(n)])
	b = b[k+int(n):]
	s, k := binary.Varint(b)
	if k <= 0 || k != len(b) {
		return o4Loc{}, errors.New("o4Loc: bad store")
	}
	return o4Loc{Region: region, Store: int(s)}, nil
}

func (o4LocCodec) Format(k o4Loc) string { return fmt.Sprintf("%s-%d", k.Region, k.Store) }

func (o4LocCodec) Parse(s string) (o4Loc, error) {
	i := strings.LastIndexByte(s, '-')
	if i <= 0 {
		return o4Loc{}, fmt.Errorf("o4Loc %q: want region-store", s)
	}
	n, err := strconv.Atoi(s[i+1:])
	if err != nil {
		return o4Loc{}, fmt.Errorf("o4Loc %q: %w", s, err)
	}
	return o4Loc{Region: s[:i], Store: n}, nil
}

func (o4LocCodec) Compare(a, b o4Loc) int {
	if c := cmp.Compare(a.Region, b.Region); c != 0 {
		return c
	}
	return cmp.Compare(a.Store, b.Store)
}

// o4View is a keyed view's model: values by printed key, and the keys in
// the codec's order.
type o4View struct {
	vals  map[string]any
	order []string
	score func(any) float64
}

// o4Entries is a keyed view's entries (printed keys, in the answer's
// order), or an error while a fragment restores.
func o4Entries(e *Engine, view string, q splice.Query) (splice.Result, error) {
	return splice.Evaluate(context.Background(), e, splice.Request{View: view, Op: splice.OpEntries, Query: q})
}

// o4Diff compares a view with its model: every entry, pages of three in
// key order, and (if full) a prefix, top answers and each key by OpKey.
func o4Diff(e *Engine, view string, m o4View, full bool, prefixes []string) string {
	res, err := o4Entries(e, view, splice.Query{Limit: 100_000})
	if err != nil {
		return err.Error()
	}
	got := map[string]any{}
	var order []string
	for _, en := range res.Entries {
		got[en.Key] = en.Value
		order = append(order, en.Key)
	}
	if d := o2Diff(got, m.vals, nil); d != "" {
		return view + ": " + d
	}
	if fmt.Sprint(order) != fmt.Sprint(m.order) {
		return fmt.Sprintf("%s: key order %v, want %v", view, order, m.order)
	}
	if !full {
		return ""
	}
	// Pages of three, each after the last key of the one before.
	var paged []string
	q := splice.Query{Limit: 3}
	for page := 0; ; page++ {
		res, err := o4Entries(e, view, q)
		if err != nil {
			return fmt.Sprintf("%s page %d: %v", view, page, err)
		}
		for _, en := range res.Entries {
			paged = append(paged, en.Key)
			if en.Value != m.vals[en.Key] {
				return fmt.Sprintf("%s page %d: %s = %v, want %v", view, page, en.Key, en.Value, m.vals[en.Key])
			}
		}
		if wantMore := len(paged) < len(m.order); res.More != wantMore {
			return fmt.Sprintf("%s page %d (after %q): More %v after %d of %d keys", view, page, q.After, res.More, len(paged), len(m.order))
		}
		if !res.More || len(res.Entries) == 0 || page > len(m.order) {
			break
		}
		q.After, q.HasAfter = res.Entries[len(res.Entries)-1].Key, true
	}
	if fmt.Sprint(paged) != fmt.Sprint(m.order) {
		return fmt.Sprintf("%s: pages of 3 give %v, want %v", view, paged, m.order)
	}
	// Prefixes of the printed form, in key order.
	for _, p := range prefixes {
		res, err := o4Entries(e, view, splice.Query{Limit: 1000, Prefix: p})
		if err != nil {
			return fmt.Sprintf("%s prefix %q: %v", view, p, err)
		}
		var gotP, wantP []string
		for _, en := range res.Entries {
			gotP = append(gotP, en.Key)
		}
		for _, k := range m.order {
			if strings.HasPrefix(k, p) {
				wantP = append(wantP, k)
			}
		}
		if fmt.Sprint(gotP) != fmt.Sprint(wantP) {
			return fmt.Sprintf("%s prefix %q: %v, want %v", view, p, gotP, wantP)
		}
	}
	// Top 5: the five best scores, each entry with its key's value
	// (whichever of tied keys the engine picks).
	const top = 5
	res, err = o4Entries(e, view, splice.Query{Top: top, Limit: top})
	if err != nil {
		return fmt.Sprintf("%s top: %v", view, err)
	}
	var scores []float64
	for _, k := range m.order {
		scores = append(scores, m.score(m.vals[k]))
	}
	sort.Sort(sort.Reverse(sort.Float64Slice(scores)))
	scores = scores[:min(top, len(scores))]
	var gotScores []float64
	seen := map[string]bool{}
	for _, en := range res.Entries {
		if seen[en.Key] || en.Value != m.vals[en.Key] || en.Score != m.score(m.vals[en.Key]) {
			return fmt.Sprintf("%s top: entry %s = %v (score %v), want %v (score %v), once", view, en.Key, en.Value, en.Score, m.vals[en.Key], m.score(m.vals[en.Key]))
		}
		seen[en.Key] = true
		gotScores = append(gotScores, en.Score)
	}
	if fmt.Sprint(gotScores) != fmt.Sprint(scores) {
		return fmt.Sprintf("%s top %d: scores %v, want %v", view, top, gotScores, scores)
	}
	// Each key by itself.
	for _, k := range m.order {
		res, err := splice.Evaluate(context.Background(), e, splice.Request{View: view, Op: splice.OpKey, Key: k})
		if err != nil {
			return fmt.Sprintf("%s key %s: %v", view, k, err)
		}
		if len(res.Entries) != 1 || res.Entries[0].Key != k || res.Entries[0].Value != m.vals[k] {
			return fmt.Sprintf("%s key %s: %+v, want %v", view, k, res.Entries, m.vals[k])
		}
	}
	return ""
}

// o4Model is the flow's views from the sales pushed, as the docs say:
// each shop's sales are in one partition, so its Aggregate sees them in
// push order ("in source order per partition"); the second stage folds
// every update but the poisoned ones ("after a few attempts the event is
// skipped and dead-lettered"), the third counts the second's updates.
type o4Model struct {
	shops map[int64]o4Tot
	locs  map[o4Loc]o4LocAcc
	tiers map[int]int64
	dead  map[int64]bool // poisoned sales
}

func newO4Model() *o4Model {
	return &o4Model{shops: map[int64]o4Tot{}, locs: map[o4Loc]o4LocAcc{}, tiers: map[int]int64{}, dead: map[int64]bool{}}
}

func (m *o4Model) apply(s o4Sale) {
	t := m.shops[s.Shop]
	t = o4Tot{t.N + 1, t.Sum + s.Amount, s.Seq, s.Amount}
	m.shops[s.Shop] = t
	if o4Poisoned(s.Seq) {
		m.dead[s.Seq] = true
		return
	}
	l := o4LocOf(s.Shop)
	a := m.locs[l]
	m.locs[l] = o4LocAcc{a.Updates + 1, a.Total + s.Amount, max(a.MaxShop, t.Sum)}
	m.tiers[o4Tier(l)]++
}

func (m *o4Model) views() (shops, locs, tiers o4View) {
	shops = o4View{vals: map[string]any{}, score: func(v any) float64 { return float64(v.(o4Tot).Sum) }}
	var sk []int64
	for k, v := range m.shops {
		shops.vals[strconv.FormatInt(k, 10)] = v
		sk = append(sk, k)
	}
	sort.Slice(sk, func(i, j int) bool { return sk[i] < sk[j] })
	for _, k := range sk {
		shops.order = append(shops.order, strconv.FormatInt(k, 10))
	}
	locs = o4View{vals: map[string]any{}, score: func(v any) float64 { return float64(v.(o4LocAcc).Total) }}
	var lk []o4Loc
	for k, v := range m.locs {
		locs.vals[o4LocCodec{}.Format(k)] = v
		lk = append(lk, k)
	}
	sort.Slice(lk, func(i, j int) bool { return o4LocCodec{}.Compare(lk[i], lk[j]) < 0 })
	for _, k := range lk {
		locs.order = append(locs.order, o4LocCodec{}.Format(k))
	}
	tiers = o4View{vals: map[string]any{}, score: func(v any) float64 { return float64(v.(int64)) }}
	var tk []int
	for k, v := range m.tiers {
		tiers.vals[strconv.Itoa(k)] = v
		tk = append(tk, k)
	}
	sort.Ints(tk)
	for _, k := range tk {
		tiers.order = append(tiers.order, strconv.Itoa(k))
	}
	return shops, locs, tiers
}

func TestEngineOutsideHunt4CodecKeysThroughTwoExchanges(t *testing.T) {
	const parts = 3
	in := flowstest.NewInput[o4Sale](parts)
	shopUpdates := newOESink[flows.KV[int64, o4Tot]]()
	locUpdates := newOESink[flows.KV[o4Loc, o4LocAcc]]()
	build := func() *flows.Flow {
		f := flows.New("hunt4-codecs", flows.WithFragments(8))
		sales := flows.From(f, "sales", flows.Source[o4Sale](in))
		byShop := flows.KeyBy(sales, func(s o4Sale) int64 { return s.Shop })
		shops := flows.Aggregate(byShop, func() o4Tot { return o4Tot{} }, func(t o4Tot, s o4Sale) o4Tot {
			return o4Tot{t.N + 1, t.Sum + s.Amount, s.Seq, s.Amount}
		}, flows.WithStateCodec[o4Tot](o4TotCodec{})).View("shops", flows.ScoreBy(func(t o4Tot) float64 { return float64(t.Sum) }))
		flows.To(shops.Updates(), flows.Sink[flows.KV[int64, o4Tot]](shopUpdates))
		byLoc := flows.KeyBy(shops.Updates(), func(kv flows.KV[int64, o4Tot]) o4Loc { return o4LocOf(kv.Key) },
			flows.WithKeyCodec[o4Loc](o4LocCodec{}))
		locs := flows.Aggregate(byLoc, func() o4LocAcc { return o4LocAcc{} }, func(a o4LocAcc, kv flows.KV[int64, o4Tot]) o4LocAcc {
			if o4Poisoned(kv.Value.LastSeq) {
				panic(fmt.Sprintf("poisoned sale %d", kv.Value.LastSeq))
			}
			return o4LocAcc{a.Updates + 1, a.Total + kv.Value.LastAmt, max(a.MaxShop, kv.Value.Sum)}
		}, flows.WithStateCodec[o4LocAcc](o4LocAccCodec{})).View("locs", flows.ScoreBy(func(a o4LocAcc) float64 { return float64(a.Total) }))
		flows.To(locs.Updates(), flows.Sink[flows.KV[o4Loc, o4LocAcc]](locUpdates), flows.OnCheckpoint())
		byTier := flows.KeyBy(locs.Updates(), func(kv flows.KV[o4Loc, o4LocAcc]) int { return o4Tier(kv.Key) })
		flows.Count(byTier).View("tiers")
		return f
	}

	var dlMu sync.Mutex
	var dead []flows.DeadLetter
	dir := t.TempDir()
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, TickInterval: 5 * time.Millisecond, CheckpointInterval: 40 * time.Millisecond,
			BatchSize: 32, PollSize: 40, MaxAttempts: 2, RetryBackoff: 5 * time.Millisecond,
			OnDeadLetters: func(d []flows.DeadLetter) {
				dlMu.Lock()
				dead = append(dead, d...)
				dlMu.Unlock()
			}}
	}

	rng := rand.New(rand.NewPCG(41, 42))
	model := newO4Model()
	var seq int64
	closed := map[int]bool{}
	wave := func(n int) {
		for range n {
			shop := int64(rng.IntN(51)) - 25
			p := int(((shop % parts) + parts) % parts)
			if closed[p] {
				continue
			}
			seq++
			s := o4Sale{Seq: seq, Shop: shop, Amount: 1 + rng.Int64N(40)}
			in.Push(p, s)
			model.apply(s)
		}
	}
	shopPrefixes, locPrefixes, tierPrefixes := []string{"-1", "1", "2"}, []string{"eu-1", "us-", "ap-"}, []string{"-"}
	check := func(e *Engine, full bool) string {
		shops, locs, tiers := model.views()
		if d := o4Diff(e, "shops", shops, full, shopPrefixes); d != "" {
			return d
		}
		if d := o4Diff(e, "locs", locs, full, locPrefixes); d != "" {
			return d
		}
		return o4Diff(e, "tiers", tiers, full, tierPrefixes)
	}

	// Run 0: two waves, every view the model's, a checkpoint, a crash
	// right after it.
	n := ohStartOn(t, dir, build(), cfg)
	wave(300)
	wave(300)
	o2Until(t, "run 0: the first waves in every view", func() string { return check(n.e, false) })
	if err := n.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	n.crash()

	// Run 1: the views come back; two more waves, a crash as soon as the
	// shops view holds them (the later stages may be mid-way).
	n = ohStartOn(t, dir, build(), cfg)
	o2Until(t, "run 1: the views restored", func() string { return check(n.e, true) })
	wave(400)
	wave(400)
	shops, _, _ := model.views()
	o2Until(t, "run 1: the shops view holds the new waves", func() string { return o4Diff(n.e, "shops", shops, false, nil) })
	n.crash()

	// Run 2: partition 2 ends early, the rest later; a crash as soon as
	// the input is drained.
	n = ohStartOn(t, dir, build(), cfg)
	wave(300)
	in.ClosePartition(2)
	closed[2] = true
	wave(400)
	in.Close()
	ohDrained(t, n.e, "run 2")
	n.crash()

	// Run 3: from the end of the input; every view exact, read every way.
	n = ohStartOn(t, dir, build(), cfg)
	ohDrained(t, n.e, "run 3")
	oeWait(t, "every fragment complete (run 3)", func() bool { return ohComplete(n.e) })
	o2Until(t, "run 3: every view", func() string { return check(n.e, true) })
	// A key that does not parse is refused; one that parses but is not
	// held answers no entry.
	if res, err := splice.Evaluate(context.Background(), n.e, splice.Request{View: "locs", Op: splice.OpKey, Key: "nowhere"}); err == nil {
		t.Fatalf("locs key %q that does not parse: %+v, want an error", "nowhere", res.Entries)
	}
	if res, err := splice.Evaluate(context.Background(), n.e, splice.Request{View: "shops", Op: splice.OpKey, Key: "99"}); err == nil && len(res.Entries) > 0 {
		t.Fatalf("shops key 99, never seen: %+v", res.Entries)
	}
	if err := n.e.Checkpoint(context.Background()); err != nil {
		t.Fatal(err)
	}
	// The sinks' last updates are the views' values.
	shopsM, locsM, _ := model.views()
	o2Until(t, "run 3: the sinks' last updates", func() string {
		lastShop := map[string]any{}
		for _, kv := range shopUpdates.values() {
			k := strconv.FormatInt(kv.Key, 10)
			if prev, ok := lastShop[k].(o4Tot); !ok || kv.Value.N > prev.N {
				lastShop[k] = kv.Value
			}
		}
		if d := o2Diff(lastShop, shopsM.vals, nil); d != "" {
			return "shop updates: " + d
		}
		lastLoc := map[string]any{}
		for _, kv := range locUpdates.values() {
			k := o4LocCodec{}.Format(kv.Key)
			if prev, ok := lastLoc[k].(o4LocAcc); !ok || kv.Value.Updates > prev.Updates {
				lastLoc[k] = kv.Value
			}
		}
		if d := o2Diff(lastLoc, locsM.vals, nil); d != "" {
			return "loc updates: " + d
		}
		return ""
	})
	if err := n.e.Err(); err != nil {
		t.Fatal(err)
	}
	n.stop()

	// Run 4: started again after the stop; every view again.
	n = ohStartOn(t, dir, build(), cfg)
	ohDrained(t, n.e, "run 4")
	oeWait(t, "every fragment complete (run 4)", func() bool { return ohComplete(n.e) })
	time.Sleep(50 * time.Millisecond) // a few ticks: top answers from the published sets too
	o2Until(t, "run 4: every view", func() string { return check(n.e, true) })
	n.stop()

	// Sinks: one value per id; every count from 1 to the final one once.
	shopUpdates.checkConflicts(t, "shop updates")
	locUpdates.checkConflicts(t, "loc updates")
	shopSeen := map[[2]int64]int{}
	for _, kv := range shopUpdates.values() {
		shopSeen[[2]int64{kv.Key, kv.Value.N}]++
	}
	for shop, tot := range model.shops {
		for i := int64(1); i <= tot.N; i++ {
			if c := shopSeen[[2]int64{shop, i}]; c != 1 {
				t.Fatalf("shop %d's update %d came under %d ids, want 1", shop, i, c)
			}
		}
	}
	if len(shopSeen) != int(seq) {
		t.Fatalf("%d distinct shop updates, want %d (one a sale)", len(shopSeen), seq)
	}
	locSeen := map[string]int{}
	for _, kv := range locUpdates.values() {
		locSeen[fmt.Sprintf("%s/%d", o4LocCodec{}.Format(kv.Key), kv.Value.Updates)]++
	}
	var nLoc int
	for l, a := range model.locs {
		nLoc += int(a.Updates)
		for i := int64(1); i <= a.Updates; i++ {
			if c := locSeen[fmt.Sprintf("%s/%d", o4LocCodec{}.Format(l), i)]; c != 1 {
				t.Fatalf("loc %s's update %d came under %d ids, want 1", o4LocCodec{}.Format(l), i, c)
			}
		}
	}
	if len(locSeen) != nLoc {
		t.Fatalf("%d distinct loc updates, want %d", len(locSeen), nLoc)
	}

	// Dead letters: each poisoned sale at least once (again after a
	// restart is allowed), after the key (a fragment), always under the
	// same channel, partition and offset; no other sale.
	dlMu.Lock()
	defer dlMu.Unlock()
	where := map[int64]string{}
	for _, d := range dead {
		i := strings.Index(d.Value, "sale=#")
		if i < 0 {
			t.Fatalf("dead letter %+v does not name a sale", d)
		}
		s, err := strconv.ParseInt(d.Value[i+6:i+6+strings.IndexByte(d.Value[i+6:], '#')], 10, 64)
		if err != nil || !model.dead[s] {
			t.Fatalf("dead letter of sale %d (%v), not a poisoned one: %+v", s, err, d)
		}
		if d.Fragment < 0 {
			t.Fatalf("dead letter of sale %d before the key: %+v", s, d)
		}
		w := fmt.Sprintf("%s/%d/%d", d.Source, d.Partition, d.Offset)
		if prev, ok := where[s]; ok && prev != w {
			t.Fatalf("sale %d dead-lettered as %s and as %s", s, prev, w)
		}
		where[s] = w
	}
	for s := range model.dead {
		if _, ok := where[s]; !ok {
			t.Fatalf("poisoned sale %d never dead-lettered (%d dead letters, %d poisoned sales)", s, len(dead), len(model.dead))
		}
	}
	t.Logf("%d sales, %d shops, %d locations; %d dead letters for %d poisoned sales", seq, len(model.shops), len(model.locs), len(dead), len(model.dead))
}

// ---------------------------------------------------------------------------
// Pages that start after a key the view does not hold: "After: only keys
// after this one, in key order" (splice.Query), the order being the key
// codec's ("keyed views list entries in key order", flows.KeyCodec), not
// the printed form's. Int64 keys, negative ones among them, and the struct
// key of the test above, after a restart on the same store.
func TestEngineOutsideHunt4PagesAfterAbsentKeys(t *testing.T) {
	in := flowstest.NewInput[o4Sale](2)
	var sales []o4Sale
	for i, shop := range []int64{-25, -12, -3, -1, 0, 2, 9, 10, 11, 24} {
		for j := range i%3 + 1 {
			s := o4Sale{Seq: int64(10*i + j + 1), Shop: shop, Amount: int64(i + j + 1)}
			sales = append(sales, s)
			in.Push(int(((shop%2)+2)%2), s)
		}
	}
	in.Close()
	build := func() *flows.Flow {
		f := flows.New("hunt4-pages", flows.WithFragments(4))
		sales := flows.From(f, "sales", flows.Source[o4Sale](in))
		flows.Count(flows.KeyBy(sales, func(s o4Sale) int64 { return s.Shop })).View("shops")
		flows.Count(flows.KeyBy(sales, func(s o4Sale) o4Loc { return o4LocOf(s.Shop) }, flows.WithKeyCodec[o4Loc](o4LocCodec{}))).View("locs")
		return f
	}
	shops := map[int64]int64{}
	locs := map[o4Loc]int64{}
	for _, s := range sales {
		shops[s.Shop]++
		locs[o4LocOf(s.Shop)]++
	}
	cfg := func(s *recovery.Store) Config {
		return Config{Store: s, TickInterval: 5 * time.Millisecond, CheckpointInterval: 30 * time.Millisecond}
	}
	// after answers the view's keys after after, in pages of two.
	after := func(e *Engine, view, after string) (string, error) {
		var keys []string
		q := splice.Query{Limit: 2, After: after, HasAfter: true}
		for range 100 {
			res, err := o4Entries(e, view, q)
			if err != nil {
				return "", err
			}
			for _, en := range res.Entries {
				keys = append(keys, fmt.Sprintf("%s=%v", en.Key, en.Value))
			}
			if !res.More || len(res.Entries) == 0 {
				break
			}
			q.After = res.Entries[len(res.Entries)-1].Key
		}
		return fmt.Sprint(keys), nil
	}
	wantShops := func(a int64) string {
		var ks []int64
		for k := range shops {
			if k > a {
				ks = append(ks, k)
			}
		}
		sort.Slice(ks, func(i, j int) bool { return ks[i] < ks[j] })
		var out []string
		for _, k := range ks {
			out = append(out, fmt.Sprintf("%d=%d", k, shops[k]))
		}
		return fmt.Sprint(out)
	}
	wantLocs := func(a o4Loc) string {
		var ks []o4Loc
		for k := range locs {
			if (o4LocCodec{}).Compare(k, a) > 0 {
				ks = append(ks, k)
			}
		}
		sort.Slice(ks, func(i, j int) bool { return o4LocCodec{}.Compare(ks[i], ks[j]) < 0 })
		var out []string
		for _, k := range ks {
			out = append(out, fmt.Sprintf("%s=%d", o4LocCodec{}.Format(k), locs[k]))
		}
		return fmt.Sprint(out)
	}
	checkAll := func(e *Engine, run string) {
		t.Helper()
		for _, a := range []int64{-100, -25, -13, -2, -1, 1, 3, 9, 10, 12, 24, 100} {
			got, err := after(e, "shops", strconv.FormatInt(a, 10))
			if err != nil {
				t.Fatalf("%s: shops after %d: %v", run, a, err)
			}
			if want := wantShops(a); got != want {
				t.Fatalf("%s: shops after %d: %s, want %s", run, a, got, want)
			}
		}
		for _, a := range []o4Loc{{"ap", 0}, {"ap", 5}, {"eu", 1}, {"eu", 2}, {"eu", 9}, {"eu", 11}, {"sa", 3}, {"us", 1}, {"us", 10}, {"zz", 0}, {"a", 99}} {
			got, err := after(e, "locs", o4LocCodec{}.Format(a))
			if err != nil {
				t.Fatalf("%s: locs after %s: %v", run, o4LocCodec{}.Format(a), err)
			}
			if want := wantLocs(a); got != want {
				t.Fatalf("%s: locs after %s: %s, want %s", run, o4LocCodec{}.Format(a), got, want)
			}
		}
	}
	dir := t.TempDir()
	n := ohStartOn(t, dir, build(), cfg)
	ohDrained(t, n.e, "run 1")
	oeWait(t, "every fragment complete (run 1)", func() bool { return ohComplete(n.e) })
	checkAll(n.e, "run 1")
	n.stop()
	n = ohStartOn(t, dir, build(), cfg)
	ohDrained(t, n.e, "run 2")
	oeWait(t, "every fragment complete (run 2)", func() bool { return ohComplete(n.e) })
	checkAll(n.e, "run 2")
}
