package upstream

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sort"
	"sync"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/dataplane/rpc"
)

const (
	// maxStderrLine bounds one logged stderr line.
	maxStderrLine = 4 << 10
	// stopGrace is how long a process gets to exit after its stdin closes,
	// and again after SIGTERM.
	stopGrace = 2 * time.Second
)

// minimalEnv names the variables of the data plane's own environment that a
// stdio server gets when PoolOptions.Environ is nil. The second line is
// Windows' equivalents of the first (where npm keeps its cache and global
// packages, and what a process needs to start at all); elsewhere they are
// not set.
var minimalEnv = []string{"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "TMPDIR", "TZ", "TERM",
	"SystemRoot", "windir", "ComSpec", "PATHEXT", "USERPROFILE", "APPDATA", "LOCALAPPDATA", "TEMP", "TMP",
	"NODE_PATH", "NPM_CONFIG_CACHE", "npm_config_cache", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"}

// MinimalEnviron returns the few variables of the current environment that
// stdio servers commonly need (PATH, HOME, locale, temp and cache dirs).
func MinimalEnviron() []string {
	var env []string
	for _, k := range minimalEnv {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// stdioTransport runs an upstream server as a child process in its own process
// group and speaks newline-delimited JSON-RPC on its stdin and stdout.
type stdioTransport struct {
	mux
	server string
	// maxLine bounds one message from the process.
	maxLine int64
	log     *slog.Logger
	cmd     *exec.Cmd
	stdin   *os.File
	stdout  *os.File
	stderr  *os.File
	onMsg   func(Caller, *rpc.Message)

	wmu     sync.Mutex
	readers sync.WaitGroup
	exited  chan struct{} // closed once cmd.Wait returned

	once  sync.Once
	cause error
	fin   chan struct{}
}

func startStdio(cfg *metamcpv1.Server, environ []string, maxLine int64, log *slog.Logger, onMsg func(Caller, *rpc.Message)) (*stdioTransport, error) {
	st := cfg.GetStdio()
	if st.GetCommand() == "" {
		return nil, errors.New("no command to run")
	}
	cmd := exec.Command(st.GetCommand(), st.GetArgs()...)
	cmd.Dir = st.GetCwd()
	if environ == nil {
		environ = MinimalEnviron()
	}
	env := append([]string(nil), environ...)
	keys := make([]string, 0, len(st.GetEnv()))
	for k := range st.GetEnv() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env = append(env, k+"="+st.GetEnv()[k].GetValue())
	}
	cmd.Env = env
	newProcessGroup(cmd)

	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			_ = f.Close()
		}
	}
	pipe := func() (r, w *os.File, err error) {
		r, w, err = os.Pipe()
		if err == nil {
			files = append(files, r, w)
		}
		return r, w, err
	}
	inR, inW, err := pipe()
	if err != nil {
		return nil, fmt.Errorf("create pipe: %w", err)
	}
	outR, outW, err := pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("create pipe: %w", err)
	}
	errR, errW, err := pipe()
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("create pipe: %w", err)
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = inR, outW, errW
	if err := cmd.Start(); err != nil {
		closeAll()
		return nil, fmt.Errorf("start %s: %w", st.GetCommand(), err)
	}
	// The child has its ends now.
	_ = inR.Close()
	_ = outW.Close()
	_ = errW.Close()
	t := &stdioTransport{
		server: cfg.GetName(), log: log, cmd: cmd, maxLine: maxLine,
		stdin: inW, stdout: outR, stderr: errR, onMsg: onMsg,
		exited: make(chan struct{}), fin: make(chan struct{}),
	}
	t.readers.Add(3)
	go func() {
		defer t.readers.Done()
		_ = cmd.Wait()
		close(t.exited)
		t.shutdown(fmt.Errorf("process exited (%s)", cmd.ProcessState))
	}()
	go t.readStdout()
	go t.readStderr()
	return t, nil
}

func (t *stdioTransport) processes() int { return 1 }

func (t *stdioTransport) done() <-chan struct{} { return t.fin }

func (t *stdioTransport) err() error {
	select {
	case <-t.fin:
		return t.cause
	default:
		return nil
	}
}

func (t *stdioTransport) roundTrip(ctx context.Context, id int64, body []byte) (*rpc.Message, error) {
	return t.wait(ctx, id, body, t.send, t.fin, t.err)
}

