package audit

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
)

// The spool keeps batches of call records on disk until the control plane
// has stored them. It is a directory of segment files, each a run of
// entries appended in order; a cursor file says where the first entry not
// yet acknowledged starts. Fully acknowledged segments are deleted. When the
// spool would outgrow its bound, its oldest segments are deleted, acknowledged
// or not, and the records lost are counted.
//
// An entry is a 12-byte header (payload length, CRC-32C of the payload,
// record count; little endian) and the payload (a CallRecordBatch). A torn
// entry at the end of the last segment (the process died while writing) is
// cut off when the spool opens.

const (
	entryHeader = 12
	segPrefix   = "seg-"
	segSuffix   = ".log"
	cursorFile  = "cursor"
	// maxEntry bounds one entry's payload, against a corrupt length.
	maxEntry = 64 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// pos is a place in the spool: a segment and an offset in it.
type pos struct {
	seg uint64
	off int64
}

func (p pos) less(q pos) bool { return p.seg < q.seg || (p.seg == q.seg && p.off < q.off) }

type entry struct {
	off   int64
	size  int64 // header included
	count int
	// data is the payload, kept in memory from append until the entry is
	// read, while the spool's memory cache has room: a sender that keeps
	// up never reads the disk.
	data []byte
}

// maxCached bounds the payloads kept in memory (entry.data).
const maxCached = 8 << 20

type segment struct {
	id      uint64
	size    int64
	entries []entry
	f       *os.File // open for reading (and appending, for the last)
}

func (s *segment) path(dir string) string {
	return filepath.Join(dir, fmt.Sprintf("%s%020d%s", segPrefix, s.id, segSuffix))
}

// spool is safe for concurrent use: one goroutine appends, another reads
// and acknowledges.
type spool struct {
	dir      string
	max      int64
	segLimit int64

	mu      sync.Mutex
	segs    []*segment
	size    int64
	nextID  uint64 // of the next segment
	acked   pos    // first entry not acknowledged
	pending int    // records not acknowledged
	dropped int64  // records deleted unacknowledged (full spool)
	cached  int64  // bytes of entry.data
	closed  bool
	notify  chan struct{} // receives after each append
}

// openSpool opens (creating it) the spool in dir, bounded to limit bytes.
func openSpool(dir string, limit int64) (*spool, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit spool %s: %w", dir, err)
	}
	sp := &spool{dir: dir, max: limit, segLimit: min(4<<20, max(limit/8, 64<<10)), notify: make(chan struct{}, 1)}
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("audit spool %s: %w", dir, err)
	}
	for _, de := range des {
		name := de.Name()
		if !strings.HasPrefix(name, segPrefix) || !strings.HasSuffix(name, segSuffix) {
			continue
		}
		id, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(name, segPrefix), segSuffix), 10, 64)
		if err != nil {
			continue
		}
		sp.segs = append(sp.segs, &segment{id: id})
	}
	sort.Slice(sp.segs, func(i, j int) bool { return sp.segs[i].id < sp.segs[j].id })
	for i, s := range sp.segs {
		if err := sp.load(s, i == len(sp.segs)-1); err != nil {
			sp.closeFiles()
			return nil, err
		}
		sp.size += s.size
	}
	sp.acked = sp.readCursor()
	sp.nextID = sp.acked.seg + 1
	if last := sp.last(); last != nil && last.id >= sp.nextID {
		sp.nextID = last.id + 1
	}
	sp.dropAcked()
	for _, s := range sp.segs {
		for _, e := range s.entries {
			if !(pos{s.id, e.off}).less(sp.acked) {
				sp.pending += e.count
			}
		}
	}
	return sp, nil
}

// load reads a segment's entries; a torn or corrupt tail is cut off.
func (sp *spool) load(s *segment, last bool) error {
	flag := os.O_RDONLY
	if last {
		flag = os.O_RDWR
	}
	f, err := os.OpenFile(s.path(sp.dir), flag, 0o600)
	if err != nil {
		return fmt.Errorf("audit spool: %w", err)
	}
	s.f = f
	var hdr [entryHeader]byte
	var off int64
	for {
		if _, err := f.ReadAt(hdr[:], off); err != nil {
			break
		}
		n := int64(binary.LittleEndian.Uint32(hdr[0:4]))
		if n > maxEntry {
			break
		}
		payload := make([]byte, n)
		if _, err := f.ReadAt(payload, off+entryHeader); err != nil {
			break
		}
		if crc32.Checksum(payload, crcTable) != binary.LittleEndian.Uint32(hdr[4:8]) {
			break
		}
		s.entries = append(s.entries, entry{off: off, size: entryHeader + n, count: int(binary.LittleEndian.Uint32(hdr[8:12]))})
		off += entryHeader + n
	}
	s.size = off
	if fi, err := f.Stat(); err == nil && fi.Size() > off && last {
		if err := f.Truncate(off); err != nil {
			return fmt.Errorf("audit spool: cut a torn entry: %w", err)
		}
	}
	return nil
}

func (sp *spool) readCursor() pos {
	b, err := os.ReadFile(filepath.Join(sp.dir, cursorFile))
	if err != nil || len(b) != 16 {
		return pos{}
	}
	return pos{seg: binary.LittleEndian.Uint64(b[0:8]), off: int64(binary.LittleEndian.Uint64(b[8:16]))}
}

func (sp *spool) writeCursor(p pos) error {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:8], p.seg)
	binary.LittleEndian.PutUint64(b[8:16], uint64(p.off))
	tmp := filepath.Join(sp.dir, cursorFile+".tmp")
	if err := os.WriteFile(tmp, b[:], 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(sp.dir, cursorFile))
}

