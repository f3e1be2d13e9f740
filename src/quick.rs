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

/// A heap's first frees that would go on a list map no table: the lists start after this many
/// (so a heap that holds one collection, which frees a block or two as it grows, stays small).
const FREES_BEFORE_TABLE: u32 = 32;

/// Heads and lengths of the exact-size lists: one page of its own, mapped the first time the
/// heap needs it (see [`Quick`]).
struct Table {
    heads: [Option<NonNull<u8>>; QUICK_MAX + 1],
    lens: [u16; QUICK_MAX + 1],
    /// Bit `n` set iff list `n` is not empty.
    nonempty: [u64; (QUICK_MAX + 64) / 64],
}

/// The lists of a heap. The table of heads is not in the heap (it would make every heap 2.6 KiB
/// larger): it is a mapping of its own, taken from the region after the heap's first
/// [`FREES_BEFORE_TABLE`] frees of list-sized blocks, and given back with the heap. Until then,
/// and if the region has no memory for it (or there is no OS), the lists are off and every free
/// merges. The heap counts the table in its mapped and metadata bytes, not against its limit.
pub(crate) struct Quick {
    table: Option<NonNull<Table>>,
    /// List-sized frees seen while there is no table; `u32::MAX`: never map one (a heap over a
    /// caller's buffer maps nothing).
    frees: u32,
    /// The table lies in a caller's buffer (see [`adopt_table`](Self::adopt_table)): never
    /// given to the region.
    in_buffer: bool,
    /// Bytes in all lists.
    pub bytes: usize,
    /// Blocks in all lists.
    pub blocks: usize,
}

/// Bytes of a table carved from a caller's buffer: whole granules.
pub(crate) const BUFFER_TABLE_LEN: usize =
    core::mem::size_of::<Table>().next_multiple_of(crate::block::GRANULE);

// SAFETY: the table is memory of the heap's own (like its chunks), reached only through the
// heap, which synchronises every access (`&mut HeapCore`).
unsafe impl Send for Quick {}

/// Bytes of the table's mapping: whole pages.
fn table_len() -> usize {
    core::mem::size_of::<Table>().next_multiple_of(crate::region::page())
}

impl Quick {
    /// `eager`: map the table at the first list-sized free (checked heaps, whose detection of
    /// writes after free works on the lists).
    pub(crate) const fn new(eager: bool) -> Quick {
        Quick {
            table: None,
            frees: if eager { FREES_BEFORE_TABLE - 1 } else { 0 },
            in_buffer: false,
            bytes: 0,
            blocks: 0,
        }
    }

    /// The lists stay off for good (a heap over a caller's buffer too small to spare a table).
    pub(crate) fn never(&mut self) {
        self.frees = u32::MAX;
    }

    /// Uses the [`BUFFER_TABLE_LEN`] bytes at `at` as the table, for good (a heap over a
    /// caller's buffer, which maps nothing).
    ///
    /// # Safety
    /// `at..at + BUFFER_TABLE_LEN` is memory the heap owns exclusively for its whole life, aligned
    /// to a granule, holding nothing else; the lists have no table yet.
    pub(crate) unsafe fn adopt_table(&mut self, at: NonNull<u8>) {
        debug_assert!(
            self.table.is_none(),
            "adopt_table: the lists have a table already"
        );
        crate::vg::defined(at.as_ptr(), BUFFER_TABLE_LEN);
        // SAFETY: exclusive, writable memory of the table's size (contract); all zero is a valid
        // table, and a granule's alignment is enough for its words.
        unsafe { core::ptr::write_bytes(at.as_ptr(), 0, BUFFER_TABLE_LEN) };
        self.table = Some(at.cast());
        self.in_buffer = true;
    }

    /// Bytes of a table carved from a caller's buffer (0 for a mapped one, or none).
    pub(crate) fn buffer_table_bytes(&self) -> usize {
        if self.in_buffer && self.table.is_some() {
            BUFFER_TABLE_LEN
        } else {
            0
        }
    }

    /// Bytes of the table (0 while there is none).
    pub(crate) fn table_bytes(&self) -> usize {
        match self.table {
            None => 0,
            Some(_) if self.in_buffer => BUFFER_TABLE_LEN,
            Some(_) => table_len(),
        }
    }

    /// Maps the table now if the heap may have one (tests of the lists themselves).
    #[cfg(test)]
    pub(crate) fn map_table(&mut self) {
        if self.table.is_none() && self.frees != u32::MAX {
            self.frees = FREES_BEFORE_TABLE - 1;
            self.count_free();
        }
    }

