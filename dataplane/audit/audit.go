// Package audit carries a data plane's call records to the control plane
// without ever slowing a call: the gateway hands each record to a buffered
// channel (a full channel drops and counts it); a batcher gives each record
// an id and writes batches to a disk spool; a sender streams the spool to
// the control plane's Records RPC and forgets a batch only once the control
// plane acknowledges it as stored. While the control plane is away the
// spool grows, up to its bound (the oldest batches go first, counted), and
// it survives a restart of the data plane. A batch sent twice (an ack lost
// in a crash) is stored once: the control plane skips ids it has.
package audit

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// Defaults for zero Options fields.
const (
	DefaultMaxBytes      = 256 << 20
	DefaultBatchSize     = 500
	DefaultFlushInterval = 200 * time.Millisecond
	// DefaultWindow is how many batches may await their ack at once.
	DefaultWindow = 8
)

// Options configure a Trail.
type Options struct {
	// Dir is the spool directory (created 0700). Required.
	Dir string
	// MaxBytes bounds the spool on disk (DefaultMaxBytes when 0).
	MaxBytes int64
	// NodeID names this data plane on the records it sends.
	NodeID string
	// Conn reaches the control plane; nil keeps records in the spool only.
	Conn grpc.ClientConnInterface
	// BatchSize is the most records in one batch (DefaultBatchSize).
	BatchSize int
	// FlushInterval is the longest a record waits to be spooled and sent
	// (DefaultFlushInterval).
	FlushInterval time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay (200ms, 5s).
	MinBackoff, MaxBackoff time.Duration
	// Dropped, when set, returns records lost before they reached the
	// trail (the gateway's full channel); they are reported with the spool's.
	Dropped func() int64
	Logger  *slog.Logger
}

// Trail spools call records and sends them to the control plane. Create it
// with Open, then Run it.
type Trail struct {
	opts  Options
	log   *slog.Logger
	spool *spool
	ids   idGen

	connected atomic.Bool
	sent      atomic.Int64 // records acknowledged since start
}

// Open opens the spool in opts.Dir; what a previous run left there is sent
// once Run connects.
func Open(opts Options) (*Trail, error) {
	if opts.Dir == "" {
		return nil, errors.New("audit: a spool directory is required")
	}
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = 200 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	sp, err := openSpool(opts.Dir, opts.MaxBytes)
	if err != nil {
		return nil, err
	}
	t := &Trail{opts: opts, log: opts.Logger, spool: sp, ids: newIDGen()}
	if pending, bytes, _ := sp.stats(); pending > 0 {
		t.log.Info("call records from an earlier run wait in the spool; they are sent when the control plane answers", "records", pending, "bytes", bytes, "dir", opts.Dir)
	}
	return t, nil
}

// Stats is the state of a trail.
type Stats struct {
	// Pending records wait in the spool for the control plane's ack.
	Pending int
	// SpoolBytes is the spool's size on disk.
	SpoolBytes int64
	// Dropped records were lost: the spool or the gateway's buffer was full.
	Dropped int64
	// Sent records were acknowledged by the control plane since start.
	Sent int64
	// Connected is true while a record stream is up.
	Connected bool
}

// Stats returns the trail's state.
func (t *Trail) Stats() Stats {
	pending, bytes, dropped := t.spool.stats()
	return Stats{Pending: pending, SpoolBytes: bytes, Dropped: dropped + t.externalDropped(), Sent: t.sent.Load(), Connected: t.connected.Load()}
}

func (t *Trail) externalDropped() int64 {
	if t.opts.Dropped == nil {
		return 0
	}
	return t.opts.Dropped()
}

// Run takes records from in, spools them and sends them, until ctx is done;
// then it spools what it holds and closes the spool. It returns nil then.
// Run is called once.
func (t *Trail) Run(ctx context.Context, in <-chan *metamcpv1.CallRecord) error {
	var wg sync.WaitGroup
	if t.opts.Conn != nil {
		wg.Go(func() { t.send(ctx) })
	}
	t.batch(ctx, in)
	wg.Wait()
	return t.spool.close()
}

// batch gathers records into batches and spools them until ctx is done.
func (t *Trail) batch(ctx context.Context, in <-chan *metamcpv1.CallRecord) {
	tick := time.NewTicker(t.opts.FlushInterval)
	defer tick.Stop()
	var recs []*metamcpv1.CallRecord
	flush := func() {
		if len(recs) == 0 {
			return
		}
		t.write(recs)
		recs = recs[:0]
	}
	take := func(r *metamcpv1.CallRecord) {
		if r.Id == "" {
			r.Id = t.ids.next(r.GetTime().AsTime())
		}
		if r.NodeId == "" {
			r.NodeId = t.opts.NodeID
		}
		recs = append(recs, r)
		if len(recs) >= t.opts.BatchSize {
			flush()
		}
	}
	for {
		select {
		case <-ctx.Done():
			// What the gateway handed over before it stopped is kept.
			for {
				select {
				case r, ok := <-in:
					if !ok {
						flush()
						return
					}
					take(r)
					continue
				default:
				}
				break
			}
			flush()
			return
		case r, ok := <-in:
			if !ok {
				flush()
				<-ctx.Done()
				return
			}
			take(r)
		case <-tick.C:
			flush()
		}
	}
}

// write spools a batch, encoded as a RecordsRequest holding only the
// records: the sender puts the sequence and node in front of these bytes
// as they are (a proto message may come in pieces), so a record is encoded
// once on its way out.
func (t *Trail) write(recs []*metamcpv1.CallRecord) {
	b, err := proto.Marshal(&metamcpv1.RecordsRequest{Records: recs})
	if err == nil {
		err = t.spool.append(b, len(recs))
	}
	if err != nil {
		t.log.Error("call records lost: cannot spool them", "records", len(recs), "err", err)
	}
}

