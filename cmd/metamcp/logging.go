package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/metamcp/metamcp/dataplane"
	"github.com/metamcp/metamcp/dataplane/telemetry"

	"github.com/spf13/cobra"
)

// logFlags are the logging flags every subcommand shares.
type logFlags struct {
	level  string
	format string
}

func (f *logFlags) register(root *cobra.Command) {
	root.PersistentFlags().StringVar(&f.level, "log-level", "info", "log level: debug, info, warn or error")
	root.PersistentFlags().StringVar(&f.format, "log-format", "text", "log format: text or json")
}

// logger builds the structured logger the components share. Logs go to w
// (stderr), never to stdout, which is kept for output meant for people and
// scripts.
func (f *logFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	switch strings.ToLower(f.level) {
	case "debug":
		level = slog.LevelDebug
	case "info", "":
		level = slog.LevelInfo
	case "warn", "warning":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	default:
		return nil, usageError{fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", f.level)}
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(f.format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, usageError{fmt.Errorf("invalid --log-format %q: use text or json", f.format)}
	}
}

// telemetry reads the data plane's --metrics-listen and --access-log. The
// access log goes to stderr in the --log-format, at level info whatever
// --log-level says: it is asked for on its own.
func (f *logFlags) telemetry(metricsListen, accessLog string) (dataplane.TelemetryOptions, error) {
	mode, err := telemetry.ParseAccessLog(accessLog)
	if err != nil {
		return dataplane.TelemetryOptions{}, usageError{fmt.Errorf("--access-log: %w", err)}
	}
	opts := dataplane.TelemetryOptions{
		Metrics:             metricsListen != "off",
		MetricsOnClientPort: metricsListen == "",
		AccessLog:           mode,
	}
	if mode != telemetry.AccessLogOff {
		level := f.level
		f.level = "info"
		opts.AccessLogger, err = f.logger(os.Stderr)
		f.level = level
		if err != nil {
			return dataplane.TelemetryOptions{}, err
		}
		opts.AccessLogger = opts.AccessLogger.With("log", "access")
	}
	return opts, nil
}

// serveMetrics serves h at /metrics on addr until the returned stop is called.
func serveMetrics(ctx context.Context, lc *net.ListenConfig, addr string, h http.Handler, logger *slog.Logger) (stop func(), err error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, usageError{fmt.Errorf("invalid --metrics-listen %q: %w (use HOST:PORT, e.g. 0.0.0.0:9090)", addr, err)}
	}
	lis, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --metrics-listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
			logger.Warn("metrics server stopped", "err", err)
		}
	}()
	logger.Info("metrics listening", "addr", lis.Addr().String(), "path", "/metrics")
	return func() {
		_ = hs.Close()
		<-done
	}, nil
}
