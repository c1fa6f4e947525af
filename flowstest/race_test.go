//go:build race

package flowstest_test

// raceDetector is whether the race detector is on. The randomized tests
// then run fewer cases (a fifth of rapid's checks, one round of
// TestRandomPipelinesUnderNetworkFaults): the harness drives the machines
// from one goroutine (the only others are pebble's, alike in every case),
// so more cases find no more races, and each costs several times as much.
// make test runs this package a second time without the race detector,
// every case.
const raceDetector = true
