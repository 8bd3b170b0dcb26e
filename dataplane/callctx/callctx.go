// Package callctx is the context of one request on the data plane's hot
// path: cancelable, with an optional deadline, for one allocation.
//
// context.WithCancel, WithTimeout and AfterFunc cost a proxied call about
// thirteen allocations (the contexts, a timer, the parents' children maps,
// Done channels, closures) and a timer started and stopped per call. A Ctx
// makes its Done channel and deadline timer only when something waits on
// Done: code that bounds its I/O by Deadline and learns of cancellation
// through OnCancel (the upstream HTTP/1 client) needs neither. Err reports
// the deadline once it has passed, whether or not a timer runs.
//
// A Ctx is a context.Context: children made with the context package work
// as with any parent, through its AfterFunc method.
package callctx

import (
	"context"
	"sync"
	"time"
)

// Ctx is a cancelable context with an optional deadline. Make one with
// WithCancel, WithTimeout or WithDeadline; release it with Cancel.
type Ctx struct {
	parent   context.Context
	deadline time.Time
	hasDL    bool

	mu    sync.Mutex
	err   error
	done  chan struct{} // made by the first Done; closed by cancel
	timer *time.Timer   // the deadline's, started by Done or AfterFunc
	seq   uint64        // numbers registrations, for their stop funcs
	regs  []reg         // called on cancel; regs0 holds the first few
	regs0 [2]reg

	up   *Ctx        // the parent, when it is a *Ctx
	upID uint64      // this context's registration with up
	stop func() bool // the registration with any other cancelable parent
}

// reg is one registration: a func run on its own goroutine, or a child Ctx
// cancelled in line (as the context package does for its own children).
type reg struct {
	id    uint64
	f     func()
	child *Ctx
}

// WithCancel returns a context cancelled by Cancel or with its parent.
func WithCancel(parent context.Context) *Ctx {
	return newCtx(parent, time.Time{}, false)
}

// WithTimeout returns a context that is also done d from now.
func WithTimeout(parent context.Context, d time.Duration) *Ctx {
	return newCtx(parent, time.Now().Add(d), true)
}

// WithDeadline returns a context that is also done at t.
func WithDeadline(parent context.Context, t time.Time) *Ctx {
	return newCtx(parent, t, true)
}

func newCtx(parent context.Context, dl time.Time, hasDL bool) *Ctx {
	c := &Ctx{parent: parent, deadline: dl, hasDL: hasDL}
	c.regs = c.regs0[:0]
	if pd, ok := parent.Deadline(); ok && (!hasDL || pd.Before(dl)) {
		c.deadline, c.hasDL = pd, true
	}
	p, done := ctxOf(parent)
	if p == nil && done == nil {
		return c // never cancelled (Background, TODO, WithoutCancel)
	}
	if p == nil {
		if err := parent.Err(); err != nil {
			c.err = err
			return c
		}
	}
	if p != nil {
		id, ok := p.register(reg{child: c})
		c.mu.Lock()
		defer c.mu.Unlock()
		switch {
		case !ok:
			c.err = p.Err()
		case c.err == nil: // else p was cancelled meanwhile, and dropped id
			c.up, c.upID = p, id
		}
		return c
	}
	stop := context.AfterFunc(parent, func() { c.cancel(parent.Err()) })
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err == nil { // else the parent was cancelled meanwhile
		c.stop = stop
	}
	return c
}

// ctxOf finds the Ctx that ends ctx: ctx itself, or a Ctx under contexts
// that only add values to it (the gateway's caller context,
// context.WithValue), which end when it does. The same Done channel shows
// that nothing between cancels on its own. Otherwise p is nil and done is
// ctx.Done().
func ctxOf(ctx context.Context) (p *Ctx, done <-chan struct{}) {
	switch c := ctx.(type) {
	case *Ctx:
		return c, nil
	case Wrapper:
		if p := c.CallCtx(); p != nil {
			return p, nil
		}
	}
	done = ctx.Done()
	if done == nil {
		return nil, nil
	}
	if a, ok := ctx.Value(selfKey{}).(*Ctx); ok && a.Done() == done {
		return a, done
	}
	return nil, done
}

// A Wrapper is a context that only adds values to a Ctx, and so ends when it
// does: CallCtx returns that Ctx (nil when it wraps another kind of
// context). Children made under a Wrapper register with the Ctx directly,
// without the Done channel that finding it otherwise costs.
type Wrapper interface {
	context.Context
	CallCtx() *Ctx
}

