package sim_test

import (
	"testing"
	"time"

	"github.com/tessera-streams/tessera/sim"
)

func TestSmoke(t *testing.T) {
	w, err := newWorld(sim.Config{Seed: 1}, 8, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer w.c.Close()
	if err := w.c.Start("n1", "n2", "n3"); err != nil {
		t.Fatal(err)
	}
	w.push(2000)
	if p := w.settle(30 * time.Second); len(p) > 0 {
		t.Fatalf("%v\n%s", p, w.c.Placement())
	}
	t.Logf("exact at %v: %+v\n%s", w.c.Elapsed(), w.c.Counts(), w.c.Placement())
	if err := w.c.Kill("n2"); err != nil {
		t.Fatal(err)
	}
	w.push(2000)
	if p := w.settle(60 * time.Second); len(p) > 0 {
		t.Fatalf("%v\n%s", p, w.c.Placement())
	}
	t.Logf("exact at %v: %+v\n%s", w.c.Elapsed(), w.c.Counts(), w.c.Placement())
}
