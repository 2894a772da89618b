package attest

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"sort"
	"sync"
)

// Parsing a TCG event log and extracting its boot state (Secure Boot
// databases, EFI applications) costs about 1 ms, two thirds of a
// verification. It is a pure function of the log bytes, the quoted values of
// the PCRs the log touches, and the options, and a fleet boots the same
// image with the same firmware again and again: so successful results are
// cached, keyed by all of those. The lifecycle PCR is left out of the key
// because a firmware log may not touch it (verifyBootLog rejects one that
// does), so the result does not depend on it.
const bootCacheSize = 256

type bootResult struct {
	events     []BootEvent
	secureBoot bool
	efiApps    [][]byte
}

type bootCache struct {
	mu    sync.Mutex
	order *list.List // front: most recently used
	byKey map[[32]byte]*list.Element
}

type bootCacheEntry struct {
	key [32]byte
	res bootResult
}

var bootLogCache = &bootCache{order: list.New(), byKey: map[[32]byte]*list.Element{}}

// bootCacheEnabled is switched off by the cold-path benchmark.
var bootCacheEnabled = true

func bootCacheKey(raw []byte, pcrs map[uint32][]byte, directKernelBoot bool) [32]byte {
	h := sha256.New()
	logDigest := sha256.Sum256(raw)
	h.Write(logDigest[:])
	if directKernelBoot {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	idx := make([]uint32, 0, len(pcrs))
	for i := range pcrs {
		if i != LifecyclePCR {
			idx = append(idx, i)
		}
	}
	sort.Slice(idx, func(a, b int) bool { return idx[a] < idx[b] })
	for _, i := range idx {
		var b [8]byte
		binary.BigEndian.PutUint32(b[:4], i)
		binary.BigEndian.PutUint32(b[4:], uint32(len(pcrs[i])))
		h.Write(b[:])
		h.Write(pcrs[i])
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func (c *bootCache) get(k [32]byte) (bootResult, bool) {
	if !bootCacheEnabled {
		return bootResult{}, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[k]
	if !ok {
		return bootResult{}, false
	}
	c.order.MoveToFront(e)
	return e.Value.(*bootCacheEntry).res, true
}

func (c *bootCache) put(k [32]byte, r bootResult) {
	if !bootCacheEnabled {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[k]; ok {
		c.order.MoveToFront(e)
		return
	}
	c.byKey[k] = c.order.PushFront(&bootCacheEntry{key: k, res: r})
	if c.order.Len() > bootCacheSize {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*bootCacheEntry).key)
	}
}