// dropAcked deletes the segments every entry of which is acknowledged.
// Called with mu held.
func (sp *spool) dropAcked() {
	for len(sp.segs) > 0 {
		s := sp.segs[0]
		end := pos{s.id, s.size}
		if len(sp.segs) == 1 || sp.acked.less(end) {
			// The last segment stays, for appending, until it is full.
			return
		}
		sp.removeFirst()
	}
}

func (sp *spool) removeFirst() {
	s := sp.segs[0]
	for _, e := range s.entries {
		sp.cached -= int64(len(e.data))
	}
	_ = s.f.Close()
	_ = os.Remove(s.path(sp.dir))
	sp.size -= s.size
	sp.segs = sp.segs[1:]
}

// append adds one entry of count records; when the spool would outgrow its
// bound, its oldest segments are deleted first.
func (sp *spool) append(payload []byte, count int) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return errors.New("audit spool closed")
	}
	size := int64(entryHeader + len(payload))
	if size > sp.max {
		sp.dropped += int64(count)
		return fmt.Errorf("a batch of %d bytes does not fit a spool of %d", size, sp.max)
	}
	for sp.size+size > sp.max && len(sp.segs) > 0 {
		sp.dropOldest()
	}
	last := sp.last()
	if last == nil || last.size+size > sp.segLimit && last.size > 0 {
		s := &segment{id: sp.nextID}
		sp.nextID++
		f, err := os.OpenFile(s.path(sp.dir), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			sp.dropped += int64(count)
			return fmt.Errorf("audit spool: %w", err)
		}
		s.f = f
		sp.segs = append(sp.segs, s)
		last = s
		sp.dropAcked()
	}
	var hdr [entryHeader]byte
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(len(payload)))
	binary.LittleEndian.PutUint32(hdr[4:8], crc32.Checksum(payload, crcTable))
	binary.LittleEndian.PutUint32(hdr[8:12], uint32(count))
	// The payload first: a header is never on disk without its payload.
	if _, err := last.f.WriteAt(payload, last.size+entryHeader); err != nil {
		sp.dropped += int64(count)
		return fmt.Errorf("audit spool: %w", err)
	}
	if _, err := last.f.WriteAt(hdr[:], last.size); err != nil {
		sp.dropped += int64(count)
		return fmt.Errorf("audit spool: %w", err)
	}
	e := entry{off: last.size, size: size, count: count}
	if sp.cached+int64(len(payload)) <= maxCached {
		e.data = payload
		sp.cached += int64(len(payload))
	}
	last.entries = append(last.entries, e)
	last.size += size
	sp.size += size
	sp.pending += count
	select {
	case sp.notify <- struct{}{}:
	default:
	}
	return nil
}

// dropOldest deletes the oldest segment, counting its unacknowledged records
// as lost. Called with mu held.
func (sp *spool) dropOldest() {
	s := sp.segs[0]
	lost := 0
	for _, e := range s.entries {
		if !(pos{s.id, e.off}).less(sp.acked) {
			lost += e.count
		}
	}
	sp.dropped += int64(lost)
	sp.pending -= lost
	sp.removeFirst()
	if len(sp.segs) > 0 {
		if first := (pos{sp.segs[0].id, 0}); sp.acked.less(first) {
			sp.acked = first
		}
	} else {
		sp.acked = pos{sp.nextID, 0}
	}
}

func (sp *spool) last() *segment {
	if len(sp.segs) == 0 {
		return nil
	}
	return sp.segs[len(sp.segs)-1]
}

// next returns the first entry at or after p: its payload, its record
// count, where it starts and where the next one starts. ok is false when
// there is none yet.
func (sp *spool) next(p pos) (payload []byte, count int, at, next pos, ok bool, err error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	for _, s := range sp.segs {
		if s.id < p.seg {
			continue
		}
		for i := range s.entries {
			e := &s.entries[i]
			if s.id == p.seg && e.off < p.off {
				continue
			}
			if e.data != nil {
				buf := e.data
				e.data = nil
				sp.cached -= int64(len(buf))
				return buf, e.count, pos{s.id, e.off}, pos{s.id, e.off + e.size}, true, nil
			}
			buf := make([]byte, e.size-entryHeader)
			if _, err := s.f.ReadAt(buf, e.off+entryHeader); err != nil && !errors.Is(err, io.EOF) {
				return nil, 0, pos{}, pos{}, false, fmt.Errorf("audit spool: read: %w", err)
			}
			return buf, e.count, pos{s.id, e.off}, pos{s.id, e.off + e.size}, true, nil
		}
	}
	return nil, 0, pos{}, pos{}, false, nil
}

// ack marks everything before p as stored by the control plane.
func (sp *spool) ack(p pos, count int) error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if !sp.acked.less(p) {
		return nil // dropped meanwhile, or acknowledged already
	}
	sp.acked = p
	sp.pending = max(sp.pending-count, 0)
	sp.dropAcked()
	if sp.closed {
		return nil
	}
	return sp.writeCursor(p)
}

// first is where reading starts: the first entry not acknowledged.
func (sp *spool) first() pos {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.acked
}

// stats returns the records waiting, the bytes on disk and the records lost.
func (sp *spool) stats() (pending int, bytes int64, dropped int64) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	return sp.pending, sp.size, sp.dropped
}

func (sp *spool) closeFiles() {
	for _, s := range sp.segs {
		if s.f != nil {
			_ = s.f.Close()
		}
	}
}

// close writes the cursor and closes the files.
func (sp *spool) close() error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return nil
	}
	sp.closed = true
	err := sp.writeCursor(sp.acked)
	sp.closeFiles()
	if errors.Is(err, fs.ErrNotExist) {
		err = nil
	}
	return err
}
