//go:build !linux

package ratelimit

func cpuTime() int64 { return 0 }
