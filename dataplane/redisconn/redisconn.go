// Package redisconn opens the data plane's one Redis client, the connection
// the session bus (and later the shared rate limiter) use, with timeouts short
// enough that a dead or unreachable Redis fails a request in about a second
// instead of stalling it.
package redisconn

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// Defaults applied when the URL does not set the matching query parameter
// (dial_timeout, read_timeout, write_timeout, pool_timeout, max_retries).
// go-redis's own defaults (5s dial, 3s read, 3 retries) let a dead Redis hold
// a request for many seconds.
const (
	DefaultDialTimeout  = time.Second
	DefaultReadTimeout  = time.Second
	DefaultWriteTimeout = time.Second
	DefaultPoolTimeout  = 2 * time.Second
)

// New parses a redis:// (or rediss://, unix://) URL and returns a client for
// it, named clientName in CLIENT LIST ("" leaves connections unnamed). It does
// not connect: go-redis dials on first use. Commands are not retried (a retried
// PUBLISH could deliver twice, a retried rate-limit script count twice) unless
// the URL asks for it with max_retries.
func New(rawURL, clientName string) (*redis.Client, error) {
	opts, err := Options(rawURL, clientName)
	if err != nil {
		return nil, err
	}
	return redis.NewClient(opts), nil
}

// Options is what New builds its client from.
func Options(rawURL, clientName string) (*redis.Options, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's error repeats the input, which may hold a password.
		return nil, fmt.Errorf("invalid Redis URL: cannot parse it (use redis://[USER:PASSWORD@]HOST:PORT/DB)")
	}
	opts, err := redis.ParseURL(rawURL)
	if err != nil {
		return nil, fmt.Errorf("invalid Redis URL %s: %w (use redis://[USER:PASSWORD@]HOST:PORT/DB)", u.Redacted(), err)
	}
	q := u.Query()
	set := func(name string) bool { return q.Has(name) }
	if !set("dial_timeout") {
		opts.DialTimeout = DefaultDialTimeout
	}
	if !set("read_timeout") {
		opts.ReadTimeout = DefaultReadTimeout
	}
	if !set("write_timeout") {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if !set("pool_timeout") {
		opts.PoolTimeout = DefaultPoolTimeout
	}
	if !set("max_retries") {
		opts.MaxRetries = -1 // go-redis: -1 disables retries, 0 means its default of 3
	}
	// One dial attempt per connection (go-redis makes 5, each up to
	// DialTimeout, so an unreachable host held a command for 5s).
	opts.DialerRetries = 1
	if !set("client_name") && clientName != "" {
		opts.ClientName = clientName
	}
	// A caller's deadline bounds each command too.
	opts.ContextTimeoutEnabled = true
	// Maintenance notifications are a Redis Enterprise / Redis 8 feature; on
	// other servers go-redis probes for them and logs the refusal.
	opts.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
	return opts, nil
}

// Redacted returns rawURL with any password replaced, for logs and errors.
func Redacted(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil {
		return "(unparsable Redis URL)"
	}
	return u.Redacted()
}

// Ping checks that Redis answers, within timeout.
func Ping(ctx context.Context, c redis.UniversalClient, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping Redis: %w", err)
	}
	return nil
}

// SetLogger sends go-redis's own log lines (failed dials, reconnects) to
// logger at debug level instead of stderr: the data plane logs Redis outages
// itself, once, with context. go-redis has one logger per process, so the
// last call wins.
func SetLogger(logger *slog.Logger) {
	redis.SetLogger(slogLogging{logger})
}

type slogLogging struct{ log *slog.Logger }

func (l slogLogging) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...))
}
