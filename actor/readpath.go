package actor

import (
	"github.com/tessera-streams/tessera/splice"
)

// lock begins a message.
func (fa *fragmentActor) lock() {
	fa.mu.Lock()
	fa.seq.Add(1)
}

// unlock ends a message: the fragment publishes what it holds now for the
// queries that read without its lock (flowcore.Fragment.Publish), and says
// whether they may (it serves: not stopped, restoring or waiting for a
// hand-off). A message ends at a batch boundary, so such a query sees the
// fragment between two batches, as one under the lock does, without
// waiting for the batch being applied — which, on a busy machine, may be
// descheduled in the middle for longer than the query's whole budget.
func (fa *fragmentActor) unlock() {
	fr := fa.m.Fragment()
	if fa.stopped || fa.m.Serving() != nil {
		fr = nil
	}
	if fr != nil {
		fr.Publish()
	}
	if fa.readable.Load() != fr {
		fa.readable.Store(fr)
	}
	fa.seq.Add(1)
	fa.mu.Unlock()
}

// queryPublished answers req from the fragment's published state without
// its lock, if the fragment serves and can (ok false: ask under the lock).
//
// The answer's freshness (offsets, epoch, watermark) must be the published
// state's: a snapshot read trusts an answer that reports the cut's offsets
// to hold exactly what the cut holds. Both change only while a message is
// handled, so seq works as a sequence lock: read between two messages and
// no message began meanwhile, they match. Otherwise the query asks under
// the lock, which waits for the message being handled.
func (fa *fragmentActor) queryPublished(req splice.Request) (splice.Answer, bool) {
	s := fa.seq.Load()
	fr := fa.readable.Load()
	if s%2 == 1 || fr == nil {
		return splice.Answer{}, false
	}
	ans, ok := fr.QueryPublished(req)
	if !ok {
		return ans, false
	}
	ans.Freshness = fa.stats.freshnessOf(fa.e.plan.ViewChannel(req.View))
	return ans, fa.seq.Load() == s
}
