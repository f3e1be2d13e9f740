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

use crate::block::{GRANULE_SHIFT, quick_link, set_quick_link};
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
    /// Bit `n` set iff list `n` is not empty.
    nonempty: [u64; (QUICK_MAX + 64) / 64],
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
            nonempty: [0; (QUICK_MAX + 64) / 64],
            bytes: 0,
            blocks: 0,
        }
    }

    /// May a block of `n` granules go on its list, with `in_use` bytes in use in the heap?
    /// The lists hold at most `max(64 KiB, in_use / 8)` bytes, 64 blocks per list.
    #[inline]
    pub(crate) fn admits(&self, n: usize, in_use: usize, peak: usize) -> bool {
        n <= QUICK_MAX
            && self.lens[n] < PER_LIST
            && self.bytes + (n << GRANULE_SHIFT) <= Self::budget(in_use, peak)
    }

    /// An eighth of what is in use, at least 64 KiB, except after a large spike (a peak of at
    /// least 1 MiB, use now below a quarter of it): then no floor, so that freed memory merges
    /// and can go back to the OS. (Small heaps that fill and empty, like a request's, keep the
    /// floor: it is negligible next to their memory.)
    #[inline]
    fn budget(in_use: usize, peak: usize) -> usize {
        if in_use < peak / 4 && peak >= 16 * MIN_BUDGET {
            in_use >> 3
        } else {
            MIN_BUDGET.max(in_use >> 3)
        }
    }

    /// Do the lists hold more than their budget (because `in_use` fell since they filled)?
    #[inline]
    pub(crate) fn over(&self, in_use: usize, peak: usize) -> bool {
        self.bytes > Self::budget(in_use, peak)
    }

    /// Takes a block from the non-empty list of the largest size (O(1)), for trimming.
    ///
    /// # Safety
    /// As for [`pop`](Self::pop).
    pub(crate) unsafe fn pop_any(&mut self) -> Option<(NonNull<u8>, usize)> {
        let (w, bits) = self
            .nonempty
            .iter()
            .enumerate()
            .rev()
            .find(|(_, b)| **b != 0)?;
        let n = w * 64 + (63 - bits.leading_zeros() as usize);
        // SAFETY: `pop`'s only item, the lists hold only blocks `push`ed by live heaps, is this
        // function's contract.
        unsafe { self.pop(n, 1) }.map(|p| (p, n))
    }

    /// Puts block `p` of `n` granules on its list.
    ///
    /// # Safety
    /// `p` is a block of the heap (pointer derived from its chunk's base), at least one granule
    /// long, that nobody uses and that is on no list and not free; `n <= QUICK_MAX`.
    #[inline]
    pub(crate) unsafe fn push(&mut self, p: NonNull<u8>, n: usize) {
        // SAFETY: the block is ours, unused, on no list and not free (contract).
        unsafe { set_quick_link(p, self.heads[n]) };
        self.heads[n] = Some(p);
        self.lens[n] += 1;
        self.nonempty[n / 64] |= 1 << (n % 64);
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
        // SAFETY: p is on the list, so its link was written by `push`.
        self.heads[n] = unsafe { quick_link(p) };
        self.lens[n] -= 1;
        if self.lens[n] == 0 {
            self.nonempty[n / 64] &= !(1 << (n % 64));
        }
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
                // SAFETY: p is on a list, so its link was written by `push`.
                cur = unsafe { quick_link(p) };
            }
        }
    }

    /// Forgets every list (after the heap's memory is gone).
    pub(crate) fn clear(&mut self) {
        *self = Quick::new();
    }
}
