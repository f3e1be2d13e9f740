//! Counters. Read-only: nothing here changes the heap.

use crate::block::{GRANULE_SHIFT, Gran};
use crate::heap::HeapCore;
use crate::index;

/// A snapshot of a heap's memory, from [`Heap::stats`](crate::Heap::stats).
///
/// All sizes are bytes. `in_use + free + metadata == mapped` always holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Bytes in blocks handed out (each rounded up to 16 bytes).
    pub in_use: usize,
    /// Bytes free: in free blocks plus the untouched tail (frontier) of each chunk.
    pub free: usize,
    /// Number of free spans (free blocks, plus one per chunk whose untouched tail is not empty).
    /// No two are adjacent.
    pub free_blocks: usize,
    /// The largest single free span, in bytes: the biggest allocation of alignment <= 16 that can
    /// succeed without mapping more memory.
    pub largest_free: usize,
    /// Bytes mapped from the OS (or given as a buffer).
    pub mapped: usize,
    /// Bytes of chunk headers and boundary bitmaps (1 bit per 16 bytes).
    pub metadata: usize,
    /// The highest `in_use` since the heap was created.
    pub peak_in_use: usize,
    /// Number of chunks (mappings).
    pub chunks: usize,
    /// Allocations refused because they would have passed the budget (as opposed to the limit
    /// or the OS running out).
    pub budget_refusals: usize,
    /// The budget on bytes in use, if one is set.
    pub budget: Option<usize>,
    /// Bytes that were on the quick lists (freed, kept for exact-size reuse) when `stats()` was
    /// called; `stats()` merges them into the free set before counting.
    pub cached_before: usize,
    /// Bytes of the table of the quick lists. A mapped heap maps it apart from its chunks (so it is
    /// neither in `mapped` nor under the limit): one page, once the heap has freed 32 blocks of
    /// at most 4 KiB (at the first such free in checked mode). A heap over a caller's buffer of
    /// at least 32 KiB (any buffer that can spare it in checked mode) carves it from the
    /// buffer's start at once, and counts it in `mapped` and `metadata` too (its `map()` shows
    /// the chunks only). Keeping the table
    /// out of the heap keeps a heap small (`size_of::<Heap>()` is about 230 bytes) and a heap
    /// that holds one collection free of it.
    pub quick_table: usize,
    /// Bytes of this heap's blocks that its child heaps ([`Heap::child`](crate::Heap::child))
    /// hold as their chunks (included in `in_use`). The children's own counters are theirs.
    pub lent_to_children: usize,
}

impl Stats {
    /// Adds another heap's counters to these (the largest free block is the larger one; the
    /// peaks add up, which is an upper bound of a combined peak, and the budget stays).
    #[cfg_attr(not(feature = "mmap"), allow(dead_code))]
    pub(crate) fn add(&mut self, s: &Stats) {
        self.in_use += s.in_use;
        self.free += s.free;
        self.free_blocks += s.free_blocks;
        self.largest_free = self.largest_free.max(s.largest_free);
        self.mapped += s.mapped;
        self.metadata += s.metadata;
        self.chunks += s.chunks;
        self.budget_refusals += s.budget_refusals;
        self.cached_before += s.cached_before;
        self.quick_table += s.quick_table;
        self.lent_to_children += s.lent_to_children;
        self.peak_in_use += s.peak_in_use;
    }
}

impl HeapCore {
    /// Merges the quick lists, then counts: what `Heap::stats` and `SyncHeap::stats` report.
    pub(crate) fn flushed_stats(&mut self) -> Stats {
        let cached = self.quick.bytes;
        self.flush();
        Stats {
            cached_before: cached,
            ..self.stats()
        }
    }

    /// The counters without merging the quick lists (no side effects, for `Debug`): the cached
    /// blocks are counted in `free` (so `in_use + free + metadata == mapped` still holds) and
    /// in `cached_before`, but not in `free_blocks` or `largest_free`.
    pub(crate) fn peek_stats(&self) -> Stats {
        let s = self.stats();
        Stats {
            free: s.free + self.quick.bytes,
            cached_before: self.quick.bytes,
            ..s
        }
    }

    /// O(c) in the number of chunks.
    pub(crate) fn stats(&self) -> Stats {
        let mut frontier_bytes = 0;
        let mut frontier_spans = 0;
        let mut largest: Gran = 0;
        for c in self.chunks() {
            // SAFETY: a chunk of this heap's list, live.
            unsafe {
                let tail = c.granules() - c.frontier();
                frontier_bytes += (tail as usize) << GRANULE_SHIFT;
                frontier_spans += usize::from(tail > 0);
                largest = largest
                    .max(tail)
                    .max(index::largest(c))
                    .max(crate::bins::largest(c));
            }
        }
        Stats {
            in_use: self.in_use,
            free: (self.free_granules << GRANULE_SHIFT) + frontier_bytes,
            free_blocks: self.free_blocks + frontier_spans,
            largest_free: (largest as usize) << GRANULE_SHIFT,
            // A table carved from a caller's buffer is part of the buffer: mapped metadata.
            mapped: self.mapped + self.quick.buffer_table_bytes(),
            metadata: self.meta + self.quick.buffer_table_bytes(),
            peak_in_use: self.peak,
            chunks: self.chunks,
            budget_refusals: self.refused,
            cached_before: 0,
            quick_table: self.quick.table_bytes(),
            lent_to_children: self.lent,
            budget: (self.cfg.budget != usize::MAX).then_some(self.cfg.budget),
        }
    }
}
