//go:build linux && !race

package nbio

// raceAcquire and raceRelease annotate raw calls for the race detector:
// see race.go. Without -race they do nothing.
func raceAcquire(uintptr) {}

func raceRelease(uintptr) {}
