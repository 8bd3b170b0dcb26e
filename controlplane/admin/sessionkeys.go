package admin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store"
)

// Session keys seal the session ids data planes hand to clients, so that any
// data plane can open a session another one created. They live in one store
// record (KindSessionKeys "default": a SessionKeys message whose keys are
// sealed at rest like server secrets) and go out in every snapshot.
//
// The record is created inside the first write that changes the config, so
// that it shares that write's revision (a fresh control plane stays at
// revision 0, and a config with no endpoint needs no key), or by
// EnsureSessionKeys at start when a config from an older version has none.
// Both run under the store's write lock and create it only when it is still
// missing: control-plane replicas agree on one key.

// sessionKeysName is the name of the one KindSessionKeys record.
const sessionKeysName = "default"

// sessionKeySize is the length of a session key (AES-256).
const sessionKeySize = 32

func sessionKeyAAD(field string) []byte {
	return []byte(string(store.KindSessionKeys) + "/" + sessionKeysName + "/" + field)
}

// newSessionKey returns a random 256-bit key.
func newSessionKey() ([]byte, error) {
	k := make([]byte, sessionKeySize)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate a session key: %w", err)
	}
	return k, nil
}

// readSessionKeys returns the clear session keys, or nil when there is no record.
func readSessionKeys(ctx context.Context, tx store.ReadTx, sealer *secret.Sealer) (*metamcpv1.SessionKeys, error) {
	rec, err := tx.Get(ctx, store.KindSessionKeys, sessionKeysName)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read session keys: %w", err)
	}
	var sealed metamcpv1.SessionKeys
	if err := proto.Unmarshal(rec.Data, &sealed); err != nil {
		return nil, fmt.Errorf("decode session keys record: %w", err)
	}
	out := &metamcpv1.SessionKeys{}
	if out.Current, err = sealer.Open(sealed.GetCurrent(), sessionKeyAAD("current")); err != nil {
		return nil, fmt.Errorf("session keys current: %w", err)
	}
	if len(sealed.GetPrevious()) > 0 {
		if out.Previous, err = sealer.Open(sealed.GetPrevious(), sessionKeyAAD("previous")); err != nil {
			return nil, fmt.Errorf("session keys previous: %w", err)
		}
	}
	return out, nil
}

// writeSessionKeys stores clear keys, sealed.
func writeSessionKeys(ctx context.Context, tx store.Tx, sealer *secret.Sealer, keys *metamcpv1.SessionKeys) error {
	sealed := &metamcpv1.SessionKeys{}
	var err error
	if sealed.Current, err = sealer.Seal(keys.GetCurrent(), sessionKeyAAD("current")); err != nil {
		return fmt.Errorf("seal session key: %w", err)
	}
	if len(keys.GetPrevious()) > 0 {
		if sealed.Previous, err = sealer.Seal(keys.GetPrevious(), sessionKeyAAD("previous")); err != nil {
			return fmt.Errorf("seal previous session key: %w", err)
		}
	}
	data, err := proto.MarshalOptions{Deterministic: true}.Marshal(sealed)
	if err != nil {
		return fmt.Errorf("encode session keys: %w", err)
	}
	if err := tx.Put(ctx, store.Record{Kind: store.KindSessionKeys, Name: sessionKeysName, Data: data}); err != nil {
		return fmt.Errorf("write session keys: %w", err)
	}
	return nil
}

// ensureSessionKeysTx creates the session keys record in tx when there is none.
func ensureSessionKeysTx(ctx context.Context, tx store.Tx, sealer *secret.Sealer) (created bool, err error) {
	keys, err := readSessionKeys(ctx, tx, sealer)
	if err != nil || keys != nil {
		return false, err
	}
	k, err := newSessionKey()
	if err != nil {
		return false, err
	}
	return true, writeSessionKeys(ctx, tx, sealer, &metamcpv1.SessionKeys{Current: k})
}

// EnsureSessionKeys creates the session-sealing key when the store has a
// config but no key (a store written by an older version). A fresh store is
// left alone: its first config write creates the key in the same revision.
// It returns the revision that created it, or 0 when nothing was written.
func (s *Service) EnsureSessionKeys(ctx context.Context) (int64, error) {
	rev, changed, err := s.st.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		if tx.Revision() <= 1 {
			return nil // nothing committed yet (Revision is current + 1 here)
		}
		_, err := ensureSessionKeysTx(ctx, tx, s.sealer)
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("ensure session keys: %w", err)
	}
	if !changed {
		return 0, nil
	}
	s.log.InfoContext(ctx, "created the session-sealing key", "revision", rev)
	return rev, nil
}

// RotateSessionKey makes a new random session key current and keeps the
// current one as previous; the key before that stops opening sessions.
func (s *Service) RotateSessionKey(ctx context.Context, _ *metamcpv1.RotateSessionKeyRequest) (*metamcpv1.RotateSessionKeyResponse, error) {
	rev, _, err := s.st.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		old, err := readSessionKeys(ctx, tx, s.sealer)
		if err != nil {
			return err
		}
		k, err := newSessionKey()
		if err != nil {
			return err
		}
		return writeSessionKeys(ctx, tx, s.sealer, &metamcpv1.SessionKeys{Current: k, Previous: old.GetCurrent()})
	})
	if err != nil {
		return nil, s.rpcError(ctx, "rotate session key", err)
	}
	s.log.InfoContext(ctx, "session key rotated", "revision", rev, "principal", principal(ctx))
	return &metamcpv1.RotateSessionKeyResponse{Revision: rev}, nil
}
