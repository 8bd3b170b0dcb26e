//go:build race

package nbio

// raceEnabled: the race detector learns of the ordering that a read and a
// write on the same socket create from annotations in package syscall,
// which raw system calls skip. Under -race, Wrap leaves connections alone
// so that tests across a socket do not report false races.
const raceEnabled = true
