// Package syncserver implements SyncService: it streams versioned config
// snapshots to data planes (state of the world, one resource: the whole
// config), tracks their ACKs and NACKs, and keeps the data-plane registry and
// the call log in the store.
//
// One snapshot is built per committed revision, in one read-only transaction,
// and shared by every stream. A stream has at most one snapshot awaiting its
// ACK; when the ACK comes the newest snapshot is sent, so a slow data plane
// skips intermediate revisions. A NACKed revision is not sent again to the
// stream that refused it. A data plane reports how much of a snapshot it
// serves (whole, without some servers, or only its keys), and the registry
// keeps it. Snapshots carry the store's id: a data plane whose config came
// from another store, or from a revision this store has not reached (it was
// restored or reset), gets this store's config even though its revision
// number is higher.
package syncserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// ConfigSource builds the whole config a data plane serves, at one revision,
// with secrets in clear text.
type ConfigSource interface {
	BuildConfig(ctx context.Context) (cfg *metamcpv1.Config, revision int64, err error)
}

// Options tune a Server. The zero value works.
type Options struct {
	Logger *slog.Logger
	// Reauthorize is called for every open stream after each new revision
	// (token revocation is a committed write) with the stream's context and
	// that revision. An error closes the stream with Unauthenticated.
	Reauthorize func(ctx context.Context, revision int64) error
	// RetryInterval is how soon a failed snapshot build is retried (1s).
	RetryInterval time.Duration
	// MaxCallRecords bounds one call-record batch (1000).
	MaxCallRecords int
	// OnRecords is called after call records were stored (to wake followers).
	OnRecords func()
	// Observer, when set, learns what the streams do (for metrics).
	Observer Observer
}

// Observer learns what the sync streams do. Its methods must be quick.
type Observer interface {
	// Streams is called with +1 when a data plane's stream opens, -1 when it ends.
	Streams(delta int)
	// Acked is called for each ACK (nack false) or NACK (nack true), with
	// the time since the snapshot was built.
	Acked(nack bool, sinceBuild time.Duration)
	// Built is called after each snapshot build, with its duration.
	Built(d time.Duration, err error)
	// Stored is called after each attempt to store a batch of call
	// records, with its duration.
	Stored(recs []*metamcpv1.CallRecord, d time.Duration, err error)
}

// Server implements metamcpv1.SyncServiceServer. Run must be running for
// streams to receive snapshots.
type Server struct {
	metamcpv1.UnimplementedSyncServiceServer

	src  ConfigSource
	st   store.Store
	log  *slog.Logger
	opts Options

	mu      sync.Mutex
	current *metamcpv1.Snapshot // nil until the first build; never mutated once published
	changed chan struct{}       // closed when current is replaced

	stopped  chan struct{} // closed when Run returns: streams end too
	stopOnce sync.Once

	registry *registry

	// toolsMu guards tools: the newest tool list a data plane reported per
	// endpoint, for `mmctl auth can-i`. Kept in memory only: data planes
	// report every list again when they connect.
	toolsMu sync.Mutex
	tools   map[string]*metamcpv1.EndpointTools
	// fleet counts the data planes streaming from this control plane.
	fleetMu      sync.Mutex
	live         int
	registryLive int           // connected data planes the registry saw lately
	fleetChanged chan struct{} // closed when live or registryLive changes
}

// New returns a Server reading config from src and recording data planes and
// calls in st.
func New(src ConfigSource, st store.Store, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.RetryInterval <= 0 {
		opts.RetryInterval = time.Second
	}
	if opts.MaxCallRecords <= 0 {
		opts.MaxCallRecords = 1000
	}
	return &Server{
		src: src, st: st, log: opts.Logger, opts: opts,
		changed:      make(chan struct{}),
		fleetChanged: make(chan struct{}),
		stopped:      make(chan struct{}),
		registry:     newRegistry(st, opts.Logger),
		tools:        map[string]*metamcpv1.EndpointTools{},
	}
}

// maxReportedTools bounds one endpoint's reported tool list.
const maxReportedTools = 10000

