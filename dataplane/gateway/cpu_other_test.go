//go:build !linux

package gateway

func cpuTime() int64 { return 0 }