    /// No table yet: counts a list-sized free, and maps the table at the
    /// [`FREES_BEFORE_TABLE`]th. The free at hand merges either way.
    #[cold]
    fn count_free(&mut self) {
        if self.frees == u32::MAX {
            return;
        }
        self.frees += 1;
        if self.frees < FREES_BEFORE_TABLE {
            return;
        }
        let len = table_len();
        let Some(m) = crate::region::acquire(len, len, false) else {
            // No memory for the table: try again after as many frees again.
            self.frees = 0;
            return;
        };
        let t = m.base.cast::<Table>();
        // A recycled mapping may hold a dropped heap's blocks, which memcheck saw freed: every
        // byte is the table's now, and defined (zero past the dirty prefix, which is zeroed
        // below).
        crate::vg::defined(m.base.as_ptr(), len);
        if m.dirty > 0 {
            // SAFETY: a mapping of `len >= size_of::<Table>()` bytes that is ours alone.
            unsafe { core::ptr::write_bytes(m.base.as_ptr(), 0, m.dirty.min(len)) };
        }
        // All zero now, which is a valid table: every head `None`, every count 0. The mapping
        // starts on a page, so it is aligned for `Table`.
        self.table = Some(t);
    }

    /// Gives the table back (the lists must be empty, or their blocks given up with the heap's
    /// memory).
    pub(crate) fn release(&mut self) {
        if self.in_buffer {
            // The buffer's owner gets it back with the rest.
            self.table = None;
        } else if let Some(t) = self.table.take() {
            let len = table_len();
            let m = crate::region::Mapping {
                base: t.cast(),
                len,
                dirty: len,
                off: 0,
                map_len: len,
            };
            // SAFETY: (1) the table's mapping came from `acquire` with exactly these bounds and
            // is released once (`table` is now `None`); (2) never published; (3) nothing reads
            // the table afterwards.
            unsafe { crate::region::release(m, false) };
        }
        self.bytes = 0;
        self.blocks = 0;
    }

    /// The table, if mapped.
    #[inline]
    fn table(&self) -> Option<&Table> {
        // SAFETY: a mapped table is valid (zeroed, then only written through `table_mut`) and
        // lives until `release`, which takes it out first.
        self.table.map(|t| unsafe { &*t.as_ptr() })
    }

    #[inline]
    fn table_mut(&mut self) -> Option<&mut Table> {
        // SAFETY: as for `table`; `&mut self` makes the access exclusive.
        self.table.map(|t| unsafe { &mut *t.as_ptr() })
    }

    /// May a block of `n` granules go on its list, with `in_use` bytes in use in the heap?
    /// The lists hold at most `max(64 KiB, in_use / 8)` bytes, 64 blocks per list.
    /// Without a table, none may (see [`FREES_BEFORE_TABLE`]).
    #[inline]
    pub(crate) fn admits(&mut self, n: usize, in_use: usize, peak: usize) -> bool {
        if n > QUICK_MAX {
            return false;
        }
        if self.table.is_none() {
            self.count_free();
        }
        let Some(t) = self.table() else {
            return false;
        };
        t.lens[n] < PER_LIST && self.bytes + (n << GRANULE_SHIFT) <= Self::budget(in_use, peak)
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
            .table()?
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
    /// long, that nobody uses and that is on no list and not free; `n <= QUICK_MAX`; the lists
    /// [`admits`](Self::admits) it (so there is a table).
    #[inline]
    pub(crate) unsafe fn push(&mut self, p: NonNull<u8>, n: usize) {
        let Some(t) = self.table_mut() else {
            debug_assert!(false, "quick push without a table");
            return;
        };
        // SAFETY: the block is ours, unused, on no list and not free (contract).
        unsafe { set_quick_link(p, t.heads[n]) };
        t.heads[n] = Some(p);
        t.lens[n] += 1;
        t.nonempty[n / 64] |= 1 << (n % 64);
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
        let t = self.table_mut()?;
        let p = t.heads.get(n).copied().flatten()?;
        if p.addr().get() & (align - 1) != 0 {
            return None;
        }
        // SAFETY: p is on the list, so its link was written by `push`.
        t.heads[n] = unsafe { quick_link(p) };
        t.lens[n] -= 1;
        if t.lens[n] == 0 {
            t.nonempty[n / 64] &= !(1 << (n % 64));
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
        let Some(t) = self.table() else { return };
        for n in 1..=QUICK_MAX {
            let mut cur = t.heads[n];
            while let Some(p) = cur {
                f(p, n);
                // SAFETY: p is on a list, so its link was written by `push`.
                cur = unsafe { quick_link(p) };
            }
        }
    }

    /// Forgets every list (after the heap's blocks are gone), keeping the table.
    pub(crate) fn clear(&mut self) {
        if let Some(t) = self.table_mut() {
            t.heads = [None; QUICK_MAX + 1];
            t.lens = [0; QUICK_MAX + 1];
            t.nonempty = [0; (QUICK_MAX + 64) / 64];
        }
        self.bytes = 0;
        self.blocks = 0;
    }
}