// EndpointTools returns the tool list a data plane last reported for the
// endpoint, or nil when none has. The result must not be modified.
func (s *Server) EndpointTools(endpoint string) *metamcpv1.EndpointTools {
	s.toolsMu.Lock()
	defer s.toolsMu.Unlock()
	return s.tools[endpoint]
}

// putTools keeps the tool lists of a Status.
func (s *Server) putTools(node string, lists []*metamcpv1.EndpointTools) {
	if len(lists) == 0 {
		return
	}
	now := timestamppb.Now()
	s.toolsMu.Lock()
	defer s.toolsMu.Unlock()
	for _, l := range lists {
		if l.GetEndpoint() == "" {
			continue
		}
		if len(l.Tools) > maxReportedTools {
			l.Tools = l.Tools[:maxReportedTools]
		}
		l.NodeId, l.ReportTime = node, now
		s.tools[l.GetEndpoint()] = l
	}
}

// Run builds a snapshot for every new revision the store reports until ctx is
// done. When it returns, open streams end (the control plane is stopping) and
// data planes reconnect elsewhere.
func (s *Server) Run(ctx context.Context) error {
	defer s.stopOnce.Do(func() { close(s.stopped) })
	regDone := make(chan struct{})
	go func() {
		defer close(regDone)
		s.registry.run(ctx)
	}()
	defer func() { <-regDone }()
	fleetDone := make(chan struct{})
	go func() {
		defer close(fleetDone)
		s.watchFleet(ctx)
	}()
	defer func() { <-fleetDone }()
	watch := s.st.Watch(ctx)
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	var want int64
	for {
		select {
		case <-ctx.Done():
			return nil
		case rev, ok := <-watch:
			if !ok {
				return nil
			}
			want = rev
		case <-retry.C:
		}
		if cur := s.Current(); cur != nil && cur.GetRevision() >= want {
			continue
		}
		if err := s.rebuild(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Error("build snapshot failed; retrying", "revision", want, "err", err, "retry_in", s.opts.RetryInterval)
			retry.Reset(s.opts.RetryInterval)
		}
	}
}

