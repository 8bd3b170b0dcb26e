// Command mmctl is the MetaMCP admin CLI. In the style of kubectl it creates,
// lists, describes and deletes config resources (servers, namespaces,
// endpoints, rate-limit policies, API keys, tokens), applies and exports
// declarative YAML, imports an existing mcpServers JSON, and shows which data
// planes run which config revision.
//
// mmctl speaks only the control plane's public gRPC AdminService
// (api/metamcp/v1); it imports nothing from the control or data plane.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one mmctl command line and returns the process exit code. A
// failure is printed on stderr as one clear message, never as a raw gRPC error
// or a stack trace.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) (code int) {
	defer func() {
		// A bug must still end in one line, not a stack trace on a user's
		// terminal.
		if v := recover(); v != nil {
			fmt.Fprintf(stderr, "error: mmctl failed unexpectedly (%v): please report this bug with the command line you ran\n", v)
			code = exitError
		}
	}()
	a := &app{
		stdin:  stdin,
		stdout: stdout,
		stderr: stderr,
		getenv: os.Getenv,
		now:    time.Now,
	}
	defer a.close()
	root := newRootCommand(a)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return exitOK
	}
	return a.reportError(cmd, err)
}
