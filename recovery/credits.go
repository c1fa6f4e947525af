package recovery

import (
	"slices"
	"time"
)

// CreditTimeout is how long a reader waits for a fragment that has none
// of its credits back before it takes them back: the batches went to an
// owner that left or has not started yet, or were lost with a connection.
const CreditTimeout = 3 * time.Second

// DefaultCredits is how many batches a reader sends a fragment before it
// waits for an acknowledgement, unless configured otherwise.
const DefaultCredits = 4

// Credits is the flow control of one source partition's reader, as a pure
// state machine: how many batches each fragment may have in flight, which
// fragments a full batch waits for, when the partition is finished, and up
// to which offset the source may be committed. The reader actor asks it
// before every send and tells it every acknowledgement, rewind and
// durable offset; it does no I/O and reads no clock (times are passed in).
//
// The rules:
//   - a fragment has Credits batches in flight at most; a full batch for a
//     fragment without a credit blocks the reader (no more polls) until an
//     acknowledgement returns one: back-pressure reaches the source;
//   - an acknowledgement names its batch, by where it began: one of no
//     batch in flight (late, from a fragment's old owner, or a second of
//     the same batch) is ignored;
//   - credits are taken back when a fragment moves (its batches went to an
//     old owner) and when a fragment with batches in flight acknowledged
//     nothing for CreditTimeout — then the reader rewinds to the oldest
//     unacknowledged batch, or a lost last batch would never show as a gap;
//   - a rewind unblocks the reader and clears the end of the partition; a
//     fragment's request to send again from an offset takes back the
//     credits of its batches in flight from there (Resend);
//   - the partition is finished once read to its end, nothing is due to a
//     fragment without a credit, and every batch is acknowledged;
//   - the source is committed up to the smallest offset every fragment's
//     durable checkpoint covers, when that grows.
type Credits struct {
	max      int
	credits  []int
	blocked  []bool
	nblocked int
	inflight int
	eof      bool
	finished bool
	lastAck  []time.Time // per fragment: when a credit last came back (or the wait started)
	unacked  [][]int64   // per fragment: start offsets of the batches in flight, oldest first
	durable  []int64     // per fragment: the offset its durable checkpoint covers (-1: not said)
	commit   int64       // the offset to commit to (-1 until every fragment said)
}

// NewCredits returns the flow control of a reader for fragments
// fragments, each with max credits.
func NewCredits(fragments, max int, now time.Time) *Credits {
	c := &Credits{max: max, credits: make([]int, fragments), blocked: make([]bool, fragments),
		lastAck: make([]time.Time, fragments), unacked: make([][]int64, fragments), durable: make([]int64, fragments), commit: -1}
	for f := range fragments {
		c.credits[f] = max
		c.lastAck[f] = now
		c.durable[f] = -1
	}
	return c
}

// Fragments is the number of fragments.
func (c *Credits) Fragments() int { return len(c.credits) }

// CanSend reports whether fragment f has a credit.
func (c *Credits) CanSend(f int) bool { return c.credits[f] > 0 }

// Sent records a batch sent to f, starting at offset from.
func (c *Credits) Sent(f int, from int64, now time.Time) {
	if c.credits[f] == c.max {
		c.lastAck[f] = now // the wait for an acknowledgement starts now
	}
	c.credits[f]--
	c.inflight++
	c.unacked[f] = append(c.unacked[f], from)
}

// Block records that a full batch waits for a credit of f; it reports
// whether f was not blocked before (a stall).
func (c *Credits) Block(f int) bool {
	if c.blocked[f] {
		return false
	}
	c.blocked[f] = true
	c.nblocked++
	return true
}

// Ack returns the credit of f's batch in flight that began at start (-1:
// the oldest in flight, as a node of a version before acknowledgements
// named their batch says); it reports whether f was blocked (its batch
// should be sent now). An acknowledgement of no batch in flight — a late
// one, of a batch whose credit was taken back, or a second one of the
// same batch — changes nothing: returning a credit for it would return
// another batch's, and that batch, if it was lost, would never be sent
// again (sim visits seed 38150: a duplicated batch's second
// acknowledgement stood for the partition's last batch, which was lost,
// and the fragment never had the end of the partition).
func (c *Credits) Ack(f int, start int64, now time.Time) (unblocked, ok bool) {
	if f < 0 || f >= len(c.credits) || c.credits[f] >= c.max {
		return false, false
	}
	u := c.unacked[f]
	i := 0
	if start >= 0 {
		if i = slices.Index(u, start); i < 0 {
			return false, false
		}
	}
	if len(u) > 0 {
		c.unacked[f] = slices.Delete(u, i, i+1)
	}
	c.credits[f]++
	c.inflight--
	c.lastAck[f] = now
	return c.unblock(f), true
}

