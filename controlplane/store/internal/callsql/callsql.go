// Package callsql builds the WHERE clauses that select call records, for
// both stores: the same filter means the same rows in Postgres and SQLite.
package callsql

import (
	"strconv"
	"strings"
	"time"

	metamcpv1 "github.com/metamcp/metamcp/api/metamcp/v1"
)

// Dialect is what differs between the stores.
type Dialect struct {
	// Placeholder returns the n-th (from 1) parameter's placeholder.
	Placeholder func(n int) string
	// Time converts a time to the parameter the time column compares with.
	Time func(time.Time) any
	// Glob returns a condition matching column against a glob (`*`, `?`,
	// everything else literal, case-sensitive), with ph the placeholder of
	// the pattern, and the pattern to bind.
	Glob func(column, ph, glob string) (cond string, arg any)
	// Bool converts a bool to the parameter the destructive column compares with.
	Bool func(bool) any
}

// Postgres is the dialect of the Postgres store.
var Postgres = Dialect{
	Placeholder: func(n int) string { return "$" + strconv.Itoa(n) },
	Time:        func(t time.Time) any { return t.UTC() },
	Glob: func(column, ph, glob string) (string, any) {
		return column + " LIKE " + ph + ` ESCAPE '\'`, globToLike(glob)
	},
	Bool: func(b bool) any { return b },
}

// SQLite is the dialect of the SQLite store: times are Unix microseconds,
// booleans integers, and GLOB matches case-sensitively as LIKE does not.
var SQLite = Dialect{
	Placeholder: func(int) string { return "?" },
	Time:        func(t time.Time) any { return t.UnixMicro() },
	Glob: func(column, ph, glob string) (string, any) {
		return column + " GLOB " + ph, globToSQLiteGlob(glob)
	},
	Bool: func(b bool) any {
		if b {
			return 1
		}
		return 0
	},
}

// Builder accumulates conditions and their arguments.
type Builder struct {
	d     Dialect
	conds []string
	Args  []any
}

// New returns a Builder whose placeholders start after args.
func New(d Dialect, args ...any) *Builder {
	return &Builder{d: d, Args: args}
}

// Arg binds v and returns its placeholder.
func (b *Builder) Arg(v any) string {
	b.Args = append(b.Args, v)
	return b.d.Placeholder(len(b.Args))
}

// Add adds a condition.
func (b *Builder) Add(cond string) { b.conds = append(b.conds, cond) }

// Filter adds the conditions of f.
func (b *Builder) Filter(f *metamcpv1.CallRecordFilter) {
	if f == nil {
		return
	}
	eq := func(column, v string) {
		if v != "" {
			b.Add(column + " = " + b.Arg(v))
		}
	}
	eq("endpoint", f.GetEndpoint())
	eq("principal", f.GetPrincipal())
	eq("server", f.GetServer())
	eq("method", f.GetMethod())
	if g := f.GetTarget(); g != "" {
		if !strings.ContainsAny(g, "*?") {
			eq("target", g)
		} else {
			b.Args = append(b.Args, nil)
			cond, arg := b.d.Glob("target", b.d.Placeholder(len(b.Args)), g)
			b.Args[len(b.Args)-1] = arg
			b.Add(cond)
		}
	}
	if os := f.GetOutcomes(); len(os) > 0 {
		ph := make([]string, len(os))
		for i, o := range os {
			ph[i] = b.Arg(int32(o))
		}
		b.Add("outcome IN (" + strings.Join(ph, ", ") + ")")
	}
	if f.Destructive != nil {
		b.Add("destructive = " + b.Arg(b.d.Bool(f.GetDestructive())))
	}
	if s := f.GetSince(); s != nil {
		b.Add("time >= " + b.Arg(b.d.Time(s.AsTime())))
	}
	if u := f.GetUntil(); u != nil {
		b.Add("time < " + b.Arg(b.d.Time(u.AsTime())))
	}
}

// Where returns " WHERE ..." with every condition, or "" when there is none.
func (b *Builder) Where() string {
	if len(b.conds) == 0 {
		return ""
	}
	return " WHERE " + strings.Join(b.conds, " AND ")
}

// globToLike turns a glob into a LIKE pattern escaped with a backslash.
func globToLike(g string) string {
	var sb strings.Builder
	for _, r := range g {
		switch r {
		case '*':
			sb.WriteByte('%')
		case '?':
			sb.WriteByte('_')
		case '%', '_', '\\':
			sb.WriteByte('\\')
			sb.WriteRune(r)
		default:
			sb.WriteRune(r)
		}
	}
	return sb.String()
}

// globToSQLiteGlob keeps `*` and `?` and makes `[` literal.
func globToSQLiteGlob(g string) string {
	return strings.ReplaceAll(g, "[", "[[]")
}
