// Package grafana holds the Grafana dashboard of MetaMCP's metrics; its test
// checks that every query names metrics the binaries export.
package grafana

import (
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/metamcp/metamcp/deploy/internal/metricnames"
)

var metricName = regexp.MustCompile(`\b(?:metamcp|go|process)_[a-z0-9_]+\b`)

func TestDashboardUsesExportedMetrics(t *testing.T) {
	names := metricnames.Exported()
	if len(names) < 20 {
		t.Fatalf("only %d metrics described: %v", len(names), names)
	}
	b, err := os.ReadFile("metamcp.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("metamcp.json: %v", err)
	}
	used := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			for _, n := range metricName.FindAllString(tg.Expr, -1) {
				used++
				base := n
				for _, suffix := range []string{"_bucket", "_count", "_sum"} {
					if b, ok := strings.CutSuffix(n, suffix); ok && names[b] {
						base = b
					}
				}
				if !names[base] {
					t.Errorf("panel %q queries %s, which neither plane exports", p.Title, n)
				}
			}
		}
	}
	if used == 0 {
		t.Error("no query names a metric")
	}
}
