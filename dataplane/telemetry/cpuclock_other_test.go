//go:build !linux

package telemetry

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
