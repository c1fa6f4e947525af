package recovery_test

import (
	"slices"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/flows"
	"github.com/tessera-streams/tessera/flowstest"
	"github.com/tessera-streams/tessera/internal/flowcore"
	"github.com/tessera-streams/tessera/recovery"
)

// The strong rule (MachineConfig.Confirm), driven by hand on exchangeWorld:
// outputs leave once the standby confirms the checkpoint, a fragment
// restored from a copy older than what a downstream applied stops, and a
// downstream restored older than its own durable checkpoint is found out.

var confirmCfg = recovery.MachineConfig{Replicated: true, Confirm: true, Backoff: -1}

// exchange carries the machines' sends, acknowledgements and exchange
// rewinds between them until nothing moves, ticking past RewindTimeout so
// that probes answered "unknown" are sent again. It returns what the
// machines made ready besides (stale notices, behinds, fetches).
func exchange(t *testing.T, r *rig, ms []*recovery.Machine) []recovery.Ready {
	t.Helper()
	other := make([]recovery.Ready, len(ms))
	var carry func(f int) bool
	carry = func(f int) bool {
		rd := ms[f].Ready()
		other[f].Stale = cmpErr(other[f].Stale, rd.Stale)
		other[f].Fetch = other[f].Fetch || rd.Fetch
		other[f].Behinds = append(other[f].Behinds, rd.Behinds...)
		for _, a := range rd.Acks {
			if ref, ok := a.Ref.(int); ok && ms[ref] != nil {
				ms[ref].AckedEnd(a.Seq, a.End)
				carry(ref)
			}
		}
		for _, rw := range rd.Rewinds {
			if u := rw.Part.Partition; rw.Part.Source == exchangeCh && ms[u] != nil {
				ms[u].Resend(exchangeCh, f, rw.To)
				carry(u)
			}
		}
		for _, s := range rd.Sends {
			if d := ms[s.Dest]; d != nil {
				d.Step(s.Batch, recovery.From{Key: "fragment", Ref: f, Seq: s.Seq})
				carry(s.Dest)
			}
		}
		return len(rd.Sends) > 0
	}
	for round := range 8 {
		moved := false
		for f, m := range ms {
			if m == nil {
				continue
			}
			if round > 0 {
				r.now = r.now.Add(recovery.DefaultRewindTimeout)
				m.Tick(r.now)
			}
			moved = carry(f) || moved
		}
		if !moved && round > 0 {
			break
		}
	}
	return other
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// confirmed takes m's checkpoint, makes it durable and confirms its
// standby copy; it returns the checkpoint and what the confirmation made
// ready.
func confirmed(t *testing.T, r *rig, m *recovery.Machine, id int) (*recovery.Checkpoint, recovery.Ready) {
	t.Helper()
	cp := r.write(t, m, id)
	m.Durable(cp.Manifest.Offsets, nil)
	if rd := m.Ready(); len(rd.Sends) != 0 || len(rd.Trims) != 0 {
		t.Fatalf("a durable checkpoint not yet copied released %d batches and %d trims", len(rd.Sends), len(rd.Trims))
	}
	if again, _ := m.Checkpoint(); again != nil {
		t.Fatal("a checkpoint taken while the last one waits for its copy")
	}
	if m.SettledEpoch() >= cp.Manifest.Epoch {
		t.Fatalf("settled epoch %#x before the standby confirmed checkpoint %#x", m.SettledEpoch(), cp.Manifest.Epoch)
	}
	m.Copied(cp.Manifest.Epoch)
	if m.SettledEpoch() != cp.Manifest.Epoch {
		t.Fatalf("settled epoch %#x after the standby confirmed checkpoint %#x", m.SettledEpoch(), cp.Manifest.Epoch)
	}
	return cp, m.Ready()
}

func TestMachineConfirmReleasesOnCopied(t *testing.T) {
	r, ms := exchangeWorld(t, confirmCfg)
	m0, m1 := ms[0], ms[1]
	for _, m := range ms {
		m.Start()
	}
	if !m0.Verifying() {
		t.Fatal("a new fragment does not ask its downstream fragments where they are")
	}
	if cp, _ := m0.Checkpoint(); cp != nil {
		t.Fatal("a checkpoint taken before the downstream fragments answered")
	}
	exchange(t, r, ms[:])
	if m0.Verifying() || m1.Verifying() {
		t.Fatal("still verifying after every fragment answered")
	}
	m0.Step(r.batch(t, 0, 0, 12, 0), reader(0))
	m0.Ready()
	_, rd := confirmed(t, r, m0, 0)
	count, _ := sent(t, rd.Sends, 0, map[int]int64{0: 0, 1: 0})
	if count[0]+count[1] != 12 {
		t.Fatalf("the confirmed checkpoint released %v, want its 12 updates", count)
	}
}

func TestMachineConfirmStaleCopyStops(t *testing.T) {
	r, ms := exchangeWorld(t, confirmCfg)
	old := newStore(t) // a standby that kept only the first checkpoint
	for _, m := range ms {
		m.Start()
	}
	exchange(t, r, ms[:])
	m0 := ms[0]
	m0.Step(r.batch(t, 0, 0, 12, 0), reader(0))
	m0.Ready()
	first, _ := confirmed(t, r, m0, 0)
	if _, err := old.Write(r.plan.Name(), 0, first); err != nil {
		t.Fatal(err)
	}
	exchange(t, r, ms[:])
	m0.Step(r.batch(t, 0, 12, 25, 0), reader(0))
	m0.Ready()
	confirmed(t, r, m0, 0)
	exchange(t, r, ms[:]) // fragment 1 applies the 13th update
	applied := ms[1].Vector().End(part(exchangeCh, 0))

	// Fragment 0 starts again from the old copy: fragment 1 applied more.
	rs, err := recovery.Restore(old, r.plan, 0)
	if err != nil {
		t.Fatal(err)
	}
	ms[0] = recovery.NewMachine(r.plan, 0, rs, 0, false, confirmCfg)
	ms[0].SetNow(r.now)
	ms[0].Start()
	other := exchange(t, r, ms[:])
	if !ms[0].Stale() || other[0].Stale == nil || !other[0].Fetch || ms[0].Serving() == nil {
		t.Fatalf("fragment 0 restored an older copy than fragment 1 applied (%d): stale %v, %v", applied, ms[0].Stale(), other[0].Stale)
	}
	if cp, _ := ms[0].Checkpoint(); cp != nil {
		t.Fatal("a stale fragment took a checkpoint")
	}
	// The newer copy comes: it goes on.
	ms[0].Restored(r.restore(t, 0), true)
	ms[0].Start()
	exchange(t, r, ms[:])
	if ms[0].Stale() || ms[0].Verifying() || ms[0].Serving() != nil {
		t.Fatalf("with the newer copy: stale %v, verifying %v", ms[0].Stale(), ms[0].Verifying())
	}
}

// trimmedWorld is two fragments under Confirm where fragment 1 applied
// fragment 0's outputs, its confirmed checkpoint covers them, and fragment
// 0 forgot them up to upto (Trim).
func trimmedWorld(t *testing.T) (r *rig, ms [2]*recovery.Machine, upto int64) {
	t.Helper()
	r, ms = exchangeWorld(t, confirmCfg)
	for _, m := range ms {
		m.Start()
	}
	exchange(t, r, ms[:])
	m0, m1 := ms[0], ms[1]
	m0.Step(r.batch(t, 0, 0, 12, 0), reader(0))
	m0.Ready()
	confirmed(t, r, m0, 0)
	exchange(t, r, ms[:])
	m1.Step(r.batch(t, 0, 0, 25, 1), reader(0))
	m1.Ready()
	_, rd := confirmed(t, r, m1, 1)
	upto = trims(rd.Trims)[part(exchangeCh, 0)]
	if upto == 0 {
		t.Fatalf("fragment 1's confirmed checkpoint trims %v", rd.Trims)
	}
	m0.Trim(exchangeCh, 1, upto)
	m0.Ready()
	return r, ms, upto
}

func TestMachineConfirmBehind(t *testing.T) {
	r, ms, upto := trimmedWorld(t)
	m0 := ms[0]

	// Fragment 1 starts again with nothing (its copies lost): fragment 0
	// no longer has what it asks for, and says so.
	ms[1] = recovery.NewMachine(r.plan, 1, recovery.Restored{Fragment: r.plan.NewFragment(1)}, 0, false, confirmCfg)
	ms[1].SetNow(r.now)
	m0.Resend(exchangeCh, 1, 0)
	bs := m0.Ready().Behinds
	if len(bs) != 1 || bs[0].Dest != 1 || bs[0].Upto != upto {
		t.Fatalf("behinds %+v, want fragment 1 told its records begin at %d", bs, upto)
	}
	ms[1].Behind(bs[0].Ch, 0, bs[0].Upto)
	if rd := ms[1].Ready(); !ms[1].Stale() || rd.Stale == nil || !rd.Fetch {
		t.Fatalf("a fragment behind its own durable checkpoint goes on: %+v", rd)
	}
	// A fragment that is not behind ignores the word.
	m0.Behind(exchangeCh, 1, 0)
	if m0.Stale() {
		t.Fatal("a fragment at its end took a behind for stale")
	}
}

// The trim point is part of the checkpoint: an upstream fragment that
// restarted still knows which records it forgot, so a downstream fragment
// that restored an older copy than its own is told it is behind, rather
// than sent the records after the hole as if they followed what it has
// (sim seed 76 counted 276 updates short that way).
func TestMachineConfirmBehindAfterUpstreamRestart(t *testing.T) {
	r, ms, upto := trimmedWorld(t)
	m0 := ms[0]
	confirmed(t, r, m0, 0) // the trim is in fragment 0's durable checkpoint

	// Fragment 0 restarts from that checkpoint, fragment 1 with nothing.
	ms[0] = recovery.NewMachine(r.plan, 0, r.restore(t, 0), 0, false, confirmCfg)
	ms[0].SetNow(r.now)
	if base, _ := ms[0].Fragment().Kept(exchangeCh, 1); base != upto {
		t.Fatalf("restored fragment 0 keeps fragment 1's records from %d, want %d (its trim point)", base, upto)
	}
	ms[1] = recovery.NewMachine(r.plan, 1, recovery.Restored{Fragment: r.plan.NewFragment(1)}, 0, false, confirmCfg)
	ms[1].SetNow(r.now)
	ms[0].Resend(exchangeCh, 1, 0)
	bs := ms[0].Ready().Behinds
	if len(bs) != 1 || bs[0].Dest != 1 || bs[0].Upto != upto {
		t.Fatalf("behinds %+v, want fragment 1 told its records begin at %d", bs, upto)
	}
}

// Readers commit their sources only up to checkpoints a restore may start
// from: with Confirm, once the standby confirmed the copy (a source may
// drop what a commit covers, and the owner's copy alone can be lost).
func TestMachineConfirmCommitsOnCopied(t *testing.T) {
	r, ms := exchangeWorld(t, confirmCfg)
	for _, m := range ms {
		m.Start()
	}
	exchange(t, r, ms[:])
	m0 := ms[0]
	m0.Step(r.batch(t, 0, 0, 12, 0), reader(0))
	m0.Ready()
	cp := r.write(t, m0, 0)
	m0.Durable(cp.Manifest.Offsets, nil)
	if rd := m0.Ready(); rd.Commits != nil {
		t.Fatalf("a durable checkpoint not yet copied lets the readers commit %v", rd.Commits)
	}
	m0.Copied(cp.Manifest.Epoch)
	rd := m0.Ready()
	if got := rd.Commits[part(0, 0)]; got != 12 {
		t.Fatalf("after the standby's confirmation the readers may commit %v, want events/0 at 12", rd.Commits)
	}
}

// After a restore, a fragment takes no checkpoint, and answers its own
// upstreams' probes "unknown", until every upstream fragment answered
// its replay request. An upstream that has not applied the placement
// that moved the fragment yet sends the answer to the old owner, and one
// with no new outputs sends nothing else: the request is asked again a
// tenth of RewindTimeout later, not after all of it (sim scenario
// kill_both_in_turn: restored fragments took their first checkpoint
// seconds late, and a second crash meanwhile found no copy of them).
func TestMachineConfirmUnsettledAskedAgainSoon(t *testing.T) {
	r, ms := exchangeWorld(t, confirmCfg)
	for _, m := range ms {
		m.Start()
	}
	exchange(t, r, ms[:])
	t0 := r.now
	ms[1] = recovery.NewMachine(r.plan, 1, recovery.Restored{Fragment: r.plan.NewFragment(1)}, 0, false, confirmCfg)
	m1 := ms[1]
	m1.SetNow(t0)
	m1.Replay()
	m1.Start()
	want := []rewind{{part(sourceCh, 0), 0, ""}, {part(exchangeCh, 0), 0, ""}, {part(exchangeCh, 1), 0, ""}}
	if got := rewinds(m1.Ready().Rewinds); !slices.Equal(got, want) {
		t.Fatalf("the replay: rewinds %v, want %v", got, want)
	}
	// The answers went astray.
	m1.Tick(t0.Add(recovery.DefaultRewindTimeout/10 - time.Nanosecond))
	if got := m1.Ready().Rewinds; len(got) != 0 {
		t.Fatalf("asked again before a tenth of the timeout: %v", rewinds(got))
	}
	m1.Tick(t0.Add(recovery.DefaultRewindTimeout / 10))
	rd := m1.Ready()
	if got, want := rewinds(rd.Rewinds), want[1:]; !slices.Equal(got, want) {
		t.Fatalf("a tenth of the timeout on: rewinds %v, want the exchange partitions asked again, %v", got, want)
	}
	// Now they come: the fragment settles, and asks nothing more soon.
	r.now = t0.Add(recovery.DefaultRewindTimeout / 10)
	for _, u := range []int{0, 1} {
		ms[u].SetNow(r.now)
		ms[u].Resend(exchangeCh, 1, 0)
		for _, s := range ms[u].Ready().Sends {
			if s.Dest == 1 {
				m1.Step(s.Batch, recovery.From{Key: "fragment", Ref: u, Seq: s.Seq})
			}
		}
	}
	m1.Ready()
	m1.Tick(t0.Add(2 * recovery.DefaultRewindTimeout / 10))
	if got := m1.Ready().Rewinds; len(got) != 0 {
		t.Fatalf("asked again once settled: %v", rewinds(got))
	}
	exchange(t, r, ms[:])
	if m1.Verifying() {
		t.Fatal("still verifying once every fragment answered")
	}
}

// A batch lost on its way is sent again from where its receiver's
// confirmed checkpoint does not cover (Trim), not from where it began: a
// request for records the receiver's checkpoint covers is answered Behind,
// not with a batch, and a restored fragment's probe of that receiver
// would be gone with nothing left to answer it — the fragment verified
// for good and never released its outputs (sim seed 1833: a fragment
// that answered a request from 0 while it waited for a hand-off, then
// restored, had that batch still unacknowledged when the receiver's
// checkpoint covered it). A waiting fragment answers no request now (sim
// seed 20409): the batch here is lost right after the wait.
func TestMachineConfirmLostBatchResentPastTrim(t *testing.T) {
	r, _, upto := trimmedWorld(t)
	t0 := r.now
	m0 := recovery.NewMachine(r.plan, 0, r.restore(t, 0), 0, true, confirmCfg)
	m0.SetNow(t0)
	m0.Resend(exchangeCh, 1, 0) // fragment 1 asks while fragment 0 waits
	if s := m0.Ready().Sends; len(s) != 0 {
		t.Fatalf("a waiting fragment answered with %+v: its copy may yet be replaced, or not be durable", s)
	}
	m0.StopWaiting()
	m0.Resend(exchangeCh, 1, 0) // asked again: the batch is lost
	if s := m0.Ready().Sends; len(s) != 1 || s[0].Batch.PrevEnd != 0 {
		t.Fatalf("the answer after the wait: %+v", s)
	}
	m0.Tick(t0)
	for _, s := range m0.Ready().Sends { // the probes: fragment 1 does not know yet
		end := int64(-1)
		if s.Dest == 0 {
			end = s.Batch.End
		}
		m0.AckedEnd(s.Seq, end)
	}
	m0.Trim(exchangeCh, 1, upto) // fragment 1's confirmed checkpoint covers the records
	m0.Ready()
	m0.Tick(t0.Add(recovery.DefaultRewindTimeout))
	rd := m0.Ready()
	if len(rd.Behinds) != 0 || len(rd.Sends) != 1 || rd.Sends[0].Dest != 1 || rd.Sends[0].Batch.PrevEnd != upto {
		t.Fatalf("the lost batch sent again: %d sends, behinds %+v; want one to fragment 1 from %d", len(rd.Sends), rd.Behinds, upto)
	}
	m0.AckedEnd(rd.Sends[0].Seq, upto)
	if m0.Verifying() {
		t.Fatal("still verifying once fragment 1 said where it is")
	}
}

// A probe answered "unknown" is sent again a tenth of RewindTimeout on,
// even if an older batch, sent since less than RewindTimeout, is still
// unacknowledged: the check once looked at the oldest only, and a
// restored fragment that answered a request while it waited for a
// hand-off verified for seconds more (sim seed 1833; a waiting fragment
// answers none now, so the request here comes as the wait ends).
func TestMachineConfirmProbeResentBehindOlderBatch(t *testing.T) {
	r, _, _ := trimmedWorld(t)
	t0 := r.now
	m0 := recovery.NewMachine(r.plan, 0, r.restore(t, 0), 0, true, confirmCfg)
	m0.SetNow(t0)
	m0.StopWaiting()
	m0.Resend(exchangeCh, 1, 0) // answered, not acknowledged yet
	if s := m0.Ready().Sends; len(s) != 1 {
		t.Fatalf("the answer: %+v", s)
	}
	m0.Tick(t0)
	for _, s := range m0.Ready().Sends {
		m0.AckedEnd(s.Seq, -1) // the probes: not known yet
	}
	m0.Tick(t0.Add(recovery.DefaultRewindTimeout / 10))
	got := map[int]bool{}
	for _, s := range m0.Ready().Sends {
		got[s.Dest] = true
	}
	if !got[0] || !got[1] {
		t.Fatalf("a tenth of the timeout after \"unknown\": probes sent again to %v, want fragments 0 and 1", got)
	}
}

// A fragment that starts a lineage (here from nothing, its copies out of
// reach) and is handed off before it verified its copy takes no final
// checkpoint: its driver hands off the last durable one, of an older
// lineage or none. Its lineage began all the same: its ends let upstream
// fragments verify their own new lineages. The hand-off must be judged by
// the lineage, or the new owner keeps its own copy of an older lineage,
// which applied an upstream's old lineage, and applies the upstream's new
// one on top of it (sim seed 6458: fragment 1's copy from before a pause
// had applied fragment 0's old outputs up to 315; fragment 0 had started
// anew from nothing, verified against fragment 1's empty lineage, and
// counted to 387 again; the view was 16 updates off).
func TestMachineConfirmHandoffOfVerifyingLineage(t *testing.T) {
	r, ms := exchangeWorld(t, confirmCfg)
	for _, m := range ms {
		m.Start()
	}
	exchange(t, r, ms[:])
	ms[0].Step(r.batch(t, 0, 0, 12, 0), reader(0))
	ms[0].Ready()
	confirmed(t, r, ms[0], 0)
	exchange(t, r, ms[:])
	old, _ := confirmed(t, r, ms[1], 1) // the copy its old owner keeps
	if old.Manifest.Offsets[part(exchangeCh, 0)] == 0 {
		t.Fatalf("fragment 1's copy applied none of fragment 0's outputs: %v", old.Manifest.Offsets)
	}

	// Both owners are gone; a node that has no copy starts both fragments
	// anew under placement 7. Fragment 0 verifies against fragment 1's
	// answer; fragment 1 is handed off before its own probes are answered.
	const placement = 7
	fresh := func(f int, wait bool) *recovery.Machine {
		m := recovery.NewMachine(r.plan, f, recovery.Restored{Fragment: r.plan.NewFragment(f)}, placement, wait, confirmCfg)
		m.SetNow(r.now)
		m.Start()
		return m
	}
	n0, n1 := fresh(0, false), fresh(1, false)
	// Fragment 1's probes arrive and are answered; the answers are lost.
	ns := [2]*recovery.Machine{n0, n1}
	for round := range 12 {
		for f, m := range ns {
			rd := m.Ready()
			for _, s := range rd.Sends {
				s.Batch.Epoch = placement
				ns[s.Dest].Step(s.Batch, recovery.From{Key: "fragment", Ref: f, Seq: s.Seq})
			}
			for _, a := range rd.Acks {
				if a.Ref == 0 {
					n0.AckedEnd(a.Seq, a.End)
				}
			}
			for _, rw := range rd.Rewinds {
				if u := rw.Part.Partition; rw.Part.Source == exchangeCh {
					ns[u].Resend(exchangeCh, f, rw.To)
				}
			}
		}
		if round%3 == 2 { // what was sent is answered before anything is sent again
			r.now = r.now.Add(recovery.DefaultRewindTimeout)
			for _, m := range ns {
				m.Tick(r.now)
			}
		}
	}
	if n0.Verifying() {
		t.Fatal("fragment 0 still verifies after its downstream fragments answered")
	}
	if !n1.Verifying() {
		t.Fatal("fragment 1 verified without its answers")
	}
	if cp, err := n1.FinalCheckpoint(); cp != nil || err != nil {
		t.Fatalf("a final checkpoint while verifying: %v, %v", cp, err)
	}
	if got := n1.HandoffEpoch(); got <= old.Manifest.Epoch {
		t.Fatalf("fragment 1's hand-off is judged by epoch %d, not above its old copy's %d: the new owner keeps the copy that applied fragment 0's old lineage", got, old.Manifest.Epoch)
	}

	// A fragment with no lineage of its own hands off its last checkpoint
	// as it is: it waits for a hand-off, or dropped its state after a pause.
	if got := fresh(1, true).HandoffEpoch(); got != 0 {
		t.Fatalf("a waiting fragment's hand-off is judged by %d", got)
	}
	n1.Resumed()
	if got := n1.HandoffEpoch(); got != 0 {
		t.Fatalf("a resumed fragment's hand-off is judged by %d", got)
	}
}

// After a start (or a restore), fragments that feed each other settle
// without waiting on a timer: a fragment answers a probe "unknown" while
// another of its inputs is unsettled, and answers it again with its end
// once every input settled, so the prober stops verifying — and may take
// its first checkpoint — with no probe sent twice.
func TestMachineConfirmSettlesWithoutProbingAgain(t *testing.T) {
	_, ms := exchangeWorld(t, confirmCfg)
	for _, m := range ms {
		m.Start()
	}
	// Every message is carried at once, in the order made; no clock moves.
	type msg struct {
		to   int
		send *recovery.Send
		ack  *recovery.From
	}
	var queue []msg
	unknown := 0
	take := func(f int) {
		rd := ms[f].Ready()
		for i := range rd.Sends {
			queue = append(queue, msg{to: rd.Sends[i].Dest, send: &rd.Sends[i]})
		}
		for i := range rd.Acks {
			if ref, ok := rd.Acks[i].Ref.(int); ok {
				if rd.Acks[i].End < 0 {
					unknown++
				}
				queue = append(queue, msg{to: ref, ack: &rd.Acks[i]})
			}
		}
	}
	for f := range ms {
		take(f)
	}
	for len(queue) > 0 {
		q := queue[0]
		queue = queue[1:]
		if q.send != nil {
			from := q.send.Batch.Partition
			ms[q.to].Step(q.send.Batch, recovery.From{Key: "fragment", Ref: from, Seq: q.send.Seq})
		} else {
			ms[q.to].AckedEnd(q.ack.Seq, q.ack.End)
		}
		take(q.to)
	}
	if unknown == 0 {
		t.Fatal("no probe was answered unknown: the test does not reach the case")
	}
	for f, m := range ms {
		if m.Verifying() {
			t.Fatalf("fragment %d still verifies: a probe answered unknown was not answered again", f)
		}
	}
}

// An acknowledgement names its batch by number only and reaches the
// sender's address, where the fragment's next machine may run by then. A
// downstream fragment that has not heard from all its upstreams since its
// restore answers a probe "unknown", and answers it again with its end
// once it has (answerProbers): seconds later if an upstream was away. A
// next machine that numbered its sends from 1 again took that answer for
// its own batch of the same number, on another exchange and at an end the
// answer passed, and went stale for good although its copy was the
// newest (sim visits seed 84150: fragment 5's machine on n4, fenced after
// a pause, had probed fragment 1, which answered 5.7 s later, when the
// next machine ran). A machine numbers its sends past the earlier
// machine's (MachineConfig.FirstSend): the late answer finds no batch,
// and the answers to its own probes settle it.
func TestMachineConfirmLateAnswerToEarlierMachine(t *testing.T) {
	// Two exchanges out of the counts: every update, keyed by the count
	// reached (channel 1), and the odd ones, keyed by key (channel 2), so
	// that a fragment's outputs on the two end at different numbers.
	in := flowstest.NewInput[ev](1)
	fl := flows.New("two-exchanges", flows.WithFragments(2))
	counts := flows.Count(flows.KeyBy(flows.From(fl, "events", in), func(e ev) string { return e.Key })).View("counts")
	flows.Count(flows.KeyBy(counts.Updates(), func(kv flows.KV[string, int64]) int64 { return kv.Value })).View("reached")
	odd := flows.Filter(counts.Updates(), func(kv flows.KV[string, int64]) bool { return kv.Value%2 == 1 })
	flows.Count(flows.KeyBy(odd, func(kv flows.KV[string, int64]) string { return kv.Key })).View("odd")
	plan, err := flowcore.Compile(fl)
	if err != nil {
		t.Fatal(err)
	}
	if got := plan.Exchanges(); !slices.Equal(got, []int{1, 2}) {
		t.Fatalf("exchange channels %v, want 1 and 2", got)
	}
	r := &rig{plan: plan, in: in, store: newStore(t), now: time.Unix(1_000_000, 0)}
	for f := range 2 {
		for _, k := range keysOf(f, 2, 3) {
			r.push(0, k, k, k, k)
		}
	}

	// The driver: messages go one at a time, in the order made, and an
	// acknowledgement to whatever machine of the fragment it names runs
	// then. last is the largest number fragment 0's machines sent.
	var ms [2]*recovery.Machine
	type msg struct {
		from, to int
		send     *recovery.Send
		ack      *recovery.From
		rewind   *recovery.Rewind
	}
	var queue, held []msg
	var last uint64
	var stale [2]error
	take := func(f int) {
		rd := ms[f].Ready()
		stale[f] = cmpErr(stale[f], rd.Stale)
		for i, s := range rd.Sends {
			if f == 0 {
				last = max(last, s.Seq)
			}
			queue = append(queue, msg{from: f, to: s.Dest, send: &rd.Sends[i]})
		}
		for i, a := range rd.Acks {
			if ref, ok := a.Ref.(int); ok {
				queue = append(queue, msg{from: f, to: ref, ack: &rd.Acks[i]})
			}
		}
		for i, rw := range rd.Rewinds {
			if plan.IsExchange(rw.Part.Source) {
				queue = append(queue, msg{from: f, to: rw.Part.Partition, rewind: &rd.Rewinds[i]})
			}
		}
	}
	run := func(hold func(msg) bool) {
		for len(queue) > 0 {
			q := queue[0]
			queue = queue[1:]
			if hold != nil && hold(q) {
				held = append(held, q)
				continue
			}
			m := ms[q.to]
			switch {
			case q.send != nil:
				m.Step(q.send.Batch, recovery.From{Key: "fragment", Ref: q.from, Seq: q.send.Seq})
			case q.ack != nil:
				m.AckedEnd(q.ack.Seq, q.ack.End)
			default:
				m.Resend(q.rewind.Part.Source, q.from, q.rewind.To)
			}
			take(q.to)
		}
	}
	start := func(f int, rs recovery.Restored, first uint64) {
		cfg := confirmCfg
		cfg.FirstSend = first
		ms[f] = recovery.NewMachine(plan, f, rs, 0, false, cfg)
		ms[f].SetNow(r.now)
		ms[f].Replay()
		ms[f].Start()
		take(f)
	}
	for f := range ms {
		start(f, recovery.Restored{Fragment: plan.NewFragment(f)}, 0)
	}
	run(nil)
	ms[0].Step(r.batch(t, 0, 0, 12, 0), reader(0))
	ms[0].Ready()
	_, rd := confirmed(t, r, ms[0], 0)
	if len(rd.Sends) == 0 {
		t.Fatal("fragment 0's confirmed checkpoint released nothing")
	}
	queue = nil
	ms[0].Resend(1, 1, 0) // its outputs, as fragment 1 asks for them
	ms[0].Resend(2, 1, 0)
	take(0)
	run(nil)
	confirmed(t, r, ms[1], 1)
	take(1)
	run(nil)
	ends := [2]int64{ms[1].Vector().End(part(1, 0)), ms[1].Vector().End(part(2, 0))}
	if ends[0] == 0 || ends[0] == ends[1] {
		t.Fatalf("fragment 1 applied fragment 0's outputs on the exchanges up to %v: want two different ends", ends)
	}

	// Both fragments start again from their copies. Fragment 1 hears from
	// fragment 0 but not from itself (its own messages are late): it
	// answers fragment 0's probes "unknown". Its two requests reach
	// fragment 0 out of order.
	start(1, r.restore(t, 1), 0)
	start(0, r.restore(t, 0), last+1)
	var asks []int
	for i, q := range queue {
		if q.rewind != nil && q.from == 1 && q.to == 0 {
			asks = append(asks, i)
		}
	}
	if len(asks) != 2 {
		t.Fatalf("fragment 1 asks fragment 0 %d times, want once per exchange", len(asks))
	}
	queue[asks[0]], queue[asks[1]] = queue[asks[1]], queue[asks[0]]
	late := func(q msg) bool { return q.from == 1 && q.to == 1 }
	run(late)
	if !ms[0].Verifying() || !ms[1].Verifying() {
		t.Fatalf("verifying: fragment 0 %v, fragment 1 %v; want both waiting for fragment 1", ms[0].Verifying(), ms[1].Verifying())
	}
	ownLate := held

	// Fragment 0's node stops it (a fence) and starts it again from the
	// same copy; what was on its way to or from the earlier machine is
	// lost. The new machine sends, and its messages to fragment 1 are
	// late too. Then fragment 1's own messages come: it settles and
	// answers the earlier machine's probes again, which reaches the
	// machine that runs now; then the new machine's probes come.
	queue = slices.DeleteFunc(queue, func(q msg) bool { return q.from == 0 || q.to == 0 })
	held = nil
	start(0, r.restore(t, 0), last+1)
	run(func(q msg) bool { return late(q) || q.from == 0 && q.to == 1 })
	probes := held
	queue, held = ownLate, nil
	run(nil)
	queue = probes
	run(nil)
	for f, m := range ms {
		if m.Stale() {
			t.Fatalf("fragment %d went stale although its copy is the newest there is: %v", f, stale[f])
		}
		if m.Verifying() {
			t.Fatalf("fragment %d still verifies once every message came", f)
		}
	}
}
