package audit

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/internal/testharness"
)

// fakeCP is a Records server that keeps what it stores by id.
type fakeCP struct {
	metamcpv1.UnimplementedSyncServiceServer
	mu      sync.Mutex
	ids     map[string]int // times stored
	dropped int64
	changed chan struct{}
}

func newFakeCP() *fakeCP { return &fakeCP{ids: map[string]int{}, changed: make(chan struct{}, 1)} }

func (f *fakeCP) Records(gs grpc.BidiStreamingServer[metamcpv1.RecordsRequest, metamcpv1.RecordsResponse]) error {
	for {
		req, err := gs.Recv()
		if err != nil {
			return nil //nolint:nilerr // the stream ended
		}
		f.mu.Lock()
		for _, r := range req.GetRecords() {
			f.ids[r.GetId()]++
		}
		f.dropped = max(f.dropped, req.GetDroppedRecords())
		f.mu.Unlock()
		select {
		case f.changed <- struct{}{}:
		default:
		}
		if err := gs.Send(&metamcpv1.RecordsResponse{Sequence: req.GetSequence()}); err != nil {
			return nil //nolint:nilerr // the stream ended
		}
	}
}

func (f *fakeCP) count() (distinct, total int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.ids {
		distinct++
		total += n
	}
	return distinct, total
}

// serve runs f on lis until the test ends or stop is called.
func serve(t *testing.T, f *fakeCP, lis net.Listener) (stop func()) {
	s := grpc.NewServer()
	metamcpv1.RegisterSyncServiceServer(s, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(lis) }()
	var once sync.Once
	stop = func() { once.Do(func() { s.Stop(); <-done }) }
	t.Cleanup(stop)
	return stop
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func rec(i int) *metamcpv1.CallRecord {
	return &metamcpv1.CallRecord{Time: timestamppb.Now(), Endpoint: "ep", Principal: "p", Method: "tools/call", Target: fmt.Sprint("t", i)}
}

// running is a Trail being run, with its input channel.
type running struct {
	t    *Trail
	in   chan *metamcpv1.CallRecord
	stop func()
}

func start(t *testing.T, opts Options) *running {
	t.Helper()
	if opts.FlushInterval == 0 {
		opts.FlushInterval = 10 * time.Millisecond
	}
	opts.MinBackoff, opts.MaxBackoff = 10*time.Millisecond, 50*time.Millisecond
	tr, err := Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	in := make(chan *metamcpv1.CallRecord, 100000)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, in) }()
	var once sync.Once
	r := &running{t: tr, in: in}
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// waitFor waits (testharness.Eventually, 20 s) until cond holds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testharness.Eventually(t, 20*time.Second, func() error {
		if !cond() {
			return errors.New("timed out waiting for " + what)
		}
		return nil
	})
}

func TestTrailDeliversEveryRecordOnce(t *testing.T) {
	cp := newFakeCP()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	stopCP := serve(t, cp, lis)
	dir := t.TempDir()
	r := start(t, Options{Dir: dir, Conn: dial(t, addr), NodeID: "dp1", BatchSize: 50})
	for i := range 1000 {
		r.in <- rec(i)
	}
	waitFor(t, "1000 records acknowledged", func() bool { return r.t.Stats().Sent == 1000 })

	// The control plane goes away: records wait in the spool.
	stopCP()
	for i := 1000; i < 3000; i++ {
		r.in <- rec(i)
	}
	waitFor(t, "2000 records spooled", func() bool { return r.t.Stats().Pending == 2000 })
	// The data plane restarts while the control plane is still away.
	r.stop()
	r = start(t, Options{Dir: dir, Conn: dial(t, addr), NodeID: "dp1", BatchSize: 50})
	if p := r.t.Stats().Pending; p != 2000 {
		t.Fatalf("after a restart %d records wait, want 2000", p)
	}
	for i := 3000; i < 3500; i++ {
		r.in <- rec(i)
	}
	// The control plane returns on the same address.
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	serve(t, cp, lis)
	waitFor(t, "3500 records stored", func() bool { d, _ := cp.count(); return d == 3500 })
	waitFor(t, "the spool emptied", func() bool { return r.t.Stats().Pending == 0 })
	// A batch whose ack was lost comes again (the control plane skips the
	// ids it has); none is missing.
	if d, _ := cp.count(); d != 3500 {
		t.Errorf("stored %d distinct records, want 3500", d)
	}
	if st := r.t.Stats(); st.Dropped != 0 || !st.Connected {
		t.Errorf("stats = %+v, want nothing lost, connected", st)
	}
}

