//go:build !race

package sim_test

// raceDetector is whether the race detector is on (see race_test.go).
const raceDetector = false
