package admin

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/store"
)

// A restart of a server (mmctl restart server) is a write that bumps the
// server's restart generation to the write's own revision. The generations
// live in one record (KindServerRestarts "default"), apart from the Server,
// so that a restart is no edit of the server's definition (apply and export
// never see it), and go out in every snapshot: a data plane whose generation
// of a server changes closes its sessions with it and opens new ones.

const serverRestartsName = "default"

// readServerRestarts returns the generations of the servers in servers (a
// restarted server since deleted is left out), or nil when none was ever
// restarted.
func readServerRestarts(ctx context.Context, tx store.ReadTx, servers []*metamcpv1.Server) (map[string]int64, error) {
	all, err := loadServerRestarts(ctx, tx)
	if err != nil || len(all.GetGenerations()) == 0 {
		return nil, err
	}
	var out map[string]int64
	for _, srv := range servers {
		if gen, ok := all.GetGenerations()[srv.GetName()]; ok {
			if out == nil {
				out = make(map[string]int64)
			}
			out[srv.GetName()] = gen
		}
	}
	return out, nil
}

func loadServerRestarts(ctx context.Context, tx store.ReadTx) (*metamcpv1.ServerRestarts, error) {
	rec, err := tx.Get(ctx, store.KindServerRestarts, serverRestartsName)
	if errors.Is(err, store.ErrNotFound) {
		return &metamcpv1.ServerRestarts{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read server restarts: %w", err)
	}
	var out metamcpv1.ServerRestarts
	if err := proto.Unmarshal(rec.Data, &out); err != nil {
		return nil, fmt.Errorf("decode server restarts record: %w", err)
	}
	return &out, nil
}

// RestartServer makes every data plane reconnect its sessions with a server.
func (s *Service) RestartServer(ctx context.Context, req *metamcpv1.RestartServerRequest) (*metamcpv1.RestartServerResponse, error) {
	const op = "restart Server"
	name := req.GetName()
	if err := checkName(store.KindServer, name); err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	rev, _, err := s.st.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		if _, err := tx.Get(ctx, store.KindServer, name); errors.Is(err, store.ErrNotFound) {
			return notFound(store.KindServer, name)
		} else if err != nil {
			return err
		}
		all, err := loadServerRestarts(ctx, tx)
		if err != nil {
			return err
		}
		if all.Generations == nil {
			all.Generations = make(map[string]int64)
		}
		all.Generations[name] = tx.Revision()
		data, err := proto.MarshalOptions{Deterministic: true}.Marshal(all)
		if err != nil {
			return fmt.Errorf("encode server restarts: %w", err)
		}
		return tx.Put(ctx, store.Record{Kind: store.KindServerRestarts, Name: serverRestartsName, Data: data})
	})
	if err != nil {
		return nil, s.rpcError(ctx, op, err)
	}
	s.log.InfoContext(ctx, "server restart requested", "server", name, "revision", rev, "principal", principal(ctx))
	return &metamcpv1.RestartServerResponse{Revision: rev}, nil
}