// rebuild builds the snapshot of the newest revision and publishes it.
func (s *Server) rebuild(ctx context.Context) error {
	start := time.Now()
	snap, err := Build(ctx, s.src)
	if o := s.opts.Observer; o != nil {
		o.Built(time.Since(start), err)
	}
	if err != nil {
		return err
	}
	if snap.StoreId, err = s.st.ID(ctx); err != nil {
		return fmt.Errorf("build snapshot %d: %w", snap.GetRevision(), err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.current != nil && s.current.GetRevision() >= snap.GetRevision() {
		return nil
	}
	s.current = snap
	close(s.changed)
	s.changed = make(chan struct{})
	s.log.Info("snapshot built", "revision", snap.GetRevision(), "hash", snap.GetHash()[:12])
	return nil
}

// Build builds the snapshot of the newest revision from src. Every control
// plane replica builds the same bytes, and so the same hash, for a revision.
func Build(ctx context.Context, src ConfigSource) (*metamcpv1.Snapshot, error) {
	cfg, rev, err := src.BuildConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("build snapshot: %w", err)
	}
	hash, err := snapshot.ConfigHash(cfg)
	if err != nil {
		return nil, fmt.Errorf("build snapshot %d: %w", rev, err)
	}
	return &metamcpv1.Snapshot{Revision: rev, Hash: hash, Config: cfg, BuildTime: timestamppb.Now()}, nil
}

// Current returns the newest published snapshot, or nil before the first.
func (s *Server) Current() *metamcpv1.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

func (s *Server) latest() (*metamcpv1.Snapshot, <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current, s.changed
}

// stream is one data plane's connection.
type stream struct {
	srv  *Server
	grpc grpc.BidiStreamingServer[metamcpv1.SyncRequest, metamcpv1.SyncResponse]
	log  *slog.Logger
	dp   *metamcpv1.DataPlane // the registry record; owned by the stream goroutine

	// What the data plane serves, as far as we know.
	revision int64
	hash     string
	// The snapshot awaiting an ACK; empty nonce when none.
	nonce    string
	sentRev  int64
	sentHash string
	// sentBuilt is when the snapshot sent was built (push latency).
	sentBuilt time.Time
	// The newest revision this data plane refused.
	nackedRev int64
	// The store of the snapshot awaiting an ACK.
	sentStore string
	// The store the data plane's config came from (Snapshot.store_id).
	storeID string
	// The revision of the last snapshot checked against a data plane ahead
	// of it (see otherStore), so the store is asked once per snapshot.
	checkedRev int64
}

// Sync serves one data plane's stream until it ends.
func (s *Server) Sync(gs grpc.BidiStreamingServer[metamcpv1.SyncRequest, metamcpv1.SyncResponse]) error {
	ctx := gs.Context()
	first, err := gs.Recv()
	if err != nil {
		return status.Error(codes.Canceled, "stream closed before hello")
	}
	hello := first.GetHello()
	if hello == nil {
		return status.Error(codes.InvalidArgument, "the first message on a sync stream must be hello")
	}
	if hello.GetNodeId() == "" {
		return status.Error(codes.InvalidArgument, "hello: node_id is required")
	}
	now := timestamppb.Now()
	st := &stream{
		srv:  s,
		grpc: gs,
		log:  s.log.With("node", hello.GetNodeId()),
		dp: &metamcpv1.DataPlane{
			NodeId:          hello.GetNodeId(),
			Hostname:        hello.GetHostname(),
			Version:         hello.GetVersion(),
			Address:         hello.GetAddress(),
			Connected:       true,
			AppliedRevision: hello.GetRevision(),
			AppliedHash:     hello.GetHash(),
			LastSeen:        now,
			ConnectTime:     now,
			ApplyOutcome:    hello.GetOutcome(),
			RefusedServers:  hello.GetRefusedServers(),
			KeysRevision:    hello.GetKeysRevision(),
		},
		revision: hello.GetRevision(),
		hash:     hello.GetHash(),
		// A revision it refused whole (keeping only its keys) is not sent
		// again: the answer would be the same.
		nackedRev: hello.GetKeysRevision(),
	}
	st.dp.StoreId, st.storeID = hello.GetStoreId(), hello.GetStoreId()
	// Keep what we knew of an earlier NACK and upstream health.
	if prev := s.findDataPlane(ctx, hello.GetNodeId()); prev != nil {
		st.dp.LastError, st.dp.LastErrorRevision = prev.GetLastError(), prev.GetLastErrorRevision()
		st.dp.Upstreams = prev.GetUpstreams()
	}
	st.log.Info("data plane connected", "hostname", hello.GetHostname(), "version", hello.GetVersion(), "revision", hello.GetRevision())
	s.joinFleet(1)
	defer s.joinFleet(-1)
	s.registry.write(ctx, st.dp)
	if o := s.opts.Observer; o != nil {
		o.Streams(1)
		defer o.Streams(-1)
	}
	defer func() {
		st.dp.Connected = false
		st.dp.LastSeen = timestamppb.Now()
		// The stream's context is done; record the disconnect regardless.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		s.registry.write(rctx, st.dp)
		st.log.Info("data plane disconnected")
	}()
	return st.serve(ctx)
}

// otherStore says why the config of a data plane did not come from this
// store as it is now, or "" when it did or that cannot be told: it names
// another store, or a revision this store has not reached (its database was
// restored from a backup, or reset). Otherwise a data plane ahead of snap is
// merely ahead of this control plane, whose snapshot has not caught up with
// the store yet.
func (st *stream) otherStore(ctx context.Context, snap *metamcpv1.Snapshot) string {
	if st.storeID != "" && snap.GetStoreId() != "" && st.storeID != snap.GetStoreId() {
		return fmt.Sprintf("its config came from another store (%s, not %s)", st.storeID, snap.GetStoreId())
	}
	rev, err := st.srv.st.Revision(ctx)
	if err != nil {
		st.log.Warn("read revision failed", "err", err)
		return ""
	}
	if st.revision > rev {
		return fmt.Sprintf("it serves revision %d and this store is at %d: the store was restored or reset", st.revision, rev)
	}
	return ""
}

func (s *Server) findDataPlane(ctx context.Context, nodeID string) *metamcpv1.DataPlane {
	dps, err := s.st.ListDataPlanes(ctx)
	if err != nil {
		return nil
	}
	for _, dp := range dps {
		if dp.GetNodeId() == nodeID {
			return dp
		}
	}
	return nil
}

// record queues the stream's registry record for the next batched write.
func (st *stream) record() { st.srv.registry.put(st.dp) }

func (st *stream) serve(ctx context.Context) error {
	// The receiving goroutine is owned by this function: it ends when the
	// stream does, which happens when serve returns.
	recv := make(chan *metamcpv1.SyncRequest)
	recvErr := make(chan error, 1)
	go func() {
		for {
			msg, err := st.grpc.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case recv <- msg:
			case <-ctx.Done():
				return
			}
		}
	}()

	var lastRev int64
	var sentFleet int
	for {
		snap, changed := st.srv.latest()
		if snap != nil && snap.GetRevision() != lastRev {
			lastRev = snap.GetRevision()
			if re := st.srv.opts.Reauthorize; re != nil {
				if err := re(ctx, lastRev); err != nil {
					st.log.Warn("closing sync stream: token no longer valid", "err", err)
					return status.Error(codes.Unauthenticated, "sync token revoked or expired")
				}
			}
		}
		if err := st.maybeSend(ctx, snap); err != nil {
			return err
		}
		// After the snapshot, apart from it: the fleet has no revision.
		live, fleetChanged := st.srv.fleet()
		if live != sentFleet {
			msg := &metamcpv1.SyncResponse{Message: &metamcpv1.SyncResponse_Fleet{Fleet: &metamcpv1.Fleet{LiveDataPlanes: int32(live)}}}
			if err := st.grpc.Send(msg); err != nil {
				return nil //nolint:nilerr // the stream is gone; Recv reports it
			}
			sentFleet = live
		}
		select {
		case <-ctx.Done():
			return nil
		case <-st.srv.stopped:
			return status.Error(codes.Unavailable, "control plane shutting down; reconnect")
		case err := <-recvErr:
			if errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled {
				return nil
			}
			return nil //nolint:nilerr // the data plane went away; nothing to report to it
		case <-changed:
		case <-fleetChanged:
		case msg := <-recv:
			if err := st.handle(ctx, msg); err != nil {
				return err
			}
		}
	}
}

