package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/spf13/cobra"

	"github.com/metamcp/metamcp/pkg/version"
)

// demoReadmeURI is the demo server's one resource.
const demoReadmeURI = "demo://readme"

func newDemoServerCommand(lf *logFlags) *cobra.Command {
	return &cobra.Command{
		Use:   "demo-server",
		Short: "Run a small MCP server on stdin/stdout (the upstream that metamcp dev seeds)",
		Long: `Run a small, self-contained MCP server over stdio, for trying MetaMCP offline.
metamcp dev registers it as the server "demo" on its first run.

Tools: echo, add, now, random_number. Resource: ` + demoReadmeURI + `.
Prompt: summarize (argument: text).

It speaks MCP on stdin/stdout; logs go to stderr.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			logger, err := lf.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return runDemoServer(ctx, logger, os.Stdin, os.Stdout)
		},
	}
}

// runDemoServer serves the demo MCP server on in/out until the client
// disconnects or ctx is done.
func runDemoServer(ctx context.Context, logger *slog.Logger, in io.ReadCloser, out io.WriteCloser) error {
	srv := newDemoServer(logger)
	err := srv.Run(ctx, &mcp.IOTransport{Reader: in, Writer: out})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("demo server: %w", err)
	}
	return nil
}

type echoArgs struct {
	Text string `json:"text" jsonschema:"the text to send back"`
}

type addArgs struct {
	A float64 `json:"a" jsonschema:"the first number"`
	B float64 `json:"b" jsonschema:"the second number"`
}

type addResult struct {
	Sum float64 `json:"sum"`
}

type nowArgs struct {
	Timezone string `json:"timezone,omitempty" jsonschema:"an IANA time zone such as Europe/Paris (default UTC)"`
}

type randomArgs struct {
	Min int `json:"min,omitempty" jsonschema:"the smallest value (default 1)"`
	Max int `json:"max,omitempty" jsonschema:"the largest value (default 100)"`
}

type randomResult struct {
	Value int `json:"value"`
}

// newDemoServer builds the demo server: four tools, a resource and a prompt.
func newDemoServer(logger *slog.Logger) *mcp.Server {
	srv := mcp.NewServer(&mcp.Implementation{
		Name:    "metamcp-demo",
		Title:   "MetaMCP demo server",
		Version: version.String(),
	}, &mcp.ServerOptions{
		Instructions: "A demo server for trying MetaMCP: echo text, add numbers, tell the time, draw random numbers.",
		Logger:       logger,
	})

	mcp.AddTool(srv, &mcp.Tool{
		Name:        "echo",
		Description: "Return the given text unchanged.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, func(_ context.Context, _ *mcp.CallToolRequest, in echoArgs) (*mcp.CallToolResult, any, error) {
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: in.Text}}}, nil, nil
	})

	mcp.AddTool(srv, &mcp.Tool{
		Name:        "add",
		Description: "Add two numbers.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, func(_ context.Context, _ *mcp.CallToolRequest, in addArgs) (*mcp.CallToolResult, addResult, error) {
		return nil, addResult{Sum: in.A + in.B}, nil
	})

	mcp.AddTool(srv, &mcp.Tool{
		Name:        "now",
		Description: "Tell the current date and time (RFC 3339), in UTC or a given time zone.",
		Annotations: &mcp.ToolAnnotations{ReadOnlyHint: true},
	}, func(_ context.Context, _ *mcp.CallToolRequest, in nowArgs) (*mcp.CallToolResult, any, error) {
		loc := time.UTC
		if in.Timezone != "" {
			l, err := time.LoadLocation(in.Timezone)
			if err != nil {
				// A tool error the model can read and correct, not a protocol error.
				return errorResult(fmt.Sprintf("unknown time zone %q (%v): use an IANA name such as Europe/Paris", in.Timezone, err)), nil, nil
			}
			loc = l
		}
		return &mcp.CallToolResult{Content: []mcp.Content{&mcp.TextContent{Text: time.Now().In(loc).Format(time.RFC3339)}}}, nil, nil
	})

	mcp.AddTool(srv, &mcp.Tool{
		Name:        "random_number",
		Description: "Draw a random integer between min and max, inclusive (default 1 to 100).",
	}, func(_ context.Context, _ *mcp.CallToolRequest, in randomArgs) (*mcp.CallToolResult, randomResult, error) {
		lo, hi := in.Min, in.Max
		if lo == 0 && hi == 0 {
			lo, hi = 1, 100
		}
		if hi < lo {
			return errorResult(fmt.Sprintf("max (%d) is below min (%d)", hi, lo)), randomResult{}, nil
		}
		return nil, randomResult{Value: lo + rand.IntN(hi-lo+1)}, nil
	})

	srv.AddResource(&mcp.Resource{
		URI:         demoReadmeURI,
		Name:        "readme",
		Title:       "About the demo server",
		Description: "What this demo server offers.",
		MIMEType:    "text/markdown",
	}, func(_ context.Context, req *mcp.ReadResourceRequest) (*mcp.ReadResourceResult, error) {
		return &mcp.ReadResourceResult{Contents: []*mcp.ResourceContents{{
			URI: req.Params.URI, MIMEType: "text/markdown", Text: demoReadme,
		}}}, nil
	})

	srv.AddPrompt(&mcp.Prompt{
		Name:        "summarize",
		Title:       "Summarize a text",
		Description: "Ask the model for a short summary of a text.",
		Arguments: []*mcp.PromptArgument{
			{Name: "text", Description: "the text to summarize", Required: true},
			{Name: "style", Description: "bullets or paragraph (default bullets)"},
		},
	}, func(_ context.Context, req *mcp.GetPromptRequest) (*mcp.GetPromptResult, error) {
		text := req.Params.Arguments["text"]
		if text == "" {
			return nil, fmt.Errorf("argument text is required: pass the text to summarize")
		}
		style := req.Params.Arguments["style"]
		if style == "" {
			style = "bullets"
		}
		return &mcp.GetPromptResult{
			Description: "Summarize a text",
			Messages: []*mcp.PromptMessage{{
				Role:    "user",
				Content: &mcp.TextContent{Text: fmt.Sprintf("Summarize the following text in a few %s:\n\n%s", style, text)},
			}},
		}, nil
	})
	return srv
}

func errorResult(msg string) *mcp.CallToolResult {
	return &mcp.CallToolResult{IsError: true, Content: []mcp.Content{&mcp.TextContent{Text: msg}}}
}

const demoReadme = `# MetaMCP demo server

This server ships inside the metamcp binary (` + "`metamcp demo-server`" + `) so that
` + "`metamcp dev`" + ` works offline. Behind MetaMCP its tools appear prefixed with the
server's name, for example ` + "`demo__echo`" + `.

Tools:
- echo: return the given text
- add: add two numbers
- now: the current time, in UTC or a given time zone
- random_number: a random integer between min and max

Prompt: summarize (argument: text).
`
