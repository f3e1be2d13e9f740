//! The O(1) front of the heap: exact-size lists of recently freed small blocks.
//!
//! A block of `n <= QUICK_MAX` granules that is freed goes onto list `n` (LIFO, linked through
//! its first word) instead of through the merge logic and the index, while the lists hold less
//! than their budget; an allocation of exactly `n` granules takes it back in O(1). Blocks on a
//! list are neither in use nor free: the heap counts them as `cached`. They are merged into the
//! free set (a *flush*) before the heap maps more memory or gives up, and before `stats()`, so
//! out-of-memory and the reported free spans are those of a fully merged heap; `check()`
//! verifies the cached blocks as a set of their own (inside a chunk, not overlapping any free
//! block, counts add up).

use crate::block::GRANULE_SHIFT;
use core::ptr::NonNull;

/// Largest block size (in granules) that the lists take: 4 KiB.
pub(crate) const QUICK_MAX: usize = 256;
/// Most blocks on one list.
const PER_LIST: u16 = 64;
/// The lists may always hold this many bytes, whatever the heap's size.
const MIN_BUDGET: usize = 64 << 10;

/// Heads and lengths of the exact-size lists.
pub(crate) struct Quick {
    heads: [Option<NonNull<u8>>; QUICK_MAX + 1],
    lens: [u16; QUICK_MAX + 1],
    /// Bytes in all lists.
    pub bytes: usize,
    /// Blocks in all lists.
    pub blocks: usize,
}

impl Quick {
    pub(crate) const fn new() -> Quick {
        Quick {
            heads: [None; QUICK_MAX + 1],
            lens: [0; QUICK_MAX + 1],
            bytes: 0,
            blocks: 0,
        }
    }

    /// May a block of `n` granules go on its list, with `in_use` bytes in use in the heap?
    /// The lists hold at most `max(64 KiB, in_use / 8)` bytes, 64 blocks per list.
    #[inline]
    pub(crate) fn admits(&self, n: usize, in_use: usize) -> bool {
        n <= QUICK_MAX
            && self.lens[n] < PER_LIST
            && self.bytes + (n << GRANULE_SHIFT) <= MIN_BUDGET.max(in_use >> 3)
    }

    /// Puts block `p` of `n` granules on its list.
    ///
    /// # Safety
    /// `p` is a block of the heap (pointer derived from its chunk's base), at least one granule
    /// long, that nobody uses and that is on no list and not free; `n <= QUICK_MAX`.
    #[inline]
    pub(crate) unsafe fn push(&mut self, p: NonNull<u8>, n: usize) {
        // SAFETY: the block is ours and 16-byte aligned, room for the link.
        unsafe { p.cast::<Option<NonNull<u8>>>().write(self.heads[n]) };
        self.heads[n] = Some(p);
        self.lens[n] += 1;
        self.bytes += n << GRANULE_SHIFT;
        self.blocks += 1;
    }

    /// Takes a block of exactly `n` granules, if list `n` has one whose address is a multiple of
    /// `align`.
    ///
    /// # Safety
    /// The lists hold only blocks pushed by `push` of heaps that are still live.
    #[inline]
    pub(crate) unsafe fn pop(&mut self, n: usize, align: usize) -> Option<NonNull<u8>> {
        let p = self.heads.get(n).copied().flatten()?;
        if p.addr().get() & (align - 1) != 0 {
            return None;
        }
        // SAFETY: p is on the list, so its first word is the link `push` wrote.
        self.heads[n] = unsafe { p.cast::<Option<NonNull<u8>>>().read() };
        self.lens[n] -= 1;
        self.bytes -= n << GRANULE_SHIFT;
        self.blocks -= 1;
        Some(p)
    }

    /// Visits every cached block as `(pointer, granules)` without changing the lists.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(crate) unsafe fn for_each(&self, mut f: impl FnMut(NonNull<u8>, usize)) {
        for n in 1..=QUICK_MAX {
            let mut cur = self.heads[n];
            while let Some(p) = cur {
                f(p, n);
                // SAFETY: p is on a list: its first word is the next link.
                cur = unsafe { p.cast::<Option<NonNull<u8>>>().read() };
            }
        }
    }

    /// Is `p` on list `n`? O(list length), for checked builds.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    #[cfg(debug_assertions)]
    pub(crate) unsafe fn contains(&self, p: NonNull<u8>, n: usize) -> bool {
        let mut cur = self.heads.get(n).copied().flatten();
        while let Some(q) = cur {
            if q == p {
                return true;
            }
            // SAFETY: q is on a list: its first word is the next link.
            cur = unsafe { q.cast::<Option<NonNull<u8>>>().read() };
        }
        false
    }

    /// Forgets every list (after the heap's memory is gone).
    pub(crate) fn clear(&mut self) {
        *self = Quick::new();
    }
}
