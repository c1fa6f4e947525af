package shard

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// follow feeds f the same view at every tick from..to (50 ms apart) and
// returns the first step that is not a wait, and when it came.
func follow(f *Follower, v View, from, to time.Duration) (Step, time.Duration) {
	for d := from; d <= to; d += 50 * time.Millisecond {
		v.Now = t0.Add(d)
		if s := f.Next(v); s.Kind != StepWait {
			return s, d
		}
	}
	return Step{}, -1
}

func TestFollowerScenarios(t *testing.T) {
	cfg := FollowConfig{Start: time.Second, Expect: 2, Settle: 300 * time.Millisecond, Resume: 3 * time.Second}
	three := []string{"n1", "n2", "n3"}
	view := func(members []string, epoch uint64, majority bool) View {
		return View{Members: members, Epoch: epoch, Agreed: three, Majority: majority, Lease: 2 * time.Second}
	}
	// started places n1's first placement over three members at epoch 4.
	started := func(t *testing.T) *Follower {
		f := NewFollower(cfg)
		s, at := follow(f, view(three, 4, true), 0, 5*time.Second)
		if s.Kind != StepPlace || !s.First || s.Epoch != 4 || at != time.Second {
			t.Fatalf("first step %+v at %v, want the first placement at epoch 4 after 1s", s, at)
		}
		f.Done(s, nil)
		return f
	}

	t.Run("first placement waits for the expected members", func(t *testing.T) {
		f := NewFollower(cfg)
		if s, _ := follow(f, view([]string{"n1"}, 2, true), 0, 10*time.Second); s.Kind != StepWait {
			t.Fatalf("placed with one of two expected members: %+v", s)
		}
		if s, at := follow(f, view([]string{"n1", "n2"}, 3, true), 10*time.Second, 20*time.Second); s.Kind != StepPlace || at != 11*time.Second {
			t.Fatalf("got %+v at %v, want a placement 1s after the second member came", s, at)
		}
	})
	t.Run("a placement waits for the view to stand still", func(t *testing.T) {
		f := started(t)
		v := view([]string{"n1", "n2", "n3", "n4"}, 5, true)
		if s, _ := follow(f, v, 2*time.Second, 2100*time.Millisecond); s.Kind != StepWait {
			t.Fatalf("placed before the view stood still: %+v", s)
		}
		v.Epoch = 6 // a second wave
		s, at := follow(f, v, 2150*time.Millisecond, 5*time.Second)
		if s.Kind != StepPlace || s.Epoch != 6 || at != 2450*time.Millisecond {
			t.Fatalf("got %+v at %v, want the placement of epoch 6 at 2.45s", s, at)
		}
		f.Done(s, nil)
		if s, _ := follow(f, v, 5*time.Second, 10*time.Second); s.Kind != StepWait {
			t.Fatalf("placed epoch 6 twice: %+v", s)
		}
	})
	t.Run("a placement without a dead member waits the lease", func(t *testing.T) {
		f := started(t)
		s, at := follow(f, view([]string{"n1", "n2"}, 5, true), 2*time.Second, 10*time.Second)
		if s.Kind != StepPlace || at != 4*time.Second {
			t.Fatalf("got %+v at %v, want a placement after the lease (4s)", s, at)
		}
		// A member that leaves is not lost: no lease.
		f = started(t)
		v := view([]string{"n1", "n2"}, 5, true)
		v.Leaving = []string{"n3"}
		if s, at := follow(f, v, 2*time.Second, 10*time.Second); s.Kind != StepPlace || at != 2300*time.Millisecond || !slices.Equal(s.Leaving, []string{"n3"}) {
			t.Fatalf("got %+v at %v, want a placement with n3 leaving after 300ms", s, at)
		}
	})
	t.Run("fenced, then back with no newer placement: resume", func(t *testing.T) {
		f := started(t)
		s, at := follow(f, view(three, 4, false), 2*time.Second, 3*time.Second)
		if s.Kind != StepFence || at != 2*time.Second || !f.Fenced() || !f.Away() {
			t.Fatalf("got %+v at %v, want a fence at once", s, at)
		}
		if s, _ := follow(f, view(three, 4, false), 2050*time.Millisecond, 9*time.Second); s.Kind != StepWait {
			t.Fatalf("acted while fenced: %+v", s)
		}
		s, at = follow(f, view(three, 4, true), 10*time.Second, 20*time.Second)
		if s.Kind != StepResume || s.Epoch != 4 || at != 13*time.Second || f.Fenced() || !f.Away() {
			t.Fatalf("got %+v at %v, want a resume of epoch 4 after 3s", s, at)
		}
		f.Done(s, nil)
		if f.Away() {
			t.Fatal("away after it resumed")
		}
	})
	t.Run("fenced, then back to a newer placement: place", func(t *testing.T) {
		f := started(t)
		follow(f, view(three, 4, false), 2*time.Second, 2*time.Second)
		s, at := follow(f, view(three, 7, true), 10*time.Second, 20*time.Second)
		if s.Kind != StepPlace || s.Epoch != 7 || s.First || at != 13*time.Second {
			t.Fatalf("got %+v at %v, want the placement of epoch 7 after 3s", s, at)
		}
	})
	t.Run("declared dead while fenced: no resume", func(t *testing.T) {
		f := started(t)
		follow(f, view(three, 4, false), 2*time.Second, 2*time.Second)
		if f.Dead() {
			t.Fatal("a fenced node told to drop its fragments")
		}
		if s, _ := follow(f, view(three, 4, true), 10*time.Second, 20*time.Second); s.Kind != StepWait {
			t.Fatalf("resumed an epoch the others may have placed past: %+v", s)
		}
		if s, at := follow(f, view(three, 8, true), 20*time.Second, 30*time.Second); s.Kind != StepPlace || s.Epoch != 8 || at != 20300*time.Millisecond {
			t.Fatalf("got %+v at %v, want the placement of epoch 8", s, at)
		}
	})
	t.Run("declared dead while it owns", func(t *testing.T) {
		f := started(t)
		if !f.Dead() {
			t.Fatal("a zombie not told to drop its fragments")
		}
	})
	t.Run("a failed placement is asked again", func(t *testing.T) {
		f := started(t)
		v := view(three, 5, true)
		s, at := follow(f, v, 2*time.Second, 5*time.Second)
		if s.Kind != StepPlace || at != 2300*time.Millisecond {
			t.Fatalf("got %+v at %v", s, at)
		}
		f.Done(s, fmt.Errorf("disk"))
		if s, at := follow(f, v, 2350*time.Millisecond, 5*time.Second); s.Kind != StepPlace || s.Epoch != 5 || at != 2650*time.Millisecond {
			t.Fatalf("got %+v at %v, want the placement again after 300ms", s, at)
		}
	})
	t.Run("no fence before the first placement", func(t *testing.T) {
		f := NewFollower(cfg)
		if s, _ := follow(f, view(three, 4, false), 0, 5*time.Second); s.Kind != StepWait || f.Fenced() {
			t.Fatalf("got %+v, fenced %v", s, f.Fenced())
		}
	})
}