func TestSpoolBoundDropsOldestAndCounts(t *testing.T) {
	dir := t.TempDir()
	sp, err := openSpool(dir, 64<<10) // segments of 64 KiB: one segment max
	if err != nil {
		t.Fatal(err)
	}
	payload := make([]byte, 10<<10)
	for range 20 {
		if err := sp.append(payload, 10); err != nil {
			t.Fatal(err)
		}
	}
	pending, bytes, dropped := sp.stats()
	if bytes > 64<<10 || dropped == 0 || int64(pending)+dropped != 200 {
		t.Errorf("pending %d, bytes %d, dropped %d: want at most 64 KiB, some dropped, 200 in all", pending, bytes, dropped)
	}
	// What is left is readable from the cursor on.
	n := 0
	for p := sp.first(); ; {
		_, c, _, next, ok, err := sp.next(p)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		n += c
		p = next
	}
	if n != pending {
		t.Errorf("read %d records from the spool, pending says %d", n, pending)
	}
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
}

func TestSpoolSurvivesRestartAndTornTail(t *testing.T) {
	dir := t.TempDir()
	sp, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		b, _ := proto.Marshal(&metamcpv1.CallRecordBatch{Records: []*metamcpv1.CallRecord{rec(i)}})
		if err := sp.append(b, 1); err != nil {
			t.Fatal(err)
		}
	}
	// The first entry is acknowledged.
	_, c, _, end, ok, err := sp.next(sp.first())
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	if err := sp.ack(end, c); err != nil {
		t.Fatal(err)
	}
	if err := sp.close(); err != nil {
		t.Fatal(err)
	}
	// A torn entry: the process died while appending.
	segs, _ := filepath.Glob(filepath.Join(dir, segPrefix+"*"))
	f, err := os.OpenFile(segs[len(segs)-1], os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write([]byte{200, 0, 0, 0, 1, 2})
	f.Close()

	sp, err = openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.close()
	if pending, _, _ := sp.stats(); pending != 2 {
		t.Errorf("after reopening %d records wait, want 2", pending)
	}
	var got []string
	for p := sp.first(); ; {
		payload, _, _, next, ok, err := sp.next(p)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			break
		}
		var b metamcpv1.CallRecordBatch
		if err := proto.Unmarshal(payload, &b); err != nil {
			t.Fatal(err)
		}
		got = append(got, b.GetRecords()[0].GetTarget())
		p = next
	}
	if fmt.Sprint(got) != "[t1 t2]" {
		t.Errorf("after reopening the spool holds %v, want [t1 t2]", got)
	}
	// Appending goes on after the cut.
	b, _ := proto.Marshal(&metamcpv1.CallRecordBatch{Records: []*metamcpv1.CallRecord{rec(3)}})
	if err := sp.append(b, 1); err != nil {
		t.Fatal(err)
	}
	if pending, _, _ := sp.stats(); pending != 3 {
		t.Errorf("pending %d, want 3", pending)
	}
}

func TestIDsAreUniqueUUIDv7(t *testing.T) {
	g1, g2 := newIDGen(), newIDGen()
	now := time.Now()
	seen := map[string]bool{}
	for range 10000 {
		for _, id := range []string{g1.next(now), g2.next(now)} {
			if seen[id] {
				t.Fatalf("id %s made twice", id)
			}
			seen[id] = true
			if len(id) != 36 || id[14] != '7' || id[8] != '-' {
				t.Fatalf("id %s is not a UUIDv7", id)
			}
		}
	}
}

// BenchmarkRecordHandOff is the gateway's side of recording: one send on the
// buffered channel the trail drains.
func BenchmarkRecordHandOff(b *testing.B) {
	tr, err := Open(Options{Dir: b.TempDir(), FlushInterval: 50 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	in := make(chan *metamcpv1.CallRecord, 16384)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx, in) }()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		r := &metamcpv1.CallRecord{Time: timestamppb.Now(), Endpoint: "ep", Principal: "alice", Method: "tools/call", Target: "github__create_issue", Server: "github"}
		select {
		case in <- r:
		default:
		}
	}
	cancel()
	if err := <-done; err != nil {
		b.Error(err)
	}
}
