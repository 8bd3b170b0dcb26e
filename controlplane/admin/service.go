// Package admin implements AdminService, the control plane's config API: it
// validates every change against the whole would-be config, seals secret
// values before they reach the store, and commits each change as one store
// transaction (one revision). It also builds the full config, secrets
// decrypted, that the sync service sends to data planes.
//
// Resources are stored as deterministic proto wire bytes with output-only
// fields cleared and secrets sealed; revision and times come from the store
// record on read.
package admin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
	"github.com/metamcp/metamcp/controlplane/auth"
	"github.com/metamcp/metamcp/controlplane/secret"
	"github.com/metamcp/metamcp/controlplane/store"
	"github.com/metamcp/metamcp/pkg/snapshot"
)

// WarningHeader is the response metadata key carrying the warnings of a
// successful write, one value per warning.
const WarningHeader = "x-metamcp-warning"

// Service implements metamcpv1.AdminServiceServer on a store.
type Service struct {
	metamcpv1.UnimplementedAdminServiceServer

	st     store.Store
	sealer *secret.Sealer
	log    *slog.Logger
	now    func() time.Time
	// listed gives the tool lists data planes reported, for CanI; nil
	// until SetListedTools.
	listedMu sync.Mutex
	listed   ListedTools
	calls    callNotifier
	// rateLimits reaches the data planes' rate-limit buckets (ratelimit.go).
	rateLimits RateLimits
}

// New returns a Service keeping config in st and sealing secrets with sealer.
func New(st store.Store, sealer *secret.Sealer, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{st: st, sealer: sealer, log: logger, now: time.Now}
}

// errDryRun rolls back a dry run's transaction after everything was checked.
var errDryRun = errors.New("dry run: roll back")

// writeResult is what a write did.
type writeResult struct {
	// rev is the committed revision, or the current one when nothing changed
	// or on a dry run.
	rev      int64
	changed  bool
	warnings []string
	// readBack holds the records named by the write's readBack list, as they
	// are after the write.
	readBack map[ref]store.Record
}

// ref names a record.
type ref struct {
	kind store.Kind
	name string
}

// writeOptions tune one write.
type writeOptions struct {
	dryRun bool
	// kinds to load; all config kinds and API keys when nil.
	kinds []store.Kind
	// validate runs snapshot.Validate on the would-be config. Its warnings
	// about the resources the write put are returned.
	validate bool
}

// write runs mutate on the current config inside one store transaction, then
// validates the whole would-be config and commits what changed. Nothing is
// written when nothing changed. readBack is filled in by mutate with the
// records to return.
func (s *Service) write(ctx context.Context, opts writeOptions, mutate func(ctx context.Context, c *config, tx store.ReadTx) ([]ref, error)) (*writeResult, error) {
	kinds := opts.kinds
	if kinds == nil {
		kinds = append(append([]store.Kind(nil), configKinds...), store.KindApiKey)
	}
	var res writeResult
	rev, changed, err := s.st.Update(ctx, func(ctx context.Context, tx store.Tx) error {
		res = writeResult{rev: tx.Revision() - 1} // the store may run fn again
		c, err := loadConfig(ctx, tx, s.sealer, kinds...)
		if err != nil {
			return err
		}
		refs, err := mutate(ctx, c, tx)
		if err != nil {
			return err
		}
		if opts.validate {
			warnings, err := snapshot.Validate(c.snapshotConfig(false))
			if err != nil {
				return err
			}
			res.warnings = c.warningsAbout(warnings)
		}
		if opts.dryRun {
			return errDryRun
		}
		if err := c.commit(ctx, tx, s.sealer); err != nil {
			return err
		}
		if c.writes() {
			// The first config write creates the session key in its own
			// revision (see sessionkeys.go).
			if _, err := ensureSessionKeysTx(ctx, tx, s.sealer); err != nil {
				return err
			}
		}
		res.readBack = make(map[ref]store.Record, len(refs))
		for _, r := range refs {
			rec, err := tx.Get(ctx, r.kind, r.name)
			if err != nil {
				return fmt.Errorf("read back %s %q: %w", r.kind, r.name, err)
			}
			res.readBack[r] = rec
		}
		return nil
	})
	switch {
	case errors.Is(err, errDryRun):
		return &res, nil
	case err != nil:
		return nil, err
	}
	if changed {
		res.rev, res.changed = rev, true
		for r, rec := range res.readBack {
			rec.Revision = rev
			res.readBack[r] = rec
		}
	}
	return &res, nil
}