// maybeSend sends snap when the data plane needs it and nothing awaits an ACK.
func (st *stream) maybeSend(ctx context.Context, snap *metamcpv1.Snapshot) error {
	if snap == nil || st.nonce != "" {
		return nil
	}
	rev, hash := snap.GetRevision(), snap.GetHash()
	otherID := st.storeID != "" && snap.GetStoreId() != "" && st.storeID != snap.GetStoreId()
	if (rev < st.revision || otherID) && rev != st.checkedRev {
		st.checkedRev = rev
		if why := st.otherStore(ctx, snap); why != "" {
			// Its revision does not compare with ours: send our config
			// whatever the numbers say, and keep what it had for the registry.
			st.log.Warn("data plane serves a config this store did not make; sending this store's", "reason", why,
				"its_revision", st.revision, "its_store", st.storeID)
			st.dp.PreviousStoreId, st.dp.PreviousStoreRevision = st.storeID, st.revision
			st.record()
			st.revision, st.hash, st.nackedRev = 0, "", 0
		}
	}
	if rev == st.nackedRev && st.nackedRev != 0 {
		return nil
	}
	// A data plane ahead of us (it talked to a newer control-plane replica)
	// keeps what it has until we catch up.
	if rev < st.revision || (rev == st.revision && hash == st.hash) {
		return nil
	}
	nonce := newNonce()
	msg := &metamcpv1.SyncResponse{Message: &metamcpv1.SyncResponse_Snapshot{Snapshot: &metamcpv1.Snapshot{
		Revision:  rev,
		Hash:      hash,
		Nonce:     nonce,
		Config:    snap.GetConfig(),
		BuildTime: snap.GetBuildTime(),
		StoreId:   snap.GetStoreId(),
	}}}
	if err := st.grpc.Send(msg); err != nil {
		return nil //nolint:nilerr // the stream is gone; Recv reports it
	}
	st.nonce, st.sentRev, st.sentHash, st.sentStore = nonce, rev, hash, snap.GetStoreId()
	st.sentBuilt = snap.GetBuildTime().AsTime()
	st.log.Debug("snapshot sent", "revision", rev, "nonce", nonce)
	return nil
}

