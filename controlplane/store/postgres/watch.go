package postgres

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
)

// Backoff bounds for reconnecting the watch connection.
const (
	minReconnectDelay = 100 * time.Millisecond
	maxReconnectDelay = 5 * time.Second
)

// Watch returns a channel that first receives the current revision, then the
// latest revision after each commit by any control plane on this database.
// One listener connection per Store serves every watch; it is opened by the
// first Watch.
func (s *Store) Watch(ctx context.Context) <-chan int64 {
	ch := s.hub.Watch(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.listening && s.ctx.Err() == nil {
		s.listening = true
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.listen(s.ctx)
		}()
	}
	return ch
}

// listen keeps a LISTEN connection open until ctx is done, reconnecting with
// exponential backoff.
func (s *Store) listen(ctx context.Context) {
	delay := minReconnectDelay
	for {
		connected, err := s.listenOnce(ctx)
		if ctx.Err() != nil {
			return
		}
		if connected {
			delay = minReconnectDelay
		}
		s.logger.WarnContext(ctx, "revision watch lost its postgres connection; reconnecting",
			"error", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return
		case <-time.After(delay):
		}
		delay = min(delay*2, maxReconnectDelay)
	}
}

// listenOnce connects, LISTENs, then re-reads the revision (so a commit
// between a lost connection and the new LISTEN is not missed) and waits for
// notifications, re-reading every recheck interval. It returns when the
// connection fails or ctx is done; connected reports whether LISTEN worked.
func (s *Store) listenOnce(ctx context.Context) (connected bool, err error) {
	conn, err := connect(ctx, s.connCfg.Copy())
	if err != nil {
		return false, err
	}
	defer closeConn(conn)
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return false, fmt.Errorf("listen on %s: %w", s.channel, err)
	}
	for {
		var rev int64
		if err := conn.QueryRow(ctx, "SELECT value FROM revision").Scan(&rev); err != nil {
			return true, fmt.Errorf("read revision: %w", err)
		}
		s.hub.Observe(rev)

		// Wait for notifications until one recheck interval passes without
		// any, then re-read.
		for {
			wctx, cancel := context.WithTimeout(ctx, s.recheck)
			n, err := conn.WaitForNotification(wctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return true, ctx.Err()
				}
				if wctx.Err() != nil && !conn.IsClosed() {
					break // no notification this interval: recheck
				}
				return true, fmt.Errorf("wait for notification: %w", err)
			}
			rev, err := strconv.ParseInt(n.Payload, 10, 64)
			if err != nil {
				s.logger.WarnContext(ctx, "ignoring malformed revision notification",
					"channel", n.Channel, "payload", n.Payload)
				break // re-read instead
			}
			s.hub.Observe(rev)
		}
	}
}
