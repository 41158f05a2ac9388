package queue

// The in-memory index. Per stored item the queue keeps one entry (about 64
// bytes: ID, payload size, attempts, due and enqueue times, state, heap
// position) referenced from the ID-ordered deque and from at most one of the
// ready heap, the delayed heap and the in-flight map. Payloads stay in pebble
// and are read when an item is handed out by Next.

// state is where an entry is in its life.
type state uint8

const (
	stReady    state = iota // due, waiting in the ready heap
	stDelayed               // waiting in the delayed heap until notBefore
	stInflight              // handed out by Next, not yet acknowledged
	stDropping              // chosen as an overflow victim; its delete is being committed
	stDead                  // gone; only the deque may still point at it
)

type entry struct {
	id        uint64
	enqueued  int64 // unix nanoseconds
	notBefore int64 // unix nanoseconds; 0 = due at once
	size      int32 // payload bytes
	attempts  int32 // failed deliveries so far
	heapIdx   int32 // position in the ready or delayed heap
	state     state
	hasMeta   bool // a meta record (attempts, notBefore) is stored
}

// deque holds every live entry in ID order (IDs only grow, so appending keeps
// it sorted). Removed entries are marked dead and trimmed from the front, or
// compacted away once they outnumber the live ones.
type deque struct {
	buf  []*entry
	head int
	dead int // dead entries in buf[head:]
}

func (d *deque) push(e *entry) { d.buf = append(d.buf, e) }

// died records that one entry in the deque became dead.
func (d *deque) died() {
	d.dead++
	d.trim()
	if live := len(d.buf) - d.head - d.dead; d.dead > 1024 && d.dead > live {
		d.compact()
	}
}

// trim drops dead entries from the front.
func (d *deque) trim() {
	for d.head < len(d.buf) && d.buf[d.head].state == stDead {
		d.buf[d.head] = nil
		d.head++
		d.dead--
	}
	if d.head == len(d.buf) {
		d.buf = d.buf[:0]
		d.head = 0
	} else if d.head > 1024 && d.head > len(d.buf)/2 {
		n := copy(d.buf, d.buf[d.head:])
		clear(d.buf[n:])
		d.buf = d.buf[:n]
		d.head = 0
	}
}

// compact removes every dead entry.
func (d *deque) compact() {
	out := make([]*entry, 0, len(d.buf)-d.head-d.dead)
	for _, e := range d.buf[d.head:] {
		if e.state != stDead {
			out = append(out, e)
		}
	}
	d.buf, d.head, d.dead = out, 0, 0
}

// find returns the oldest entry that ok accepts.
func (d *deque) find(ok func(*entry) bool) *entry {
	for _, e := range d.buf[d.head:] {
		if ok(e) {
			return e
		}
	}
	return nil
}

// heapq is a binary min-heap of entries; less orders it. Entries record their
// position so they can be removed from the middle.
type heapq struct {
	es   []*entry
	less func(a, b *entry) bool
}

func byID(a, b *entry) bool { return a.id < b.id }

func byDue(a, b *entry) bool {
	if a.notBefore != b.notBefore {
		return a.notBefore < b.notBefore
	}
	return a.id < b.id
}

func (h *heapq) len() int { return len(h.es) }

func (h *heapq) min() *entry { return h.es[0] }

func (h *heapq) push(e *entry) {
	e.heapIdx = int32(len(h.es))
	h.es = append(h.es, e)
	h.up(len(h.es) - 1)
}

func (h *heapq) pop() *entry {
	e := h.es[0]
	h.remove(e)
	return e
}

func (h *heapq) remove(e *entry) {
	i := int(e.heapIdx)
	last := len(h.es) - 1
	if i != last {
		h.swap(i, last)
	}
	h.es[last] = nil
	h.es = h.es[:last]
	if i != last {
		if !h.down(i) {
			h.up(i)
		}
	}
	e.heapIdx = -1
	if cap(h.es) > 1024 && len(h.es) < cap(h.es)/4 {
		h.es = append([]*entry(nil), h.es...)
	}
}

func (h *heapq) swap(i, j int) {
	h.es[i], h.es[j] = h.es[j], h.es[i]
	h.es[i].heapIdx = int32(i)
	h.es[j].heapIdx = int32(j)
}

func (h *heapq) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(h.es[j], h.es[i]) {
			break
		}
		h.swap(i, j)
		j = i
	}
}

func (h *heapq) down(i0 int) bool {
	i, n := i0, len(h.es)
	for {
		l := 2*i + 1
		if l >= n {
			break
		}
		j := l
		if r := l + 1; r < n && h.less(h.es[r], h.es[l]) {
			j = r
		}
		if !h.less(h.es[j], h.es[i]) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}