// committed logs a committed write and sends its warnings as response
// metadata (not for Apply, whose response lists them).
func (s *Service) committed(ctx context.Context, op string, res *writeResult) {
	s.logWrite(ctx, op, res)
	sendWarnings(ctx, res.warnings)
}

func (s *Service) logWrite(ctx context.Context, op string, res *writeResult) {
	if res.changed {
		s.log.InfoContext(ctx, "config changed", "op", op, "revision", res.rev, "principal", principal(ctx))
	}
	for _, w := range res.warnings {
		s.log.InfoContext(ctx, "config warning", "op", op, "warning", w)
	}
}

// sendWarnings attaches warnings to the response header (one value each).
func sendWarnings(ctx context.Context, warnings []string) {
	if len(warnings) == 0 {
		return
	}
	vals := make([]string, len(warnings))
	for i, w := range warnings {
		vals[i] = headerSafe(w)
	}
	// Fails only outside a gRPC call (direct use in tests): nothing to send to.
	_ = grpc.SetHeader(ctx, metadata.MD{WarningHeader: vals})
}

// headerSafe escapes what may not appear in a metadata value (anything but
// printable ASCII).
func headerSafe(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		} else {
			fmt.Fprintf(&b, "\\u%04x", r)
		}
	}
	return b.String()
}

func principal(ctx context.Context) string {
	if p, ok := auth.FromContext(ctx); ok {
		return p.Name
	}
	return ""
}

// rpcError turns an error into the status a client gets. Statuses made by
// this package pass through; validation errors become InvalidArgument with a
// BadRequest detail; anything else is logged and returned as Internal (or
// Unavailable for a closed store) with its message, which names what failed
// and never holds a secret.
func (s *Service) rpcError(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var verr *snapshot.Error
	switch {
	case errors.As(err, &verr):
		return invalidStatus(verr)
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return err
	}
	s.log.ErrorContext(ctx, "admin call failed", "op", op, "err", err)
	if errors.Is(err, store.ErrClosed) {
		return status.Errorf(codes.Unavailable, "%s: the control plane is shutting down; retry", op)
	}
	return status.Errorf(codes.Internal, "%s: %v", op, err)
}

// invalidStatus is InvalidArgument listing every violation, with a
// google.rpc.BadRequest detail whose fields look like "Server/github: stdio.command".
func invalidStatus(e *snapshot.Error) error {
	st := status.New(codes.InvalidArgument, e.Error())
	br := &errdetails.BadRequest{}
	for _, v := range e.Violations {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       violationField(v),
			Description: v.Description,
		})
	}
	if withDetails, err := st.WithDetails(br); err == nil {
		st = withDetails
	}
	return st.Err()
}

func violationField(v snapshot.Violation) string {
	res := v.Kind
	if v.Name != "" {
		res += "/" + v.Name
	}
	if v.Field != "" {
		res += ": " + v.Field
	}
	return res
}

// invalid returns a validation error of one violation.
func invalid(kind store.Kind, name, field, format string, args ...any) error {
	return &snapshot.Error{Violations: []snapshot.Violation{{
		Kind: string(kind), Name: name, Field: field, Description: fmt.Sprintf(format, args...),
	}}}
}

// checkName fails with InvalidArgument when name is not a valid resource name.
func checkName(kind store.Kind, name string) error {
	if err := snapshot.ValidateName(name); err != nil {
		return invalid(kind, name, "name", "%v", err)
	}
	return nil
}

func notFound(kind store.Kind, name string) error {
	return status.Errorf(codes.NotFound, "%s %q not found", kind, name)
}

