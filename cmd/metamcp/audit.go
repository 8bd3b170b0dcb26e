package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// defaultAuditRetention is how long call records are kept by default.
const defaultAuditRetention = 90 * 24 * time.Hour

// daysDuration is a flag value holding a duration written as Go writes one
// (36h, 90m) or as whole days (90d); 0 means forever.
type daysDuration struct{ d *time.Duration }

func (v daysDuration) String() string {
	if v.d == nil {
		return ""
	}
	d := *v.d
	if d > 0 && d%(24*time.Hour) == 0 {
		return strconv.FormatInt(int64(d/(24*time.Hour)), 10) + "d"
	}
	return d.String()
}

func (v daysDuration) Set(s string) error {
	s = strings.TrimSpace(s)
	var d time.Duration
	if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil || days < 0 {
			return fmt.Errorf("%q: use whole days (90d) or a duration (36h)", s)
		}
		d = time.Duration(days) * 24 * time.Hour
	} else {
		var err error
		if d, err = time.ParseDuration(s); err != nil || d < 0 {
			return fmt.Errorf("%q: use whole days (90d) or a duration (36h)", s)
		}
	}
	*v.d = d
	return nil
}

func (daysDuration) Type() string { return "duration" }
