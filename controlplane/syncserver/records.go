package syncserver

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// maxRecordsBatch bounds one RecordsRequest; data planes send 500 at most.
const maxRecordsBatch = 10000

// storeRetry bounds how long one batch is retried against a failing store
// before the stream is ended: the data plane keeps the batch and sends it
// again on its next stream.
const storeRetry = 10 * time.Second

// Records stores one data plane's call records, batch by batch, on a stream
// of their own: a slow store delays only this stream, never a snapshot.
// Each batch is acknowledged once stored; a batch that cannot be stored is
// not acknowledged, and the stream ends, so the data plane keeps it.
func (s *Server) Records(gs grpc.BidiStreamingServer[metamcpv1.RecordsRequest, metamcpv1.RecordsResponse]) error {
	ctx := gs.Context()
	var (
		node    string
		dropped int64
	)
	for {
		req, err := gs.Recv()
		if err != nil {
			// io.EOF, cancelled, or a broken stream: the data plane went
			// away and resends what it has no ack for.
			return nil //nolint:nilerr // nothing to report to it
		}
		if node == "" && req.GetNodeId() != "" {
			node = req.GetNodeId()
			s.log.Debug("record stream opened", "node", node)
		}
		recs := req.GetRecords()
		if len(recs) > maxRecordsBatch {
			return status.Errorf(codes.InvalidArgument, "a batch holds %d call records, more than %d", len(recs), maxRecordsBatch)
		}
		for _, r := range recs {
			if r.GetNodeId() == "" {
				r.NodeId = req.GetNodeId()
			}
		}
		if d := req.GetDroppedRecords(); d > dropped {
			s.log.Warn("a data plane lost call records: its spool or buffer was full", "node", node, "dropped", d, "new", d-dropped)
			dropped = d
		}
		if err := s.storeRecords(ctx, node, recs); err != nil {
			return err
		}
		if err := gs.Send(&metamcpv1.RecordsResponse{Sequence: req.GetSequence()}); err != nil {
			return nil //nolint:nilerr // the stream is gone; the data plane resends what it missed
		}
	}
}

// storeRecords stores a batch, retrying a failing store for a while.
func (s *Server) storeRecords(ctx context.Context, node string, recs []*metamcpv1.CallRecord) error {
	if len(recs) == 0 {
		return nil
	}
	deadline := time.Now().Add(storeRetry)
	wait := 100 * time.Millisecond
	for {
		start := time.Now()
		_, err := s.st.AppendCallRecords(ctx, recs)
		if o := s.opts.Observer; o != nil {
			o.Stored(recs, time.Since(start), err)
		}
		if err == nil {
			if s.opts.OnRecords != nil {
				s.opts.OnRecords()
			}
			return nil
		}
		if ctx.Err() != nil {
			return status.FromContextError(ctx.Err()).Err()
		}
		if time.Now().After(deadline) {
			s.log.Error("store call records failed; the data plane keeps them and sends them again", "node", node, "records", len(recs), "err", err)
			return status.Error(codes.Unavailable, "the control plane cannot store call records now; keep them and retry")
		}
		s.log.Warn("store call records failed; retrying", "node", node, "records", len(recs), "err", err, "retry_in", wait)
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-time.After(wait):
		}
		wait = min(wait*2, 2*time.Second)
	}
}
