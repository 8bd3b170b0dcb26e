package gateway

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/gzip"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/audit"
	"github.com/metamcp/metamcp/internal/testharness"
)

// BenchmarkRecording measures what the audit trail costs a proxied
// stateless tools/call: the same call with recording off and on, where on
// means the record is built, handed to an audit.Trail, batched, given an
// id, written to its disk spool and streamed (gzip) to a control plane that
// acknowledges each batch (in this process, but reading only the batch's
// sequence, so that its CPU is not the data plane's). cpu-ns/op is the
// whole process's CPU time per call, the trail's goroutines included; the
// difference between the two is the recording.
func BenchmarkRecording(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			h := &configHolder{}
			h.set(b, testConfig())
			opts := Options{Config: h, Pool: fixedPool(fastUpstreams{}), Logger: testLogger(b), DefaultCallTimeout: time.Minute, NodeID: "bench"}
			var stop func()
			if on {
				calls := make(chan *metamcpv1.CallRecord, 16384)
				tr, err := audit.Open(audit.Options{Dir: b.TempDir(), MaxBytes: 64 << 20, NodeID: "bench", Conn: ackingControlPlane(b)})
				if err != nil {
					b.Fatal(err)
				}
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); _ = tr.Run(ctx, calls) }()
				stop = func() {
					cancel()
					<-done
					if st := tr.Stats(); st.Dropped > 0 || st.Sent == 0 {
						b.Logf("audit trail: %s", st)
					}
				}
				opts.Calls = calls
			}
			g := New(opts)
			defer g.Close()
			if stop != nil {
				defer stop()
			}
			handler := g.Handler()
			body := []byte(`{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"alpha__echo","arguments":{"text":"hello"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"bench","version":"1"}}}}`)
			req, _ := http.NewRequest(http.MethodPost, "http://127.0.0.1:12008/metamcp/main/mcp", nil)
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept", "application/json, text/event-stream")
			req.Header.Set("Authorization", "Bearer "+keyAlice)
			req.Header.Set(headerProtocolVersion, "2026-07-28")
			req.Header.Set(headerMethod, "tools/call")
			req.Header.Set(headerName, "alpha__echo")
			req.Header.Set(headerTraceparent, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
			w := &discardWriter{h: http.Header{}}
			rd := bytes.NewReader(body)
			cpu0, cpuOK := testharness.ProcessCPU()
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				rd.Reset(body)
				r := req.Clone(context.Background())
				r.Body = io.NopCloser(rd)
				r.ContentLength = int64(len(body))
				clear(w.h)
				w.status = 0
				handler.ServeHTTP(w, r)
				if w.status != 0 && w.status != http.StatusOK {
					b.Fatalf("status %d", w.status)
				}
			}
			b.StopTimer()
			if stop != nil {
				stop() // the trail's work on these calls is counted too (stop is idempotent)
			}
			if cpu1, ok := testharness.ProcessCPU(); ok && cpuOK {
				b.ReportMetric(float64(cpu1-cpu0)/float64(b.N), "cpu-ns/op")
			}
		})
	}
}

// ackingControlPlane serves Records, acknowledging every batch after
// reading only its sequence, and returns a connection to it as a data
// plane makes one (gzip).
func ackingControlPlane(b *testing.B) *grpc.ClientConn {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	s := grpc.NewServer(grpc.ForceServerCodecV2(sequenceCodec{}))
	metamcpv1.RegisterSyncServiceServer(s, ackingServer{})
	go func() { _ = s.Serve(lis) }()
	b.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.UseCompressor(gzip.Name)))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

type ackingServer struct {
	metamcpv1.UnimplementedSyncServiceServer
}

func (ackingServer) Records(gs grpc.BidiStreamingServer[metamcpv1.RecordsRequest, metamcpv1.RecordsResponse]) error {
	for {
		req, err := gs.Recv()
		if err != nil {
			return nil //nolint:nilerr // the stream ended
		}
		if err := gs.Send(&metamcpv1.RecordsResponse{Sequence: req.GetSequence()}); err != nil {
			return nil //nolint:nilerr // the stream ended
		}
	}
}

// sequenceCodec decodes a RecordsRequest's first field, its sequence, and
// nothing else.
type sequenceCodec struct{}

func (sequenceCodec) Name() string { return "proto" }

func (sequenceCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (sequenceCodec) Unmarshal(data mem.BufferSlice, v any) error {
	req, ok := v.(*metamcpv1.RecordsRequest)
	if !ok {
		return encoding.GetCodecV2("proto").Unmarshal(data, v)
	}
	b := data.Materialize()
	if num, typ, n := protowire.ConsumeTag(b); n > 0 && num == 1 && typ == protowire.VarintType {
		seq, _ := protowire.ConsumeVarint(b[n:])
		req.Sequence = seq
	}
	return nil
}
