package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

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
