package gcra

import (
	"fmt"
	"net/url"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"
)

// DefaultRedisTimeout bounds the connection steps (dial, read, write, pool
// wait) of a rate-limit Redis client whose URL sets none; each command is
// bounded by its caller's deadline too.
const DefaultRedisTimeout = time.Second

// NewRedisClient returns a client for the Redis a rate limiter counts in:
//
//	redis://[USER:PASSWORD@]HOST:PORT/DB       standalone (rediss:// for TLS)
//	redis://HOST:PORT?master_name=NAME&addr=HOST2:PORT   Sentinel: the hosts are sentinels
//	redis://HOST:PORT?cluster=true&addr=HOST2:PORT       Cluster: the hosts are seeds
//
// with go-redis's URL parameters (dial_timeout, read_timeout, ...). Without
// them it sets short timeouts and no retries (a retried script could count
// a call twice), and it never reconnects more than once per command. It does
// not connect: go-redis dials on first use.
func NewRedisClient(rawURL, clientName string) (redis.UniversalClient, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		// url.Parse's error repeats the input, which may hold a password.
		return nil, fmt.Errorf("invalid Redis URL: cannot parse it (use redis://[USER:PASSWORD@]HOST:PORT/DB)")
	}
	fail := func(err error) error {
		return fmt.Errorf("invalid Redis URL %s: %w (use redis://[USER:PASSWORD@]HOST:PORT/DB, with master_name=NAME for Sentinel or cluster=true for Cluster)", u.Redacted(), err)
	}
	q := u.Query()
	set := func(name string) bool { return q.Has(name) }
	defaults := func(d, r, w, p *time.Duration, mr, dr *int, ctxTimeout *bool, name *string, protocol *int) {
		if !set("protocol") {
			// RESP2: the script's answer needs nothing of RESP3, whose push
			// notifications go-redis looks for around every command.
			*protocol = 2
		}
		if !set("dial_timeout") {
			*d = DefaultRedisTimeout
		}
		if !set("read_timeout") {
			*r = DefaultRedisTimeout
		}
		if !set("write_timeout") {
			*w = DefaultRedisTimeout
		}
		if !set("pool_timeout") {
			*p = DefaultRedisTimeout
		}
		if !set("max_retries") {
			*mr = -1 // go-redis: -1 disables retries, 0 means its default of 3
		}
		if !set("dialer_retries") {
			*dr = 1
		}
		*ctxTimeout = true
		if !set("client_name") && clientName != "" {
			*name = clientName
		}
	}
	switch {
	case q.Get("cluster") == "true" || q.Get("cluster") == "1":
		q.Del("cluster")
		u.RawQuery = q.Encode()
		o, err := redis.ParseClusterURL(u.String())
		if err != nil {
			return nil, fail(err)
		}
		defaults(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled, &o.ClientName, &o.Protocol)
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		return redis.NewClusterClient(o), nil
	case q.Get("master_name") != "":
		o, err := redis.ParseFailoverURL(rawURL)
		if err != nil {
			return nil, fail(err)
		}
		defaults(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled, &o.ClientName, &o.Protocol)
		return redis.NewFailoverClient(o), nil
	default:
		o, err := redis.ParseURL(rawURL)
		if err != nil {
			return nil, fail(err)
		}
		defaults(&o.DialTimeout, &o.ReadTimeout, &o.WriteTimeout, &o.PoolTimeout, &o.MaxRetries, &o.DialerRetries, &o.ContextTimeoutEnabled, &o.ClientName, &o.Protocol)
		o.MaintNotificationsConfig = &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}
		return redis.NewClient(o), nil
	}
}

// MultiNode reports whether rawURL names a Sentinel (master_name=) or a
// Cluster (cluster=true): a URL NewRedisClient takes and go-redis's ParseURL
// does not.
func MultiNode(rawURL string) bool {
	u, err := url.Parse(rawURL)
	if err != nil {
		return false
	}
	q := u.Query()
	return q.Get("master_name") != "" || q.Get("cluster") == "true" || q.Get("cluster") == "1"
}
