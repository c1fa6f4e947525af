package recovery

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// A reader blocks on a fragment without credits, an acknowledgement
// unblocks it, and credits that do not come back are taken back after
// CreditTimeout with the oldest batch in flight to rewind to.
func TestCreditsBlockAckExpire(t *testing.T) {
	c := NewCredits(2, 2, t0)
	c.Sent(0, 0, t0)
	c.Sent(0, 10, t0.Add(time.Second))
	if c.CanSend(0) || !c.CanSend(1) {
		t.Fatal("fragment 0 has credits left, or fragment 1 has none")
	}
	if !c.Block(0) || c.Block(0) || c.MayPoll() {
		t.Fatal("a blocked fragment does not stop polling once")
	}
	if unblocked, ok := c.Ack(0, 0, t0.Add(2*time.Second)); !unblocked || !ok || !c.MayPoll() {
		t.Fatalf("ack: unblocked %v ok %v may poll %v", unblocked, ok, c.MayPoll())
	}
	if from, took := c.Expire(t0.Add(2*time.Second + CreditTimeout - 1)); took || from != -1 {
		t.Fatal("credits taken back before the timeout")
	}
	if from, took := c.Expire(t0.Add(2*time.Second + CreditTimeout)); !took || from != 10 {
		t.Fatalf("expire: from %d took %v, want 10 true", from, took)
	}
	if c.InFlight() != 0 || !c.CanSend(0) {
		t.Fatal("expired credits not back")
	}
	if _, ok := c.Ack(0, -1, t0); ok {
		t.Fatal("a late acknowledgement returned a credit beyond the maximum")
	}
}

// An acknowledgement returns the credit of the batch it names: a second
// acknowledgement of the same batch (the network duplicated it) does not
// stand for another batch in flight, which, lost, is then sent again
// once its credit times out. Before, acknowledgements were counted: the
// duplicate's took the lost last batch's place, the partition finished,
// and its fragment never had the end (sim visits seed 38150). An
// acknowledgement that names no batch (-1, from a node of the version
// before) returns the oldest's.
func TestCreditsAckNamesItsBatch(t *testing.T) {
	c := NewCredits(1, 4, t0)
	for _, from := range []int64{0, 10, 20} {
		c.Sent(0, from, t0)
	}
	c.EOF()
	if _, ok := c.Ack(0, 0, t0); !ok {
		t.Fatal("the acknowledgement of the batch from 0 returned no credit")
	}
	if _, ok := c.Ack(0, 0, t0); ok {
		t.Fatal("a second acknowledgement of the batch from 0 returned a credit")
	}
	if _, ok := c.Ack(0, 10, t0); !ok {
		t.Fatal("the acknowledgement of the batch from 10 returned no credit")
	}
	if c.Flushed(false) || c.InFlight() != 1 {
		t.Fatalf("finished, or %d in flight, with the batch from 20 lost", c.InFlight())
	}
	if from, took := c.Expire(t0.Add(CreditTimeout)); !took || from != 20 {
		t.Fatalf("expire: from %d took %v, want the lost batch from 20", from, took)
	}
	c.Sent(0, 30, t0)
	c.Sent(0, 40, t0)
	if _, ok := c.Ack(0, -1, t0); !ok || len(c.unacked[0]) != 1 || c.unacked[0][0] != 40 {
		t.Fatalf("an acknowledgement naming no batch left %v in flight, want [40]", c.unacked[0])
	}
}

// A fragment that asks to be sent again from an offset (a gap) gives
// back the credits of its batches in flight from there: they are sent
// again, and their late acknowledgements return nothing.
func TestCreditsResend(t *testing.T) {
	c := NewCredits(2, 3, t0)
	for _, from := range []int64{0, 10, 20} {
		c.Sent(0, from, t0)
	}
	c.Sent(1, 10, t0)
	if c.CanSend(0) || !c.Block(0) {
		t.Fatal("fragment 0 has a credit left, or was blocked already")
	}
	c.Resend(0, 10, t0)
	if !c.CanSend(0) || !c.MayPoll() || c.InFlight() != 2 || len(c.unacked[0]) != 1 || c.unacked[0][0] != 0 {
		t.Fatalf("after a resend from 10: can send %v, may poll %v, %d in flight, fragment 0's %v", c.CanSend(0), c.MayPoll(), c.InFlight(), c.unacked[0])
	}
	if _, ok := c.Ack(0, 20, t0); ok {
		t.Fatal("the late acknowledgement of a batch sent again returned a credit")
	}
	if _, ok := c.Ack(0, 0, t0); !ok {
		t.Fatal("the batch from 0, still in flight, lost its credit")
	}
}

