//go:build race

package sim_test

// raceDetector is whether the race detector is on. TestRandomSchedules
// then runs a tenth of its schedules: each is driven by one goroutine (the
// only others are pebble's, alike in every schedule), so more schedules
// find no more races, and each costs ten times as much. make test runs
// this package a second time without the race detector, every schedule.
const raceDetector = true