// Whatever a node sees, its Follower never places without a majority,
// never goes back to an older epoch, resumes only the epoch it applied
// after a fence, acts only on a view that stood still for the settle
// time (the lease with a member lost), and places a view that stands
// still long enough with a newer epoch.
func TestFollowerRules(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := FollowConfig{Start: time.Second, Settle: 300 * time.Millisecond, Resume: 3 * time.Second}
		f := NewFollower(cfg)
		all := []string{"n1", "n2", "n3", "n4", "n5"}
		now := t0
		var applied uint64
		started, fenced := false, false
		var lastKey string
		var prev View
		var still time.Time
		for i := range rapid.IntRange(1, 200).Draw(t, "steps") {
			now = now.Add(time.Duration(rapid.IntRange(0, 20).Draw(t, "dt")) * 50 * time.Millisecond)
			var members, leaving []string
			for _, m := range all {
				switch rapid.IntRange(0, 5).Draw(t, "m") {
				case 0:
				case 1:
					leaving = append(leaving, m)
				default:
					members = append(members, m)
				}
			}
			agreedN := rapid.IntRange(0, 5).Draw(t, "agreed")
			v := View{Now: now, Members: members, Leaving: leaving, Epoch: uint64(rapid.IntRange(1, 8).Draw(t, "epoch")),
				Agreed: all[:agreedN], Majority: rapid.Bool().Draw(t, "majority"), Lease: 2 * time.Second}
			if rapid.IntRange(0, 3).Draw(t, "keep") > 0 && i > 0 {
				// Mostly the view of the step before, so that views stand still.
				v.Members, v.Leaving, v.Epoch = prev.Members, prev.Leaving, prev.Epoch
			}
			prev = v
			if k := fmt.Sprint(v.Members, v.Leaving, v.Epoch); k != lastKey {
				lastKey, still = k, now
			}
			wasFenced := fenced
			s := f.Next(v)
			switch s.Kind {
			case StepFence:
				if !started || fenced || v.Majority {
					t.Fatalf("fence with started %v fenced %v majority %v", started, fenced, v.Majority)
				}
				fenced = true
			case StepPlace, StepResume:
				if !v.Majority {
					t.Fatalf("%v without a majority", s.Kind)
				}
				if wasFenced && now.Sub(still) < cfg.Resume {
					t.Fatalf("%v %v after a fence, before the view stood still for Resume", s.Kind, now.Sub(still))
				}
				if now.Sub(still) < cfg.Settle {
					t.Fatalf("%v after the view stood still for %v", s.Kind, now.Sub(still))
				}
				if s.Kind == StepPlace && started && s.Epoch <= applied {
					t.Fatalf("placed epoch %d after %d", s.Epoch, applied)
				}
				if s.Kind == StepResume && (s.Epoch != applied || !f.Away()) {
					t.Fatalf("resumed epoch %d (applied %d, away %v)", s.Epoch, applied, f.Away())
				}
				if !slices.Equal(s.Members, v.Members) || len(s.Members) == 0 {
					t.Fatalf("placed %v, sees %v", s.Members, v.Members)
				}
				if rapid.IntRange(0, 9).Draw(t, "fails") == 0 {
					f.Done(s, fmt.Errorf("failed"))
					continue
				}
				f.Done(s, nil)
				started, applied = true, s.Epoch
			}
			if v.Majority {
				fenced = false
			}
			if f.Fenced() != fenced {
				t.Fatalf("fenced %v, want %v", f.Fenced(), fenced)
			}
		}
		// Liveness: a view with a majority and a newer epoch, standing
		// still, is placed within the longest wait.
		v := View{Members: []string{"n1", "n2"}, Epoch: 100, Agreed: all[:1], Majority: true, Lease: 2 * time.Second}
		for d := time.Duration(0); d <= 5*time.Second; d += 50 * time.Millisecond {
			v.Now = now.Add(d)
			if s := f.Next(v); s.Kind == StepPlace {
				return
			}
		}
		t.Fatalf("a still view with a newer epoch was never placed")
	})
}
