// Package metricnames lists the metrics the two planes export, so that the
// deployment assets' tests (the Grafana dashboard, the Helm chart's alert
// rules) can check they query only names that exist.
package metricnames

import (
	"regexp"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/metamcp/metamcp/controlplane"
	"github.com/metamcp/metamcp/dataplane/telemetry"
)

var fqName = regexp.MustCompile(`fqName: "([^"]+)"`)

// Exported returns the names of the metrics the data plane's and the control
// plane's registries describe (Go runtime and process metrics included).
func Exported() map[string]bool {
	names := map[string]bool{}
	for _, reg := range []prometheus.Collector{telemetry.NewMetrics(telemetry.Sources{}, 0).Registry(), controlplane.NewMetrics().Registry()} {
		ch := make(chan *prometheus.Desc, 256)
		go func() {
			reg.Describe(ch)
			close(ch)
		}()
		for d := range ch {
			if m := fqName.FindStringSubmatch(d.String()); m != nil {
				names[m[1]] = true
			}
		}
	}
	return names
}