// send writes one message and its newline. Raw newlines in the JSON can only
// be white space (inside strings they are escaped), so they become spaces.
func (t *stdioTransport) send(ctx context.Context, body []byte) error {
	if bytes.IndexByte(body, '\n') >= 0 || bytes.IndexByte(body, '\r') >= 0 {
		body = bytes.Map(func(r rune) rune {
			if r == '\n' || r == '\r' {
				return ' '
			}
			return r
		}, body)
	}
	t.wmu.Lock()
	defer t.wmu.Unlock()
	select {
	case <-t.fin:
		return t.cause
	default:
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = t.stdin.SetWriteDeadline(dl)
		defer func() { _ = t.stdin.SetWriteDeadline(time.Time{}) }()
	}
	// One write for message and newline keeps messages whole.
	if cap(body) > len(body) {
		_, err := t.stdin.Write(append(body, '\n'))
		return t.writeErr(err)
	}
	if _, err := t.stdin.Write(body); err != nil {
		return t.writeErr(err)
	}
	_, err := t.stdin.Write([]byte{'\n'})
	return t.writeErr(err)
}

func (t *stdioTransport) writeErr(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("write to the process: %w", context.DeadlineExceeded)
	}
	return fmt.Errorf("write to the process: %w", err)
}

func (t *stdioTransport) readStdout() {
	defer t.readers.Done()
	r := bufio.NewReaderSize(t.stdout, 64<<10)
	var long []byte
	for {
		frag, err := r.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, frag...)
			if int64(len(long)) > t.maxLine {
				t.shutdown(&ResponseTooLargeError{t.maxLine})
				return
			}
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				// Prefer the exit status to a bare EOF when the process is gone.
				select {
				case <-t.exited:
				case <-time.After(200 * time.Millisecond):
					t.shutdown(errors.New("the process closed its stdout"))
				}
			} else {
				t.shutdown(fmt.Errorf("read from the process: %w", err))
			}
			return
		}
		var line []byte
		if long != nil {
			line = append(long, frag...)
			long = nil
		} else {
			line = bytes.Clone(frag) // results alias this buffer and outlive the reader's
		}
		line = trimEOL(line)
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		msg, err := rpc.Parse(line)
		if err != nil {
			t.log.Warn("ignoring a line of upstream stdout that is not JSON-RPC", "err", err, "line", truncate(line, 200))
			continue
		}
		if msg.IsResponse() {
			if !t.deliver(msg) {
				t.log.Debug("ignoring a response to no pending request", "id", string(msg.ID))
			}
			continue
		}
		t.onMsg(nil, msg) // stdio relates nothing on the wire
	}
}

func (t *stdioTransport) readStderr() {
	defer t.readers.Done()
	r := bufio.NewReaderSize(t.stderr, maxStderrLine)
	for {
		line, err := r.ReadSlice('\n')
		if len(line) > 0 {
			line = trimEOL(line)
			if len(line) > 0 {
				t.log.Info("upstream stderr", "line", string(line))
			}
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// shutdown ends the transport once, for the first cause; it does not wait.
func (t *stdioTransport) shutdown(cause error) {
	t.once.Do(func() {
		t.cause = cause
		go t.cleanup()
	})
}

// close stops the process and waits until it is reaped.
func (t *stdioTransport) close() {
	t.shutdown(errClosed)
	<-t.fin
}

// cleanup stops the process group: stdin closed, then SIGTERM, then SIGKILL;
// it always reaps the process and ends the readers. (On Windows: stdin
// closed, then the process is terminated; see stdio_windows.go.)
func (t *stdioTransport) cleanup() {
	_ = t.stdin.Close()
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-t.exited:
	case <-timer.C:
		t.log.Debug("upstream process ignored the closed stdin; sending SIGTERM")
		terminateGroup(t.cmd.Process)
		timer.Reset(stopGrace)
		select {
		case <-t.exited:
		case <-timer.C:
			t.log.Warn("upstream process ignored SIGTERM; killing its process group")
		}
	}
	// Kill whatever is left of the group (children of the server, or the
	// server itself when it ignored SIGTERM); ESRCH when nothing is.
	killGroup(t.cmd.Process)
	<-t.exited
	_ = t.stdout.Close()
	_ = t.stderr.Close()
	t.readers.Wait()
	close(t.fin)
}
