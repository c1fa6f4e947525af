//go:build race

package recovery

// raceDetector is whether the race detector is on. TestAlertLogSimulated
// then runs a tenth of its seeds: each is driven by one goroutine, so
// more seeds find no more races, and each costs about six times as much.
// make test runs this package a second time without the race detector,
// every seed.
const raceDetector = true
