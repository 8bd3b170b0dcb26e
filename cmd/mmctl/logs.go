package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
	"sigs.k8s.io/yaml"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/pkg/canonical"
)

type logsFlags struct {
	endpoint, user, tool, server, method string
	outcomes                             []string
	destructive                          bool
	since, until                         string
	follow, summary, payloads            bool
	limit                                int
}

func newLogsCommand(a *app) *cobra.Command {
	f := &logsFlags{}
	cmd := &cobra.Command{
		Use:   "logs",
		Short: "Show the audit trail: who called what, when, with what outcome",
		Long: `Show the audit trail: one record for every request a data plane received,
refused ones included, oldest first. Filters combine (all must match).

Outcomes: ` + canonical.EnumChoices(metamcpv1.CallOutcome(0).Descriptor()) + `.

-o json prints one record per line (for a SIEM); -o yaml a list. -f keeps
printing new records as the control plane stores them, until interrupted.
--summary counts calls, errors and refusals and gives the median and 95th
percentile latency per principal and tool instead. Captured arguments and
results (an endpoint's audit settings) are shown only with --payloads.`,
		Example: `  mmctl logs --since 1h --user marketing-bot --tool 'github__*'
  mmctl logs --destructive --since 24h
  mmctl logs --outcome unauthorized,forbidden,rate_limited --since 1h
  mmctl logs -f --endpoint team
  mmctl logs -o json --since 2026-01-01T00:00:00Z > audit.jsonl
  mmctl logs --summary --since 1h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			filter, err := f.filter(cmd, a.now())
			if err != nil {
				return err
			}
			if f.summary && (f.follow || f.payloads) {
				return usageErrorf("--summary goes without -f and --payloads")
			}
			if f.limit < 0 {
				return usageErrorf("invalid --limit %d: 0 (all) or more", f.limit)
			}
			a.begin()
			c, err := a.admin()
			if err != nil {
				return err
			}
			if f.summary {
				ctx, cancel := a.rpcContext(cmd.Context())
				defer cancel()
				resp, err := c.SummarizeCallRecords(ctx, &metamcpv1.SummarizeCallRecordsRequest{Filter: filter})
				if err != nil {
					return fmt.Errorf("summarize call records: %w", err)
				}
				return a.printSummary(resp)
			}
			return a.logs(cmd.Context(), c, f, filter)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.endpoint, "endpoint", "", "only calls through this endpoint")
	fl.StringVar(&f.user, "user", "", "only calls by this principal (an API key's principal, a token's subject)")
	fl.StringVar(&f.tool, "tool", "", "only calls of these tools, prompts or resources: a name or a glob (github__*)")
	fl.StringVar(&f.server, "server", "", "only calls served by this upstream server")
	fl.StringVar(&f.method, "method", "", "only this JSON-RPC method (tools/call, tools/list, initialize, ...)")
	fl.StringSliceVar(&f.outcomes, "outcome", nil, "only these outcomes, comma separated")
	fl.BoolVar(&f.destructive, "destructive", false, "only calls of tools annotated destructive (--destructive=false: only the others)")
	fl.StringVar(&f.since, "since", "", "only records from this long ago (1h, 30m, 7d) or this time (RFC 3339) on")
	fl.StringVar(&f.until, "until", "", "only records before this long ago or this time")
	fl.BoolVarP(&f.follow, "follow", "f", false, "keep printing new records until interrupted")
	fl.BoolVar(&f.summary, "summary", false, "print calls, errors, refusals and p50/p95 latency per principal and tool")
	fl.BoolVar(&f.payloads, "payloads", false, "show captured arguments and results")
	fl.IntVar(&f.limit, "limit", 100, "print at most the newest N records (0: all); with -f, of those stored before")
	return cmd
}

// filter builds the request filter from the flags.
func (f *logsFlags) filter(cmd *cobra.Command, now time.Time) (*metamcpv1.CallRecordFilter, error) {
	out := &metamcpv1.CallRecordFilter{Endpoint: f.endpoint, Principal: f.user, Target: f.tool, Server: f.server, Method: f.method}
	ed := metamcpv1.CallOutcome(0).Descriptor()
	for _, o := range f.outcomes {
		if strings.TrimSpace(o) == "" {
			continue
		}
		ev, err := canonical.ParseEnum(ed, o)
		if err != nil || ev.Number() == 0 {
			return nil, usageErrorf("invalid --outcome %q: use %s", o, canonical.EnumChoices(ed))
		}
		out.Outcomes = append(out.Outcomes, metamcpv1.CallOutcome(ev.Number()))
	}
	if cmd.Flags().Changed("destructive") {
		out.Destructive = proto.Bool(f.destructive)
	}
	var err error
	if out.Since, err = parseWhen("--since", f.since, now); err != nil {
		return nil, err
	}
	if out.Until, err = parseWhen("--until", f.until, now); err != nil {
		return nil, err
	}
	if out.Since != nil && out.Until != nil && !out.Since.AsTime().Before(out.Until.AsTime()) {
		return nil, usageErrorf("--since must be before --until")
	}
	return out, nil
}

// parseWhen reads a time given as a duration ago (1h, 7d) or in RFC 3339.
func parseWhen(flag, s string, now time.Time) (*timestamppb.Timestamp, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return timestamppb.New(t), nil
	}
	d, err := parseDays(s)
	if err != nil || d < 0 {
		return nil, usageErrorf("invalid %s %q: use a duration ago (1h, 30m, 7d) or an RFC 3339 time (2026-01-31T08:00:00Z)", flag, s)
	}
	return timestamppb.New(now.Add(-d)), nil
}

// logs prints the records the filter selects, then with -f the new ones.
func (a *app) logs(ctx context.Context, c metamcpv1.AdminServiceClient, f *logsFlags, filter *metamcpv1.CallRecordFilter) error {
	p := &recordPrinter{a: a, payloads: f.payloads}
	var follow metamcpv1.AdminService_FollowCallRecordsClient
	if f.follow {
		// Follow first, so nothing stored while the history is read is
		// missed; what both return is printed once.
		var err error
		follow, err = c.FollowCallRecords(ctx, &metamcpv1.FollowCallRecordsRequest{Filter: filter, IncludePayloads: f.payloads})
		if err == nil {
			_, err = follow.Header()
		}
		if err != nil {
			return fmt.Errorf("follow call records: %w", err)
		}
	}
	history, err := a.history(ctx, c, f, filter)
	if err != nil {
		return err
	}
	if len(history) == 0 && !f.follow && a.output == outputTable {
		fmt.Fprintln(a.stderr, "No call records found.")
		return nil
	}
	seen := map[string]bool{}
	for _, r := range history {
		if r.GetId() != "" {
			seen[r.GetId()] = true
		}
	}
	if err := p.print(history); err != nil {
		return err
	}
	if !f.follow {
		return p.flush()
	}
	if err := p.flush(); err != nil {
		return err
	}
	for {
		resp, err := follow.Recv()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil //nolint:nilerr // interrupted, or the control plane ended the stream
			}
			return fmt.Errorf("follow call records: %w", err)
		}
		var fresh []*metamcpv1.CallRecord
		for _, r := range resp.GetRecords() {
			if r.GetId() != "" && seen[r.GetId()] {
				continue
			}
			fresh = append(fresh, r)
		}
		if err := p.print(fresh); err != nil {
			return err
		}
		if err := p.flush(); err != nil {
			return err
		}
	}
}

// history reads the newest records (up to --limit), returned oldest first.
func (a *app) history(ctx context.Context, c metamcpv1.AdminServiceClient, f *logsFlags, filter *metamcpv1.CallRecordFilter) ([]*metamcpv1.CallRecord, error) {
	ctx, cancel := a.rpcContext(ctx)
	defer cancel()
	var out []*metamcpv1.CallRecord
	token := ""
	for {
		size := 1000
		if f.limit > 0 {
			size = min(size, f.limit-len(out))
		}
		resp, err := c.ListCallRecords(ctx, &metamcpv1.ListCallRecordsRequest{Filter: filter, PageSize: int32(size), PageToken: token, IncludePayloads: f.payloads})
		if err != nil {
			return nil, fmt.Errorf("list call records: %w", err)
		}
		out = append(out, resp.GetRecords()...)
		token = resp.GetNextPageToken()
		if token == "" || (f.limit > 0 && len(out) >= f.limit) {
			break
		}
	}
	slices.Reverse(out)
	return out, nil
}

// recordPrinter prints records in the chosen output format.
type recordPrinter struct {
	a        *app
	payloads bool
	header   bool
	yaml     []json.RawMessage
}

// recordJSON is a record as one line of JSON, enums spelled as mmctl does.
func recordJSON(r *metamcpv1.CallRecord) ([]byte, error) {
	raw, err := protojson.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("encode a call record as JSON: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, fmt.Errorf("encode a call record as JSON: %w", err)
	}
	return lowerEnums(buf.Bytes(), r.ProtoReflect().Descriptor()), nil
}

func (p *recordPrinter) print(recs []*metamcpv1.CallRecord) error {
	w := p.a.stdout
	switch p.a.output {
	case outputJSON:
		for _, r := range recs {
			b, err := recordJSON(r)
			if err != nil {
				return err
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return err
			}
		}
		return nil
	case outputYAML:
		// One document per batch: a list of records.
		for _, r := range recs {
			b, err := recordJSON(r)
			if err != nil {
				return err
			}
			p.yaml = append(p.yaml, b)
		}
		return nil
	}
	var b strings.Builder
	for _, r := range recs {
		if !p.header {
			p.header = true
			fmt.Fprintf(&b, "%-24s %-12s %-16s %-14s %-32s %-12s %-13s %9s %s\n",
				"TIME", "ENDPOINT", "PRINCIPAL", "METHOD", "TARGET", "SERVER", "OUTCOME", "DURATION", "NOTES")
		}
		fmt.Fprintf(&b, "%-24s %-12s %-16s %-14s %-32s %-12s %-13s %9s %s\n",
			r.GetTime().AsTime().Local().Format("2006-01-02T15:04:05.000"),
			cell(r.GetEndpoint(), 12), cell(r.GetPrincipal(), 16), cell(r.GetMethod(), 14), cell(r.GetTarget(), 32),
			cell(r.GetServer(), 12), outcomeName(r.GetOutcome()), latency(r.GetDuration().AsDuration()), notes(r))
		if p.payloads {
			if r.GetArguments() != "" {
				b.WriteString("    arguments: " + r.GetArguments() + "\n")
			}
			if r.GetResult() != "" {
				b.WriteString("    result:    " + r.GetResult() + "\n")
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// flush writes what the format holds back (YAML's list).
func (p *recordPrinter) flush() error {
	if p.a.output != outputYAML || len(p.yaml) == 0 {
		return nil
	}
	list, err := json.Marshal(p.yaml)
	if err != nil {
		return fmt.Errorf("encode YAML: %w", err)
	}
	p.yaml = nil
	y, err := yaml.JSONToYAML(list)
	if err != nil {
		return fmt.Errorf("encode YAML: %w", err)
	}
	if _, err := p.a.stdout.Write(append([]byte("---\n"), y...)); err != nil {
		return err
	}
	return nil
}

func cell(s string, n int) string {
	if s == "" {
		return none
	}
	return truncate(s, n)
}

func outcomeName(o metamcpv1.CallOutcome) string {
	return canonical.EnumNumberName(o.Descriptor(), o.Number())
}

// notes says what else a reader of the table should know of a record.
func notes(r *metamcpv1.CallRecord) string {
	var n []string
	if r.GetDestructive() {
		n = append(n, "destructive")
	}
	if r.GetReadOnly() {
		n = append(n, "read-only")
	}
	if s := r.GetHttpStatus(); s != 0 {
		n = append(n, fmt.Sprintf("http %d", s))
	}
	if e := r.GetError(); e != "" {
		n = append(n, truncate(oneLine(e), 60))
	}
	return strings.Join(n, "; ")
}

func (a *app) printSummary(resp *metamcpv1.SummarizeCallRecordsResponse) error {
	switch a.output {
	case outputJSON:
		b, err := marshalListJSON(resp)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(b)
		return err
	case outputYAML:
		return writeYAML(a.stdout, resp)
	}
	if len(resp.GetRows()) == 0 {
		fmt.Fprintln(a.stderr, "No call records found.")
		return nil
	}
	t := &table{header: []string{"PRINCIPAL", "TOOL", "CALLS", "ERRORS", "REFUSALS", "P50", "P95"}}
	for _, r := range resp.GetRows() {
		t.add(r.GetPrincipal(), r.GetTarget(), fmt.Sprint(r.GetCalls()), fmt.Sprint(r.GetErrors()), fmt.Sprint(r.GetRefusals()),
			latency(r.GetP50().AsDuration()), latency(r.GetP95().AsDuration()))
	}
	return t.write(a.stdout)
}

// latency prints a call's duration to a useful precision.
func latency(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Microsecond).String()
}
