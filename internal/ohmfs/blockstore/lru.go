package blockstore

import "container/list"

// lru is a cache of block contents bounded by their total size. It is not
// safe for concurrent use; Store guards it with its mutex.
type lru struct {
	capacity int64
	size     int64
	order    *list.List // of *lruEntry, most recently used first
	items    map[uint64]*list.Element
}

type lruEntry struct {
	id  uint64
	blk *block
}

func newLRU(capacity int64) lru {
	return lru{capacity: capacity, order: list.New(), items: make(map[uint64]*list.Element)}
}

func (c *lru) get(id uint64) (*block, bool) {
	e, ok := c.items[id]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).blk, true
}

// add caches blk as block id, evicting the least recently used blocks to
// stay within capacity, and reports whether it kept blk: a block larger
// than the whole cache is not kept. Every block it drops (evicted, or the
// one id replaces) is passed to drop.
func (c *lru) add(id uint64, blk *block, drop func(*block)) bool {
	c.remove(id, drop)
	n := int64(len(blk.data))
	if n > c.capacity {
		return false
	}
	for c.size+n > c.capacity {
		c.removeElement(c.order.Back(), drop)
	}
	c.items[id] = c.order.PushFront(&lruEntry{id: id, blk: blk})
	c.size += n
	return true
}

// remove drops block id, passing it to drop, if it is cached.
func (c *lru) remove(id uint64, drop func(*block)) {
	if e, ok := c.items[id]; ok {
		c.removeElement(e, drop)
	}
}

func (c *lru) removeElement(e *list.Element, drop func(*block)) {
	ent := c.order.Remove(e).(*lruEntry)
	delete(c.items, ent.id)
	c.size -= int64(len(ent.blk.data))
	drop(ent.blk)
}
