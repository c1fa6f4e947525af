//go:build !race

package recovery

// raceDetector is whether the race detector is on (see race_test.go).
const raceDetector = false