func (c *Credits) unblock(f int) bool {
	if !c.blocked[f] {
		return false
	}
	c.blocked[f] = false
	c.nblocked--
	return true
}

// Reclaim takes back f's credits: its batches in flight will not be
// acknowledged. from is the oldest offset they began at (-1: none): a
// fragment that moved to an owner that does not replay (it owned the
// fragment already, on the other side of a partition) never sees them
// otherwise, so the reader sends them again from there.
func (c *Credits) Reclaim(f int, now time.Time) (from int64) {
	from = -1
	if u := c.unacked[f]; len(u) > 0 {
		from = u[0]
	}
	c.inflight -= c.max - c.credits[f]
	c.credits[f] = c.max
	c.unacked[f] = c.unacked[f][:0]
	c.lastAck[f] = now
	c.unblock(f)
	return from
}

// Moved is the reader's rule for fragment f whose owner changed: it takes
// back f's credits (Reclaim) and returns where to send f from again — the
// oldest offset in flight, or else position, the reader's own: a batch
// there (empty if nothing is new) shows the new owner its gap. Without it,
// batches the old owner acknowledged while it waited for a hand-off it
// never took (they were to come again by its replay) are lost when the
// new owner already ran the fragment and does not replay (it owned it on
// the other side of a partition): sim seed 1105 lost 43 events so.
func (c *Credits) Moved(f int, now time.Time, position int64) (from int64) {
	if from = c.Reclaim(f, now); from < 0 {
		from = position
	}
	return from
}

// Resend takes back the credits of f's batches in flight that begin at
// or after to: f asked to be sent its partition again from to (it found a
// gap), so the reader sends them again, and an acknowledgement of one
// that still comes names no batch in flight. Without it, once
// acknowledgements named their batch, a lost batch's credit came back
// only after CreditTimeout, while the fragment's gap had already asked
// for it again.
func (c *Credits) Resend(f int, to int64, now time.Time) {
	if f < 0 || f >= len(c.credits) {
		return
	}
	before := len(c.unacked[f])
	c.unacked[f] = slices.DeleteFunc(c.unacked[f], func(s int64) bool { return s >= to })
	n := before - len(c.unacked[f])
	if n == 0 {
		return
	}
	c.credits[f] += n
	c.inflight -= n
	c.lastAck[f] = now
	c.unblock(f)
}

// Expire takes back the credits of fragments that acknowledged nothing
// for CreditTimeout; from is the oldest offset they had in flight (-1:
// none), to rewind to. took reports whether any credit came back.
func (c *Credits) Expire(now time.Time) (from int64, took bool) {
	from = -1
	for f, n := range c.credits {
		if n < c.max && now.Sub(c.lastAck[f]) >= CreditTimeout {
			if u := c.unacked[f]; len(u) > 0 && (from < 0 || u[0] < from) {
				from = u[0]
			}
			c.Reclaim(f, now)
			took = true
		}
	}
	return from, took
}

// Rewound records that the reader moved back: nothing waits for a credit
// and the partition has not ended. It reports whether the partition had
// been finished (it no longer is).
func (c *Credits) Rewound() (wasFinished bool) {
	clear(c.blocked)
	c.nblocked = 0
	c.eof = false
	wasFinished, c.finished = c.finished, false
	return wasFinished
}

// MayPoll reports whether the reader may read more: nothing waits for a
// credit and the partition has not ended.
func (c *Credits) MayPoll() bool { return c.nblocked == 0 && !c.eof }

// EOF records that the reader read the partition to its end.
func (c *Credits) EOF() { c.eof = true }

// Ended reports whether the reader read the partition to its end.
func (c *Credits) Ended() bool { return c.eof }

// Flushed records that the reader sent what it could after reading to the
// end; behind says a fragment without a credit is still due records. It
// reports whether the partition just became finished.
func (c *Credits) Flushed(behind bool) bool {
	if !c.eof || behind || c.inflight != 0 || c.finished {
		return false
	}
	c.finished = true
	return true
}

// Finished reports whether the partition is finished.
func (c *Credits) Finished() bool { return c.finished }

// Durable records that f's durable checkpoint covers the partition up to
// offset; it returns the offset to commit the source to, and whether that
// grew.
func (c *Credits) Durable(f int, offset int64) (int64, bool) {
	if f < 0 || f >= len(c.durable) || offset <= c.durable[f] {
		return c.commit, false
	}
	c.durable[f] = offset
	m := slices.Min(c.durable)
	if m <= c.commit {
		return c.commit, false
	}
	c.commit = m
	return m, true
}

// InFlight is the number of batches sent and not acknowledged.
func (c *Credits) InFlight() int { return c.inflight }
