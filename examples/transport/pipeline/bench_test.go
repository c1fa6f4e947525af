package pipeline

import (
	"syscall"
	"testing"
	"time"

	"github.com/tessera-streams/tessera/examples/transport/sim"
	"github.com/tessera-streams/tessera/flowstest"
)

// BenchmarkFlow runs the flow over a simulation synchronously (flowstest:
// the engine's rules and checkpoints in memory, no actors), reporting the
// CPU cost per ping without the engine's concurrency:
//
//	go test -run - -bench Flow -cpuprofile /tmp/flow.prof ./examples/transport/pipeline
func BenchmarkFlow(b *testing.B) {
	c := sim.DefaultConfig()
	c.Subscribers = 4000
	s, err := sim.Simulate(c)
	if err != nil {
		b.Fatal(err)
	}
	net := NetworkOf(s)
	o := DefaultOptions()
	o.Fragments = 16
	want := len(Sequential(s.Parts, net, o).Trips)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		d, err := flowstest.New(Flow(s.Source(0, nil), net, o), c.Start)
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Drain(); err != nil {
			b.Fatal(err)
		}
		v, err := d.Value("trips")
		if err != nil || v.(int64) != int64(want) {
			b.Fatalf("%v trips (%v), want %d", v, err, want)
		}
		d.Close()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*s.Pings()), "ns/ping")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N*s.Pings()), "cpu-ns/ping")
}

// cpuTime is the process's user and system CPU time: on a loaded machine
// a steadier measure than the elapsed time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkSequential is the same computation as a plain program.
func BenchmarkSequential(b *testing.B) {
	c := sim.DefaultConfig()
	c.Subscribers = 4000
	s, err := sim.Simulate(c)
	if err != nil {
		b.Fatal(err)
	}
	net := NetworkOf(s)
	o := DefaultOptions()
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuTime()
	for range b.N {
		Sequential(s.Parts, net, o)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*s.Pings()), "ns/ping")
	b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N*s.Pings()), "cpu-ns/ping")
}
