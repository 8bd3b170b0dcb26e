//go:build !race

package nbio

// raceEnabled is false: see race.go.
const raceEnabled = false
