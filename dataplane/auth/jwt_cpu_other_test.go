//go:build !unix

package auth

import "time"

func processCPU() (time.Duration, bool) { return 0, false }
