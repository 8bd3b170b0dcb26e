package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/metamcp/metamcp/dataplane/rpc"
	"github.com/metamcp/metamcp/dataplane/upstream"
)

// memUpstreams implements Upstreams over real go-sdk MCP servers connected
// through in-memory transports. Each server gets one shared session, opened
// on first use with a raw JSON-RPC client (so results stay raw bytes, as
// with the real pool).
type memUpstreams struct {
	servers map[string]*mcp.Server
	down    map[string]error // servers that cannot be reached

	mu       sync.Mutex
	sessions map[string]*rawSession
	closed   []string // CloseClient calls
}

func newMemUpstreams(t testing.TB, servers map[string]*mcp.Server) *memUpstreams {
	u := &memUpstreams{servers: servers, down: map[string]error{}, sessions: map[string]*rawSession{}}
	t.Cleanup(u.close)
	return u
}

func (u *memUpstreams) Session(ctx context.Context, server, clientID string) (upstream.Session, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if err := u.down[server]; err != nil {
		return nil, &upstream.Error{Server: server, Err: err}
	}
	if s := u.sessions[server]; s != nil {
		return s, nil
	}
	srv := u.servers[server]
	if srv == nil {
		return nil, &upstream.Error{Server: server, Err: errors.New("no such server")}
	}
	s, err := dialRaw(ctx, server, srv)
	if err != nil {
		return nil, &upstream.Error{Server: server, Err: err}
	}
	u.sessions[server] = s
	return s, nil
}

func (u *memUpstreams) CloseClient(clientID string) {
	u.mu.Lock()
	u.closed = append(u.closed, clientID)
	u.mu.Unlock()
}

func (u *memUpstreams) closedClients() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.closed...)
}

func (u *memUpstreams) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, s := range u.sessions {
		s.close()
	}
	u.sessions = map[string]*rawSession{}
}

// rawSession is a minimal JSON-RPC client over an mcp.Connection.
type rawSession struct {
	server string
	conn   mcp.Connection
	ss     *mcp.ServerSession
	info   *upstream.Info
	nextID atomic.Int64
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	pending map[string]chan *jsonrpc.Response
	err     error
}

func dialRaw(ctx context.Context, name string, srv *mcp.Server) (*rawSession, error) {
	t1, t2 := mcp.NewInMemoryTransports()
	ss, err := srv.Connect(context.Background(), t1, nil)
	if err != nil {
		return nil, err
	}
	conn, err := t2.Connect(context.Background())
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	s := &rawSession{server: name, conn: conn, ss: ss, ctx: rctx, cancel: cancel, done: make(chan struct{}), pending: map[string]chan *jsonrpc.Response{}}
	go s.readLoop()
	res, err := s.Call(ctx, "initialize", json.RawMessage(`{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"gateway-test","version":"0"}}`))
	if err != nil {
		s.close()
		return nil, fmt.Errorf("initialize: %w", err)
	}
	var ir struct {
		ProtocolVersion string          `json:"protocolVersion"`
		Capabilities    json.RawMessage `json:"capabilities"`
		ServerInfo      json.RawMessage `json:"serverInfo"`
		Instructions    string          `json:"instructions"`
	}
	if err := json.Unmarshal(res, &ir); err != nil {
		s.close()
		return nil, err
	}
	s.info = &upstream.Info{ProtocolVersion: ir.ProtocolVersion, Capabilities: ir.Capabilities, ServerInfo: ir.ServerInfo, Instructions: ir.Instructions}
	if err := conn.Write(ctx, &jsonrpc.Request{Method: "notifications/initialized", Params: json.RawMessage(`{}`)}); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *rawSession) readLoop() {
	defer close(s.done)
	for {
		msg, err := s.conn.Read(s.ctx)
		if err != nil {
			s.mu.Lock()
			s.err = fmt.Errorf("connection closed: %w", err)
			for id, ch := range s.pending {
				close(ch)
				delete(s.pending, id)
			}
			s.mu.Unlock()
			return
		}
		resp, ok := msg.(*jsonrpc.Response)
		if !ok {
			continue // server->client requests and notifications are ignored here
		}
		id, _ := resp.ID.Raw().(string)
		s.mu.Lock()
		ch := s.pending[id]
		delete(s.pending, id)
		s.mu.Unlock()
		if ch != nil {
			ch <- resp
		}
	}
}

func (s *rawSession) Call(ctx context.Context, method string, params json.RawMessage) (json.RawMessage, error) {
	id := strconv.FormatInt(s.nextID.Add(1), 10)
	jid, _ := jsonrpc.MakeID(id)
	ch := make(chan *jsonrpc.Response, 1)
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		return nil, s.err
	}
	s.pending[id] = ch
	s.mu.Unlock()
	if err := s.conn.Write(ctx, &jsonrpc.Request{ID: jid, Method: method, Params: params}); err != nil {
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
		return nil, err
	}
	select {
	case resp, ok := <-ch:
		if !ok {
			return nil, errors.New("connection closed")
		}
		if resp.Error != nil {
			var we *jsonrpc.Error
			if errors.As(resp.Error, &we) {
				return nil, &rpc.Error{Code: we.Code, Message: we.Message, Data: we.Data}
			}
			return nil, resp.Error
		}
		return resp.Result, nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
		_ = s.conn.Write(context.Background(), &jsonrpc.Request{Method: "notifications/cancelled", Params: json.RawMessage(`{"requestId":"` + id + `"}`)})
		return nil, ctx.Err()
	}
}

func (s *rawSession) Info() *upstream.Info { return s.info }

func (s *rawSession) Server() string { return s.server }

func (s *rawSession) Notify(ctx context.Context, method string, params json.RawMessage) error {
	return s.conn.Write(ctx, &jsonrpc.Request{Method: method, Params: params})
}

func (s *rawSession) close() {
	s.cancel()
	_ = s.conn.Close()
	<-s.done
	_ = s.ss.Wait()
}