func alreadyExists(kind store.Kind, name string) error {
	return status.Errorf(codes.AlreadyExists, "%s %q already exists: update it instead, or pick another name", kind, name)
}

// stillReferenced is FailedPrecondition naming the resources that still refer
// to the one being deleted, with a google.rpc.PreconditionFailure detail.
func stillReferenced(kind store.Kind, name string, referrers []string) error {
	st := status.New(codes.FailedPrecondition, fmt.Sprintf("cannot delete %s %q: still used by %s; remove those references first",
		kind, name, strings.Join(referrers, ", ")))
	pf := &errdetails.PreconditionFailure{}
	for _, r := range referrers {
		pf.Violations = append(pf.Violations, &errdetails.PreconditionFailure_Violation{
			Type:        "REFERENCED",
			Subject:     fmt.Sprintf("%s/%s", kind, name),
			Description: "used by " + r,
		})
	}
	if withDetails, err := st.WithDetails(pf); err == nil {
		st = withDetails
	}
	return st.Err()
}

// GetRevision returns the current config revision.
func (s *Service) GetRevision(ctx context.Context, _ *metamcpv1.GetRevisionRequest) (*metamcpv1.GetRevisionResponse, error) {
	rev, err := s.st.Revision(ctx)
	if err != nil {
		return nil, s.rpcError(ctx, "get revision", err)
	}
	return &metamcpv1.GetRevisionResponse{Revision: rev}, nil
}

// ListDataPlanes returns the data planes recorded by the sync service, the
// current revision and the store's id.
func (s *Service) ListDataPlanes(ctx context.Context, _ *metamcpv1.ListDataPlanesRequest) (*metamcpv1.ListDataPlanesResponse, error) {
	dps, err := s.st.ListDataPlanes(ctx)
	if err != nil {
		return nil, s.rpcError(ctx, "list data planes", err)
	}
	rev, err := s.st.Revision(ctx)
	if err != nil {
		return nil, s.rpcError(ctx, "list data planes", err)
	}
	// A control plane that died (or lost its database) could not record its
	// streams' end: a record nobody refreshed lately is not connected, even
	// if it says so. Open streams refresh theirs with every status report.
	now := s.now()
	for _, dp := range dps {
		if dp.GetConnected() && dp.GetLastSeen() != nil && now.Sub(dp.GetLastSeen().AsTime()) > DataPlaneSilentAfter {
			dp.Connected = false
		}
	}
	id, err := s.st.ID(ctx)
	if err != nil {
		return nil, s.rpcError(ctx, "list data planes", err)
	}
	return &metamcpv1.ListDataPlanesResponse{DataPlanes: dps, Revision: rev, StoreId: id}, nil
}

// DataPlaneSilentAfter is how long a data plane may go unheard (its status
// comes every few seconds) before ListDataPlanes reports it disconnected.
const DataPlaneSilentAfter = 30 * time.Second

// BuildConfig returns the whole config a data plane serves, read in one
// transaction, with secrets decrypted, output-only fields filled, the API
// keys that are not revoked (as hashes) and the session keys (none before the
// first config write). It returns the revision it read.
func (s *Service) BuildConfig(ctx context.Context) (*metamcpv1.Config, int64, error) {
	var (
		cfg *metamcpv1.Config
		rev int64
	)
	err := s.st.View(ctx, func(ctx context.Context, tx store.ReadTx) error {
		kinds := append(append([]store.Kind(nil), configKinds...), store.KindApiKey)
		c, err := loadConfig(ctx, tx, s.sealer, kinds...)
		if err != nil {
			return err
		}
		cfg, rev = c.snapshotConfig(true), tx.Revision()
		if cfg.SessionKeys, err = readSessionKeys(ctx, tx, s.sealer); err != nil {
			return err
		}
		cfg.ServerRestarts, err = readServerRestarts(ctx, tx, cfg.GetServers())
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("build config: %w", err)
	}
	return cfg, rev, nil
}
