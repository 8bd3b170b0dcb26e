package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// usageError is a mistake on the command line: exit code 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return usageError{fmt.Errorf(format, args...)}
}

// runtimeError is a failure before a command ran that is not a command-line
// mistake (an unreadable config file): exit code 1.
type runtimeError struct{ err error }

func (e runtimeError) Error() string { return e.err.Error() }
func (e runtimeError) Unwrap() error { return e.err }

// subjectError names what a call was about, so an INVALID_ARGUMENT reads
// `invalid server "github":` rather than a bare list of fields.
type subjectError struct {
	subject string
	err     error
}

func (e subjectError) Error() string { return e.subject + ": " + e.err.Error() }
func (e subjectError) Unwrap() error { return e.err }

// about wraps err (when not nil) with the subject of the call.
func about(subject string, err error) error {
	if err == nil {
		return nil
	}
	return subjectError{subject: subject, err: err}
}

// reportError prints err for a person and returns the exit code.
func (a *app) reportError(cmd *cobra.Command, err error) int {
	var es exitStatus
	if errors.As(err, &es) {
		return es.code
	}
	msg, code := a.explain(err)
	if code == exitUsage && cmd != nil {
		msg += fmt.Sprintf(" (see '%s --help')", cmd.CommandPath())
	}
	fmt.Fprintf(a.stderr, "error: %s\n", msg)
	return code
}

// explain turns an error into the message a person reads and an exit code.
// gRPC errors are mapped by code; their raw text ("rpc error: code = ...") is
// never shown.
func (a *app) explain(err error) (string, int) {
	var ue usageError
	if errors.As(err, &ue) {
		return ue.Error(), exitUsage
	}
	if st, ok := grpcStatus(err); ok {
		var se subjectError
		subject := ""
		if errors.As(err, &se) {
			subject = se.subject
		}
		return a.explainStatus(st, subject), exitError
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return a.deadlineMessage(), exitError
	}
	if errors.Is(err, context.Canceled) {
		return "interrupted", exitError
	}
	var re runtimeError
	if errors.As(err, &re) {
		return re.Error(), exitError
	}
	if !a.started {
		// Cobra's own errors (unknown command, wrong number of arguments)
		// and invalid environment values come before any command runs.
		return err.Error(), exitUsage
	}
	return err.Error(), exitError
}

// grpcStatus finds a gRPC status in err's chain. Unlike status.FromError it
// keeps the server's own message, without the wrapping text.
func grpcStatus(err error) (*status.Status, bool) {
	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) {
		if st := se.GRPCStatus(); st != nil && st.Code() != codes.OK {
			return st, true
		}
	}
	return nil, false
}

func (a *app) deadlineMessage() string {
	return fmt.Sprintf("the control plane at %s did not answer within %s: is it overloaded or unreachable? (raise --timeout)", a.addr, a.timeout)
}

// explainStatus is the message for one gRPC status.
func (a *app) explainStatus(st *status.Status, subject string) string {
	msg := strings.TrimSpace(st.Message())
	switch st.Code() {
	case codes.Unavailable:
		if !strings.Contains(msg, "connection refused") && !strings.Contains(msg, "no such host") && speaksHTTP1(a.addr) {
			return fmt.Sprintf("%s answers HTTP/1.1, not the control plane's gRPC API: is it a data plane's port? Point --addr (or METAMCP_ADDR) at the control plane, %s by default", a.addr, defaultAddr)
		}
		reason := unavailableReason(msg)
		if reason != "" {
			reason = " (" + reason + ")"
		}
		return fmt.Sprintf("cannot reach the control plane at %s%s: is it running? (set --addr or METAMCP_ADDR)", a.addr, reason)
	case codes.Unauthenticated:
		if a.token == "" {
			return "the control plane needs an admin token: pass --token or set METAMCP_TOKEN"
		}
		return "the control plane refused the token: pass --token or set METAMCP_TOKEN"
	case codes.PermissionDenied:
		if msg == "" {
			msg = "permission denied: the token may lack the admin scope"
		}
		return cliKinds(msg)
	case codes.InvalidArgument:
		return invalidArgumentMessage(st, subject)
	case codes.DeadlineExceeded:
		return a.deadlineMessage()
	case codes.Canceled:
		return "interrupted"
	case codes.Unimplemented:
		return fmt.Sprintf("the control plane at %s does not support this call: is it older than mmctl? (mmctl version)", a.addr)
	case codes.NotFound, codes.AlreadyExists, codes.FailedPrecondition, codes.ResourceExhausted, codes.Aborted, codes.OutOfRange:
		if msg == "" {
			msg = strings.ToLower(st.Code().String())
		}
		return cliKinds(msg)
	default:
		if msg == "" {
			msg = "no details"
		}
		return fmt.Sprintf("the control plane failed: %s (code %s)", msg, st.Code())
	}
}

// invalidArgumentMessage lists each field violation on its own indented line.
func invalidArgumentMessage(st *status.Status, subject string) string {
	var fields []*errdetails.BadRequest_FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			fields = append(fields, br.GetFieldViolations()...)
		}
	}
	head := "invalid request"
	if subject != "" {
		head = "invalid " + subject
	}
	if len(fields) == 0 {
		msg := strings.TrimSpace(st.Message())
		if msg == "" {
			return head
		}
		return head + ": " + msg
	}
	var b strings.Builder
	b.WriteString(head + ":")
	for _, f := range fields {
		b.WriteString("\n  ")
		if f.GetField() != "" {
			b.WriteString(f.GetField() + ": ")
		}
		b.WriteString(cliKinds(f.GetDescription()))
	}
	return b.String()
}

// apiKindRef matches a resource named in a server message: `Server "x"`.
var apiKindRef = regexp.MustCompile(`\b(Server|Namespace|Endpoint|RateLimitPolicy|ApiKey|Token|DataPlane) "`)

// cliKinds rewrites the API's kind names in a message into the ones mmctl's
// commands use (`Server "x" not found` -> `server "x" not found`), so that
// the message matches what a user types.
func cliKinds(msg string) string {
	return apiKindRef.ReplaceAllStringFunc(msg, func(m string) string {
		if k := kindByAPIKind(strings.TrimSuffix(m, ` "`)); k != nil {
			return k.name + ` "`
		}
		return m
	})
}

// speaksHTTP1 reports whether addr answers a plain HTTP/1.1 request, as a
// data plane's port does and the control plane's gRPC port does not.
func speaksHTTP1(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n\r\n")); err != nil {
		return false
	}
	buf := make([]byte, 9)
	n, _ := io.ReadFull(conn, buf)
	return strings.HasPrefix(string(buf[:n]), "HTTP/1.")
}

// unavailableReason extracts the useful part of a transport error.
func unavailableReason(msg string) string {
	switch m := strings.ToLower(msg); {
	case strings.Contains(m, "connection refused"):
		return "connection refused"
	case strings.Contains(m, "no such host"):
		return "no such host"
	case strings.Contains(m, "i/o timeout"):
		return "timed out"
	case strings.Contains(m, "certificate"):
		return "TLS certificate not trusted: check --tls-ca"
	case strings.Contains(m, "tls:") || strings.Contains(m, "handshake"):
		return "TLS handshake failed: check --tls and whether the control plane serves TLS"
	case strings.Contains(m, "network is unreachable"):
		return "network is unreachable"
	case strings.Contains(m, "server preface") || strings.Contains(m, "connection reset") || strings.Contains(m, "eof"):
		return "the connection was closed at once: does it serve TLS? then pass --tls or --tls-ca"
	}
	return ""
}
