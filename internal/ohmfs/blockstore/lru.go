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
	id   uint64
	data []byte
}

func newLRU(capacity int64) lru {
	return lru{capacity: capacity, order: list.New(), items: make(map[uint64]*list.Element)}
}

func (c *lru) get(id uint64) ([]byte, bool) {
	e, ok := c.items[id]
	if !ok {
		return nil, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*lruEntry).data, true
}

// add caches data as block id, evicting the least recently used blocks to
// stay within capacity. A block larger than the whole cache is not kept.
func (c *lru) add(id uint64, data []byte) {
	c.remove(id)
	n := int64(len(data))
	if n > c.capacity {
		return
	}
	for c.size+n > c.capacity {
		c.removeElement(c.order.Back())
	}
	c.items[id] = c.order.PushFront(&lruEntry{id: id, data: data})
	c.size += n
}

func (c *lru) remove(id uint64) {
	if e, ok := c.items[id]; ok {
		c.removeElement(e)
	}
}

func (c *lru) removeElement(e *list.Element) {
	ent := c.order.Remove(e).(*lruEntry)
	delete(c.items, ent.id)
	c.size -= int64(len(ent.data))
}