// send streams the spool to the control plane until ctx is done.
func (t *Trail) send(ctx context.Context) {
	client := metamcpv1.NewSyncServiceClient(t.opts.Conn)
	backoff := t.opts.MinBackoff
	for ctx.Err() == nil {
		start := time.Now()
		err := t.stream(ctx, client)
		t.connected.Store(false)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 30*time.Second {
			backoff = t.opts.MinBackoff
		}
		wait := backoff/2 + mrand.N(backoff/2+1)
		pending, _, _ := t.spool.stats()
		t.log.Warn("call-record stream ended; records stay in the spool", "err", err, "pending", pending, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(backoff*2, t.opts.MaxBackoff)
	}
}

// inflight is a batch sent and not yet acknowledged.
type inflight struct {
	seq   uint64
	end   pos // where the next entry starts
	count int
}

// stream sends the spool on one Records stream until it fails or ctx is done.
func (t *Trail) stream(ctx context.Context, client metamcpv1.SyncServiceClient) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Uncompressed: gzip would cost the data plane about a microsecond per
	// record, for a stream of some hundred kB a second at most.
	st, err := client.Records(ctx, grpc.ForceCodecV2(recordsCodec{}), grpc.UseCompressor(encoding.Identity))
	if err != nil {
		return err
	}
	acks := make(chan uint64, DefaultWindow)
	errc := make(chan error, 1)
	go func() {
		for {
			resp, err := st.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case acks <- resp.GetSequence():
			case <-ctx.Done():
				return
			}
		}
	}()

	var (
		seq     uint64
		window  []inflight
		next          = t.spool.first()
		lastDr  int64 = -1
		firstOK       = true
	)
	for {
		// Send while the window has room and the spool has entries.
		for len(window) < DefaultWindow {
			payload, count, _, end, ok, err := t.spool.next(next)
			if err != nil {
				return err
			}
			if !ok {
				break
			}
			seq++
			head := &metamcpv1.RecordsRequest{Sequence: seq, NodeId: t.opts.NodeID}
			if _, _, d := t.spool.stats(); d+t.externalDropped() != lastDr {
				lastDr = d + t.externalDropped()
				head.DroppedRecords = lastDr
			}
			msg, err := proto.Marshal(head)
			if err != nil {
				return err
			}
			if err := st.SendMsg(&rawRequest{head: msg, records: payload}); err != nil {
				return recvErr(errc, err)
			}
			window = append(window, inflight{seq: seq, end: end, count: count})
			next = end
		}
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case a := <-acks:
			if firstOK {
				firstOK = false
				t.connected.Store(true)
			}
			n := 0
			var end pos
			for len(window) > 0 && window[0].seq <= a {
				n += window[0].count
				end = window[0].end
				window = window[1:]
			}
			if n > 0 {
				if err := t.spool.ack(end, n); err != nil {
					t.log.Warn("write the audit spool's cursor", "err", err)
				}
				t.sent.Add(int64(n))
			}
		case <-t.spool.notify:
		}
	}
}

// rawRequest is a RecordsRequest already encoded, in two pieces.
type rawRequest struct{ head, records []byte }

// recordsCodec sends a rawRequest's bytes as they are and encodes and
// decodes everything else as gRPC's proto codec does.
type recordsCodec struct{}

func (recordsCodec) Name() string { return "proto" }

func (recordsCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(*rawRequest); ok {
		return mem.BufferSlice{mem.SliceBuffer(r.head), mem.SliceBuffer(r.records)}, nil
	}
	return encoding.GetCodecV2("proto").Marshal(v)
}

func (recordsCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return encoding.GetCodecV2("proto").Unmarshal(data, v)
}

// recvErr waits briefly for the receiver's error, which says why the
// stream broke (a failed Send says only EOF).
func recvErr(errc <-chan error, sendErr error) error {
	select {
	case err := <-errc:
		return err
	case <-time.After(2 * time.Second):
		return sendErr
	}
}

// idGen makes record ids: UUIDv7 (RFC 9562), the call's millisecond in the
// first 48 bits, then 74 bits of which 42 are random per process and 32
// count the records this process made. Ids of one process never repeat;
// two processes collide only if they draw the same 42 random bits.
// An idGen is used by one goroutine (the batcher).
type idGen struct {
	rnd   [6]byte // 42 random bits: 12 in rand_a, 30 in rand_b
	count uint32
}

func newIDGen() idGen {
	var g idGen
	_, _ = rand.Read(g.rnd[:])
	return g
}

func (g *idGen) next(at time.Time) string {
	g.count++
	c := g.count
	var b [16]byte
	ms := uint64(at.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = 0x70 | g.rnd[0]&0x0f // version 7
	b[7] = g.rnd[1]
	b[8] = 0x80 | g.rnd[2]&0x3f // variant 10
	b[9], b[10], b[11] = g.rnd[3], g.rnd[4], g.rnd[5]
	binary.BigEndian.PutUint32(b[12:], c)
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:16])
	return string(s[:])
}

// String describes the spool, for /readyz.
func (s Stats) String() string {
	state := "sending"
	if !s.Connected {
		state = "control plane unreachable; spooling"
	}
	return fmt.Sprintf("%s, %d records waiting (%d bytes spooled), %d sent, %d lost", state, s.Pending, s.SpoolBytes, s.Sent, s.Dropped)
}
