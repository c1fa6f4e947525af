package shard

import (
	"fmt"
	"testing"

	"pgregory.net/rapid"
)

func TestMajority(t *testing.T) {
	cases := []struct {
		agreed, side []string
		want         bool
	}{
		{nil, []string{"n3"}, true}, // never placed: the bootstrap
		{[]string{"n1", "n2", "n3"}, []string{"n1", "n2"}, true},
		{[]string{"n1", "n2", "n3"}, []string{"n3"}, false},
		{[]string{"n1", "n2", "n3"}, []string{"n3", "n4", "n5"}, false}, // joiners do not count
		{[]string{"n1", "n2"}, []string{"n1"}, true},                    // the half with the lowest member
		{[]string{"n1", "n2"}, []string{"n2"}, false},
		{[]string{"n4", "n2", "n3", "n1"}, []string{"n2", "n3"}, false},
		{[]string{"n4", "n2", "n3", "n1"}, []string{"n1", "n4"}, true},
		{[]string{"n1"}, []string{"n1"}, true},
		{[]string{"n1"}, nil, false},
	}
	for _, c := range cases {
		if got := Majority(c.agreed, c.side); got != c.want {
			t.Errorf("Majority(%v, %v) = %v, want %v", c.agreed, c.side, got, c.want)
		}
	}
}

// Any split of the agreed members into two sides (nodes joining on
// either side) lets exactly one side own: never both, never neither.
func TestMajorityOneSide(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 9).Draw(t, "n")
		var agreed, a, b []string
		for i := range n {
			m := fmt.Sprintf("n%d", i+1)
			agreed = append(agreed, m)
			if rapid.Bool().Draw(t, "side") {
				a = append(a, m)
			} else {
				b = append(b, m)
			}
		}
		joiners := rapid.IntRange(0, 3).Draw(t, "joiners")
		for i := range joiners {
			a = append(a, fmt.Sprintf("j%d", i))
		}
		if Majority(agreed, a) == Majority(agreed, b) {
			t.Fatalf("agreed %v split %v | %v: both sides answer %v", agreed, a, b, Majority(agreed, a))
		}
	})
}