// A fragment that moved gives back its credits and names the oldest
// offset in flight, which its new owner may never ask for.
func TestCreditsReclaim(t *testing.T) {
	c := NewCredits(2, 2, t0)
	c.Sent(1, 5, t0)
	c.Sent(1, 9, t0)
	if from := c.Reclaim(1, t0); from != 5 || c.InFlight() != 0 || !c.CanSend(1) {
		t.Fatalf("reclaim: from %d, %d in flight", from, c.InFlight())
	}
	if from := c.Reclaim(1, t0); from != -1 {
		t.Fatalf("a second reclaim names %d in flight", from)
	}
}

// A moved fragment is sent again from the oldest batch in flight, or, with
// none (its old owner acknowledged them), from the reader's position, so
// that the new owner sees its gap.
func TestCreditsMoved(t *testing.T) {
	c := NewCredits(2, 2, t0)
	c.Sent(1, 5, t0)
	c.Sent(1, 9, t0)
	if from := c.Moved(1, t0, 12); from != 5 || c.InFlight() != 0 || !c.CanSend(1) {
		t.Fatalf("moved with batches in flight: from %d, %d in flight", from, c.InFlight())
	}
	c.Sent(0, 12, t0)
	c.Ack(0, 12, t0)
	if from := c.Moved(0, t0, 20); from != 20 {
		t.Fatalf("moved with every batch acknowledged: from %d, want the position 20", from)
	}
}

// The partition is finished only once read to the end with nothing in
// flight and nothing due; a rewind unfinishes it.
func TestCreditsFinish(t *testing.T) {
	c := NewCredits(1, 1, t0)
	c.Sent(0, 0, t0)
	c.EOF()
	if c.Flushed(false) {
		t.Fatal("finished with a batch in flight")
	}
	c.Ack(0, 0, t0)
	if c.Flushed(true) {
		t.Fatal("finished while a fragment is behind")
	}
	if !c.Flushed(false) || c.Flushed(false) || !c.Finished() {
		t.Fatal("not finished once, when everything was acknowledged")
	}
	if !c.Rewound() || c.Finished() || c.Ended() || !c.MayPoll() {
		t.Fatal("a rewind did not reopen the partition")
	}
}

// Under any sequence of calls: in-flight batches are the credits spent,
// credits stay within [0, max], the commit offset never falls and is the
// smallest durable offset once every fragment said one, and a finished
// partition has nothing in flight.
func TestCreditsProperties(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		frags := rapid.IntRange(1, 5).Draw(t, "fragments")
		most := rapid.IntRange(1, 4).Draw(t, "credits")
		c := NewCredits(frags, most, t0)
		now := t0
		durable := make([]int64, frags)
		for i := range durable {
			durable[i] = -1
		}
		last := int64(-1)
		var pos int64
		for range rapid.IntRange(0, 200).Draw(t, "steps") {
			f := rapid.IntRange(0, frags-1).Draw(t, "f")
			now = now.Add(time.Duration(rapid.IntRange(0, 2000).Draw(t, "ms")) * time.Millisecond)
			switch rapid.IntRange(0, 7).Draw(t, "op") {
			case 0, 1:
				switch {
				case c.Finished(): // a finished reader sends nothing until a rewind
				case c.CanSend(f):
					c.Sent(f, pos, now)
					pos += 10
				default:
					c.Block(f)
				}
			case 2, 3:
				// A batch in flight, a duplicate or stale one, or none named.
				start := rapid.SampledFrom([]int64{-1, pos - 10, pos - 20, pos - 30, pos}).Draw(t, "start")
				c.Ack(f, start, now)
			case 4:
				if rapid.Bool().Draw(t, "resend") {
					c.Resend(f, pos-10*int64(rapid.IntRange(0, 3).Draw(t, "back")), now)
				} else {
					c.Expire(now)
				}
			case 5:
				c.Reclaim(f, now)
			case 6:
				if rapid.Bool().Draw(t, "eof") {
					c.EOF()
				} else {
					c.Rewound()
				}
			case 7:
				off := rapid.Int64Range(0, 100).Draw(t, "offset")
				to, grew := c.Durable(f, off)
				if off > durable[f] {
					durable[f] = off
				}
				want := durable[0]
				for _, d := range durable {
					want = min(want, d)
				}
				if grew != (want > last) || (want > last && to != want) {
					t.Fatalf("durable: commit to %d (grew %v) after %d, want %d", to, grew, last, want)
				}
				last = max(last, want)
			}
			c.Flushed(false)
			spent := 0
			for g := range frags {
				if c.credits[g] < 0 || c.credits[g] > most {
					t.Fatalf("fragment %d has %d credits of %d", g, c.credits[g], most)
				}
				spent += most - c.credits[g]
				if len(c.unacked[g]) != most-c.credits[g] {
					t.Fatalf("fragment %d: %d batches unacknowledged, %d credits spent", g, len(c.unacked[g]), most-c.credits[g])
				}
			}
			if spent != c.InFlight() {
				t.Fatalf("%d in flight, %d credits spent", c.InFlight(), spent)
			}
			if c.Finished() && (c.InFlight() != 0 || !c.Ended()) {
				t.Fatal("finished with batches in flight or before the end")
			}
		}
	})
}
