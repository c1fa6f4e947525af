package sim_test

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cockroachdb/datadriven"

	"github.com/tessera-streams/tessera/sim"
)

// TestScenarios runs the scenario files in testdata: each drives a
// simulated cluster running the world flow (see world_test.go) with
// commands and prints what it shows. Rewrite the expected output with
// go test ./sim -run TestScenarios -rewrite.
//
//	cluster seed=1 fragments=8 partitions=2 stages=2   (optional, before the first start; stages=1 drops the groups stage;
//	                        pause-limit=1h sets Config.PauseLimit: a node paused for less does not notice it)
//	start n1 n2 n3          start or restart nodes
//	push 10000              append events to the input
//	kill n2 | restart n2 | leave n2 | pause n1 | resume n1
//	partition n1 | n2 n3    cut every link between the sides, both ways
//	cut n1 -> n2            cut one link, one way
//	heal                    restore every link
//	faults drop=0.1 duplicate=0.1 reorder=0.2 delay=5ms
//	disk-full n2 | disk-ok n2
//	slow-disk n2 300ms      every sync of n2's store ends 300ms later (fast-disk n2 undoes it)
//	run 5s                  move the virtual clock
//	check exact             run (at most 2 minutes) until the cluster is whole, the views equal a sequential count and the sink holds one output per event
//	show placement | show members | show counts | show pauses | show stale | show disk
func TestScenarios(t *testing.T) {
	datadriven.Walk(t, "testdata", func(t *testing.T, path string) {
		s := &scenario{}
		defer s.close(t)
		datadriven.RunTest(t, path, func(t *testing.T, d *datadriven.TestData) string {
			out, err := s.do(d)
			if err != nil {
				return "error: " + err.Error() + "\n"
			}
			return out
		})
	})
}

type scenario struct {
	w *world
}

func (s *scenario) close(t *testing.T) {
	if s.w != nil {
		if err := s.w.c.Close(); err != nil {
			t.Error(err)
		}
	}
}

