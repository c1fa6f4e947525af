package flowcore

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tessera-streams/tessera/shard"
)

// Every batch an exchange sends holds exactly the records numbered from
// its PrevEnd to its End that go to its fragment, in order, and a
// fragment sent nothing for a while had no records there: across
// checkpoints not released yet, releases one checkpoint behind,
// checkpoints of nothing new, and restores. (A release splits the log in
// one of two loops, splitPlain or the general one: a change to either, or
// to where a release begins and ends, must keep this.)
func TestExchangeBatchesHoldTheirRecords(t *testing.T) {
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 7))
		const frags = 16
		w := exchangeWriter(t, frags)
		st := exStore{}
		var made []Rec[int64, countUpdate] // every record, by number
		next := make([]int64, frags)       // where each fragment's next batch must begin
		check := func(d int, b *Batch) {
			t.Helper()
			// A fragment sent nothing for a while had no records in it
			// (a restored writer sends every fragment a batch).
			if b.PrevEnd < next[d] || b.End > int64(len(made)) {
				t.Fatalf("seed %d: fragment %d sent a batch [%d, %d), after %d, of %d made", seed, d, b.PrevEnd, b.End, next[d], len(made))
			}
			for _, r := range made[next[d]:b.PrevEnd] {
				if shard.Fragment(w.hash(r.Key), frags) == d {
					t.Fatalf("seed %d: fragment %d was never sent record %d", seed, d, r.Off)
				}
			}
			var got []Rec[int64, countUpdate]
			for _, p := range b.parts {
				got = append(got, p.(*recs[int64, countUpdate]).items...)
			}
			var want []Rec[int64, countUpdate]
			for _, r := range made[b.PrevEnd:b.End] {
				if shard.Fragment(w.hash(r.Key), frags) == d {
					want = append(want, r)
				}
			}
			if !slices.Equal(got, want) || b.Count != len(want) {
				t.Fatalf("seed %d: fragment %d's batch [%d, %d): %d records (count %d), want %d", seed, d, b.PrevEnd, b.End, len(got), b.Count, len(want))
			}
			next[d] = b.End
			b.Release()
		}
		keys := []string{"a", "b", "c", "d", "e"}
		for range 200 {
			switch op := rng.IntN(12); {
			case op < 5:
				for range rng.IntN(300) {
					v := rng.Int64N(40)
					r := Rec[int64, countUpdate]{Key: v, Val: countUpdate{Key: keys[rng.IntN(len(keys))], Value: v}, Off: int64(len(made))}
					made = append(made, r)
					w.emit(r.Key, r.Val)
				}
			case op < 7:
				st.checkpoint(t, w)
			case op < 9:
				w.released(op == 8)
				w.takeDue(check)
			case op < 11:
				// Downstream fragments' checkpoints cover some of what
				// they were sent: the log forgets what none needs.
				for d := range next {
					w.trim(d, rng.Int64N(next[d]+1))
				}
			default:
				// The fragment restarts from its last checkpoint: what it
				// made after is made again (here: forgotten).
				st.checkpoint(t, w)
				w.released(false)
				w.takeDue(check)
				fresh := exchangeWriter(t, frags)
				if err := st.restore(fresh); err != nil {
					t.Fatalf("seed %d: %v", seed, err)
				}
				w = fresh
				made = made[:w.seq]
				w.takeDue(check)
			}
		}
		if len(made) == 0 || w.split == 0 {
			t.Fatalf("seed %d: nothing was made or released", seed)
		}
	}
}
