package main

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"syscall"
	"time"
)

// CPU time per event is the bench's machine-independent figure: on a
// shared machine wall time moves with whatever else runs, the CPU a run
// spends on each event much less.

// cpuTime is the CPU time, user and system, this process has used so far:
// getrusage(RUSAGE_SELF), every thread, the garbage collector's included.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(fmt.Sprintf("getrusage(RUSAGE_SELF): %v", err)) // fails only for a bad argument
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cost is one run of one contender: its wall time and the CPU time the
// process spent meanwhile. Runs in this process are measured one at a
// time, so the process's CPU is the run's.
type cost struct{ wall, cpu time.Duration }

// measure runs fn and returns what it cost.
func measure(fn func()) cost {
	cpu, start := cpuTime(), time.Now()
	fn()
	return cost{time.Since(start), cpuTime() - cpu}
}

// costs are one contender's runs over the rounds.
type costs []cost

// wall is the median wall time.
func (cs costs) wall() time.Duration {
	ws := make([]time.Duration, len(cs))
	for i, c := range cs {
		ws[i] = c.wall
	}
	return median(ws)
}

// rate is n events over the median wall time.
func (cs costs) rate(n int) float64 { return float64(n) / cs.wall().Seconds() }

// cpuPerEvent is the median CPU time per event over the runs, in ns.
func (cs costs) cpuPerEvent(n int) float64 {
	ns := make([]float64, len(cs))
	for i, c := range cs {
		ns[i] = float64(c.cpu.Nanoseconds()) / float64(n)
	}
	return medianF(ns)
}

// last is the latest run's wall time, rounded for the progress lines.
func (cs costs) last() time.Duration { return cs[len(cs)-1].wall.Round(time.Millisecond) }

// cheapest is the lowest CPU time per event of several contenders' runs.
func cheapest(n int, css ...costs) float64 {
	per := make([]float64, len(css))
	for i, cs := range css {
		per[i] = cs.cpuPerEvent(n)
	}
	return slices.Min(per)
}

// userHZ is the unit of the times in /proc/<pid>/stat: USER_HZ, 100 on
// every Linux architecture Go runs on.
const userHZ = 100

// procCPU is the CPU time, user and system, of every thread of process pid
// so far, from /proc/<pid>/stat: the way to read a child's CPU while it
// runs, which getrusage(RUSAGE_CHILDREN) cannot (it counts children only
// once they are waited for, over their whole life). Its resolution is a
// clock tick, 10 ms.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime + stime (fields 14 and 15) of a /proc/<pid>/stat
// line. Field 2, the command, is in parentheses and may hold spaces and
// parentheses itself: fields are counted from after its last ')'.
func parseStatCPU(b []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc stat %q: no command", b)
	}
	f := bytes.Fields(b[i+1:]) // f[0] is field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc stat %q: %d fields after the command", b, len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(string(s), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}