func (st *stream) handle(ctx context.Context, msg *metamcpv1.SyncRequest) error {
	now := timestamppb.Now()
	switch m := msg.GetMessage().(type) {
	case *metamcpv1.SyncRequest_Ack:
		ack := m.Ack
		if ack.GetNonce() == "" || ack.GetNonce() != st.nonce {
			st.log.Debug("ignoring stale ack", "nonce", ack.GetNonce())
			return nil
		}
		st.nonce = ""
		st.dp.LastSeen = now
		if o := st.srv.opts.Observer; o != nil {
			o.Acked(ack.GetError() != "", time.Since(st.sentBuilt))
		}
		if ack.GetError() != "" {
			st.nackedRev = st.sentRev
			st.dp.LastError = ack.GetError()
			st.dp.LastErrorRevision = st.sentRev
			if ack.GetOutcome() == metamcpv1.ApplyOutcome_APPLY_OUTCOME_KEYS_ONLY {
				st.dp.ApplyOutcome, st.dp.KeysRevision = ack.GetOutcome(), st.sentRev
				st.log.Warn("data plane refused snapshot; it applied its API keys and session keys only", "revision", st.sentRev, "err", ack.GetError())
			} else {
				st.log.Warn("data plane refused snapshot", "revision", st.sentRev, "err", ack.GetError())
			}
		} else {
			st.revision, st.hash = st.sentRev, st.sentHash
			st.dp.AppliedRevision, st.dp.AppliedHash, st.dp.StoreId = st.sentRev, st.sentHash, st.sentStore
			st.storeID = st.sentStore
			if st.dp.GetLastErrorRevision() <= st.sentRev {
				st.dp.LastError, st.dp.LastErrorRevision = "", 0
			}
			st.dp.ApplyOutcome, st.dp.RefusedServers, st.dp.KeysRevision = ack.GetOutcome(), ack.GetRefusedServers(), 0
			if len(ack.GetRefusedServers()) > 0 {
				st.log.Warn("data plane applied snapshot without some servers", "revision", st.sentRev, "refused", refusedText(ack.GetRefusedServers()))
			} else {
				st.log.Info("data plane applied snapshot", "revision", st.sentRev)
			}
		}
		st.record()
	case *metamcpv1.SyncRequest_Status:
		st.dp.LastSeen = now
		st.dp.Upstreams = m.Status.GetUpstreams()
		st.dp.ActiveSessions = m.Status.GetActiveSessions()
		st.dp.NameCollisions = m.Status.GetNameCollisions()
		if o := m.Status.GetOutcome(); o != metamcpv1.ApplyOutcome_APPLY_OUTCOME_UNSPECIFIED {
			st.dp.ApplyOutcome, st.dp.RefusedServers, st.dp.KeysRevision = o, m.Status.GetRefusedServers(), m.Status.GetKeysRevision()
		}
		st.record()
		st.srv.putTools(st.dp.GetNodeId(), m.Status.GetEndpointTools())
	case *metamcpv1.SyncRequest_Calls:
		recs := m.Calls.GetRecords() //nolint:staticcheck // an older data plane's records, still stored
		if len(recs) > st.srv.opts.MaxCallRecords {
			st.log.Warn("call-record batch too large; keeping the first part", "records", len(recs), "max", st.srv.opts.MaxCallRecords)
			recs = recs[:st.srv.opts.MaxCallRecords]
		}
		for _, r := range recs {
			if r.GetNodeId() == "" {
				r.NodeId = st.dp.GetNodeId()
			}
		}
		if _, err := st.srv.st.AppendCallRecords(ctx, recs); err != nil {
			st.log.Warn("store call records failed", "records", len(recs), "err", err)
		}
	case *metamcpv1.SyncRequest_Hello:
		return status.Error(codes.InvalidArgument, "hello may only be the first message of a stream")
	default:
		st.log.Debug("ignoring unknown sync message")
	}
	return nil
}