func (s *scenario) init(cfg sim.Config, fragments, parts, stages int) error {
	if s.w != nil {
		return fmt.Errorf("the cluster exists already")
	}
	if os.Getenv("SIM_TRACE") != "" {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	w, err := newWorld(cfg, fragments, parts, stages, false)
	s.w = w
	return err
}

func names(d *datadriven.TestData) []string {
	var out []string
	for _, a := range d.CmdArgs {
		out = append(out, a.Key)
	}
	return out
}

func (s *scenario) do(d *datadriven.TestData) (string, error) {
	if d.Cmd == "cluster" {
		seed, fragments, parts, stages := uint64(1), 8, 2, 2
		var pauseLimit time.Duration
		for _, a := range d.CmdArgs {
			if len(a.Vals) != 1 {
				return "", fmt.Errorf("%s wants one value", a.Key)
			}
			if a.Key == "pause-limit" {
				v, err := time.ParseDuration(a.Vals[0])
				if err != nil {
					return "", err
				}
				pauseLimit = v
				continue
			}
			v, err := strconv.Atoi(a.Vals[0])
			if err != nil {
				return "", err
			}
			switch a.Key {
			case "seed":
				seed = uint64(v)
			case "fragments":
				fragments = v
			case "partitions":
				parts = v
			case "stages":
				stages = v
			default:
				return "", fmt.Errorf("unknown argument %s", a.Key)
			}
		}
		return "ok\n", s.init(sim.Config{Seed: seed, PauseLimit: pauseLimit}, fragments, parts, stages)
	}
	if s.w == nil {
		if err := s.init(sim.Config{Seed: 1}, 8, 2, 2); err != nil {
			return "", err
		}
	}
	c := s.w.c
	each := func(fn func(string) error) (string, error) {
		for _, n := range names(d) {
			if err := fn(n); err != nil {
				return "", err
			}
		}
		return "ok\n", nil
	}
	switch d.Cmd {
	case "start":
		return "ok\n", c.Start(names(d)...)
	case "kill":
		return each(c.Kill)
	case "restart":
		return each(c.Restart)
	case "leave":
		return each(c.Leave)
	case "pause":
		return each(c.Pause)
	case "resume":
		return each(c.Resume)
	case "disk-full", "disk-ok":
		return each(func(n string) error { return c.DiskFull(n, d.Cmd == "disk-full") })
	case "slow-disk":
		ns := names(d)
		if len(ns) < 2 {
			return "", fmt.Errorf("slow-disk wants nodes and a delay: slow-disk n1 300ms")
		}
		delay, err := time.ParseDuration(ns[len(ns)-1])
		if err != nil {
			return "", err
		}
		for _, n := range ns[:len(ns)-1] {
			if err := c.SlowDisk(n, delay); err != nil {
				return "", err
			}
		}
		return "ok\n", nil
	case "fast-disk":
		return each(func(n string) error { return c.SlowDisk(n, 0) })
	case "push":
		n, err := strconv.Atoi(names(d)[0])
		if err != nil {
			return "", err
		}
		s.w.push(n)
		return fmt.Sprintf("%d events in all\n", s.w.pushed), nil
	case "partition":
		a, b, ok := strings.Cut(strings.Join(names(d), " "), "|")
		if !ok {
			return "", fmt.Errorf("partition wants two sides: a b | c d")
		}
		return "ok\n", c.Partition(strings.Fields(a), strings.Fields(b))
	case "cut":
		ns := names(d)
		if len(ns) != 3 || ns[1] != "->" {
			return "", fmt.Errorf("cut wants: from -> to")
		}
		return "ok\n", c.Cut(ns[0], ns[2])
	case "heal":
		c.Heal()
		return "ok\n", nil
	case "faults":
		var f sim.Faults
		for _, a := range d.CmdArgs {
			if len(a.Vals) != 1 {
				return "", fmt.Errorf("%s wants one value", a.Key)
			}
			if a.Key == "delay" {
				v, err := time.ParseDuration(a.Vals[0])
				if err != nil {
					return "", err
				}
				f.Delay = v
				continue
			}
			v, err := strconv.ParseFloat(a.Vals[0], 64)
			if err != nil {
				return "", err
			}
			switch a.Key {
			case "drop":
				f.Drop = v
			case "duplicate":
				f.Duplicate = v
			case "reorder":
				f.Reorder = v
			default:
				return "", fmt.Errorf("unknown fault %s", a.Key)
			}
		}
		return "ok\n", c.SetFaults(f)
	case "run":
		dt, err := time.ParseDuration(names(d)[0])
		if err != nil {
			return "", err
		}
		c.Run(dt)
		return fmt.Sprintf("t=%v\n", c.Elapsed()), nil
	case "check":
		if a := names(d); len(a) != 1 || a[0] != "exact" {
			return "", fmt.Errorf("check wants: check exact")
		}
		start := c.Elapsed()
		if p := s.w.settle(2 * time.Minute); len(p) > 0 {
			return "NOT EXACT after 2m:\n" + strings.Join(p, "\n") + "\n", nil
		}
		return fmt.Sprintf("exact after %v: %d events counted, %d outputs in the sink\n", c.Elapsed()-start, s.w.pushed, len(s.w.sink)), nil
	case "show":
		what := names(d)
		if len(what) != 1 {
			return "", fmt.Errorf("show wants one of: placement, members, counts, pauses, stale, disk")
		}
		switch what[0] {
		case "placement":
			return c.Placement(), nil
		case "status":
			return c.Status(), nil
		case "members":
			var b strings.Builder
			for _, n := range c.Nodes() {
				ms := c.Members(n)
				if ms == nil {
					fmt.Fprintf(&b, "%s: down\n", n)
					continue
				}
				fmt.Fprintf(&b, "%s sees %s\n", n, strings.Join(ms, " "))
			}
			return b.String(), nil
		case "stale":
			return fmt.Sprintf("stale copies found %d\n", c.Counts().Stale), nil
		case "pauses":
			var b strings.Builder
			for _, n := range c.Up() {
				fmt.Fprintf(&b, "%s noticed %d pauses\n", n, c.Pauses(n))
			}
			fmt.Fprintf(&b, "fragments that dropped their state after a pause: %d\n", c.Counts().Resumed)
			return b.String(), nil
		case "disk":
			k := c.Counts()
			return fmt.Sprintf("slow writes %d, cut short by a crash %d; hand-offs that waited for a write %d\n",
				k.SlowWrites, k.TornWrites, k.HandoffsAfterWrite), nil
		case "counts":
			k := c.Counts()
			return fmt.Sprintf("handoffs %d, fenced %d, crashes %d, restarts %d; messages %d: dropped %d, duplicated %d, reordered %d, cut %d\n",
				k.Handoffs, k.Fenced, k.Crashes, k.Restarts, k.Messages, k.Dropped, k.Duplicated, k.Reordered, k.Cut), nil
		}
		return "", fmt.Errorf("show wants one of: placement, members, counts, pauses, stale, disk")
	}
	return "", fmt.Errorf("unknown command %q", d.Cmd)
}
