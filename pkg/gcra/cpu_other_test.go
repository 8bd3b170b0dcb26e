//go:build !linux

package gcra

func cpuTime() int64 { return 0 }