// AfterFunc is context.AfterFunc, for less when ctx ends with a Ctx: the
// func is registered with it, with no context of its own.
func AfterFunc(ctx context.Context, f func()) (stop func() bool) {
	if p, _ := ctxOf(ctx); p != nil {
		return p.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}

// register adds r, unless c is already done (false).
func (c *Ctx) register(r reg) (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return 0, false
	}
	c.seq++
	r.id = c.seq
	c.regs = append(c.regs, r)
	return r.id, true
}

// unregister removes registration id; false when it is no longer there
// (c was cancelled and ran it, or it was removed before).
func (c *Ctx) unregister(id uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range c.regs {
		if r.id == id {
			last := len(c.regs) - 1
			c.regs[i] = c.regs[last]
			c.regs[last] = reg{}
			c.regs = c.regs[:last]
			return true
		}
	}
	return false
}

// Cancel cancels the context (context.Canceled) and releases what it
// holds; calls after the first do nothing.
func (c *Ctx) Cancel() { c.cancel(context.Canceled) }

func (c *Ctx) cancel(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	if c.done != nil {
		close(c.done)
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	regs := c.regs
	c.regs = nil // registrations from now on find c done
	up, upID, stop := c.up, c.upID, c.stop
	c.mu.Unlock()

	if up != nil {
		up.unregister(upID)
	}
	if stop != nil {
		stop()
	}
	for _, r := range regs {
		if r.child != nil {
			r.child.cancel(err)
		} else {
			go r.f()
		}
	}
}

// expired cancels c when its deadline has passed; true if c is done.
func (c *Ctx) expired() bool {
	if !c.hasDL || time.Now().Before(c.deadline) {
		return false
	}
	c.cancel(context.DeadlineExceeded)
	return true
}

// startTimer makes sure the deadline, if any, cancels c when it comes even
// if no one asks Err. c.mu is held.
func (c *Ctx) startTimer() {
	if c.hasDL && c.timer == nil && c.err == nil {
		c.timer = time.AfterFunc(time.Until(c.deadline), func() { c.cancel(context.DeadlineExceeded) })
	}
}

// Deadline is the earlier of the context's deadline and its parent's.
func (c *Ctx) Deadline() (time.Time, bool) { return c.deadline, c.hasDL }

// Done returns a channel closed when the context is done. The first call
// makes it, and starts the deadline's timer.
func (c *Ctx) Done() <-chan struct{} {
	c.expired()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
		c.startTimer()
	}
	return c.done
}

// Err is nil until the context is done, then context.Canceled or
// context.DeadlineExceeded (or the parent's error, when the parent ended it).
func (c *Ctx) Err() error {
	c.mu.Lock()
	err := c.err
	c.mu.Unlock()
	if err == nil && c.expired() {
		c.mu.Lock()
		err = c.err
		c.mu.Unlock()
	}
	return err
}

// selfKey is the key under which a Ctx gives itself, to children made
// under contexts that wrap it.
type selfKey struct{}

// Value is the parent's value for key.
func (c *Ctx) Value(key any) any {
	if _, ok := key.(selfKey); ok {
		return c
	}
	return c.parent.Value(key)
}

// AfterFunc runs f on its own goroutine once the context is done,
// including by its deadline (it starts the deadline's timer), as
// context.AfterFunc does; the context package uses it for children of a Ctx.
func (c *Ctx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	c.startTimer()
	c.mu.Unlock()
	return c.OnCancel(f)
}

// OnCancel runs f on its own goroutine once the context is cancelled: by
// Cancel, by its parent, or by a deadline that Err or Done has found
// passed. Unlike AfterFunc it starts no timer for the deadline, so it is
// for callers that bound their own waits by Deadline. stop unregisters f,
// and reports whether that kept it from running.
func (c *Ctx) OnCancel(f func()) (stop func() bool) {
	id, ok := c.register(reg{f: f})
	if !ok {
		go f()
		return stopNothing
	}
	return func() bool { return c.unregister(id) }
}

func stopNothing() bool { return false }

// String names the context for debugging, as the context package's do.
func (c *Ctx) String() string {
	if c.hasDL {
		return "callctx.WithDeadline(" + c.deadline.String() + ")"
	}
	return "callctx.WithCancel"
}