// refusedText lists refused servers with their reasons for a log line.
func refusedText(refused []*metamcpv1.RefusedServer) string {
	parts := make([]string, len(refused))
	for i, r := range refused {
		parts[i] = r.GetServer() + ": " + r.GetReason()
	}
	return strings.Join(parts, "; ")
}

func newNonce() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// registry writes data-plane records off the streams' paths: ACKs and status
// reports only queue the newest state of their node, and one goroutine writes
// what is queued. Connects and disconnects are written at once.
type registry struct {
	st  store.Store
	log *slog.Logger

	mu      sync.Mutex
	pending map[string]*metamcpv1.DataPlane
	kick    chan struct{}

	writeMu sync.Mutex // orders batched and immediate writes of one node
}

func newRegistry(st store.Store, log *slog.Logger) *registry {
	return &registry{st: st, log: log, pending: map[string]*metamcpv1.DataPlane{}, kick: make(chan struct{}, 1)}
}

func (r *registry) put(dp *metamcpv1.DataPlane) {
	c := proto.CloneOf(dp)
	r.mu.Lock()
	r.pending[c.GetNodeId()] = c
	r.mu.Unlock()
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// write records dp now, superseding anything queued for its node.
func (r *registry) write(ctx context.Context, dp *metamcpv1.DataPlane) {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	r.mu.Lock()
	delete(r.pending, dp.GetNodeId())
	r.mu.Unlock()
	if err := r.st.UpsertDataPlane(ctx, dp); err != nil {
		r.log.Warn("record data plane failed", "node", dp.GetNodeId(), "err", err)
	}
}

// run writes queued records until ctx is done, then writes what is left.
func (r *registry) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			r.flush(fctx)
			cancel()
			return
		case <-r.kick:
			r.flush(ctx)
			// Let a burst of ACKs gather into the next write.
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
}

func (r *registry) flush(ctx context.Context) {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	r.mu.Lock()
	batch := r.pending
	r.pending = map[string]*metamcpv1.DataPlane{}
	r.mu.Unlock()
	for _, dp := range batch {
		if err := r.st.UpsertDataPlane(ctx, dp); err != nil {
			r.log.Warn("record data plane failed", "node", dp.GetNodeId(), "err", err)
		}
	}
}

// joinFleet counts a data plane's stream in (+1) or out (-1) and tells the
// streams.
func (s *Server) joinFleet(d int) {
	s.fleetMu.Lock()
	defer s.fleetMu.Unlock()
	s.live += d
	close(s.fleetChanged)
	s.fleetChanged = make(chan struct{})
}

// fleet returns the number of live data planes and a channel closed when it
// changes: those streaming from this control plane, or, when more, those the
// registry saw lately (other control-plane replicas serve them). Rate-limit
// policies in local mode share their rate among them while Redis is away.
func (s *Server) fleet() (int, <-chan struct{}) {
	s.fleetMu.Lock()
	defer s.fleetMu.Unlock()
	return max(s.live, s.registryLive), s.fleetChanged
}

// Registry polling for the fleet count.
const (
	fleetPoll = 5 * time.Second
	// A data plane reports every 5s: one not seen for fleetStale is gone.
	fleetStale = 20 * time.Second
)

// watchFleet counts, every fleetPoll until ctx is done, the data planes the
// registry says are connected and were seen lately, through any
// control-plane replica.
func (s *Server) watchFleet(ctx context.Context) {
	t := time.NewTicker(fleetPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		dps, err := s.st.ListDataPlanes(ctx)
		if err != nil {
			continue
		}
		n := 0
		for _, dp := range dps {
			if dp.GetConnected() && time.Since(dp.GetLastSeen().AsTime()) < fleetStale {
				n++
			}
		}
		s.fleetMu.Lock()
		if n != s.registryLive {
			s.registryLive = n
			close(s.fleetChanged)
			s.fleetChanged = make(chan struct{})
		}
		s.fleetMu.Unlock()
	}
}
