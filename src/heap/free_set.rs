//! The free set's bookkeeping: every change to the set of free blocks goes through these four
//! functions, which keep the boundary bits, the index or the size-class lists (see
//! `HeapCore::binned`) and the counters in step.

use super::*;

impl HeapCore {
    /// Makes `g..g+s` a free block and indexes it.
    ///
    /// # Safety
    /// 1. `c` is a live chunk of this heap, `s >= 1`, and `c.first() <= g`,
    ///    `g + s <= c.frontier()`;
    /// 2. the span belongs to nobody: no user, no quick list, no free block;
    /// 3. it has no free neighbour (invariant 3).
    #[inline]
    pub(super) unsafe fn add_free(&mut self, c: Chunk, g: Gran, s: Gran) {
        debug_assert!(
            // SAFETY: c is live (contract); only header fields are read.
            s >= 1 && unsafe { c.first() <= g && g + s <= c.frontier() },
            "add_free: {g}+{s} is not inside the block area below the frontier"
        );
        // SAFETY: `mark_free`: (1) live and (2) inside the block area, `s >= 1`: item 1; (3) not
        // handed out, in no free block: item 2. `index::insert`: (1) live: item 1; (2) marked
        // just above; (3) not in the index: it was in no free block (item 2) and only free
        // blocks are indexed (invariant 2). Item 3 keeps invariant 3 for the new block.
        unsafe {
            c.mark_free(g, s);
            self.file(c, g, s);
        }
        self.free_granules += s as usize;
        self.free_blocks += 1;
    }

    /// Takes indexed free block `g` (of size `s`) out of the free set.
    ///
    /// # Safety
    /// 1. `c` is a live chunk of this heap;
    /// 2. `g` is an indexed free block of it;
    /// 3. of size `s`.
    #[inline]
    pub(super) unsafe fn take_free(&mut self, c: Chunk, g: Gran, s: Gran) {
        debug_assert!(
            // SAFETY: g is an indexed free block of live chunk c (contract).
            unsafe { c.bit(g) && c.get(g, Size) == s },
            "take_free: {g} is not a free block of {s} granules"
        );
        // SAFETY: `index::remove`: (1) live: item 1; (2) in the index: item 2. `unmark_free`:
        // (1) live: item 1; (2) `g..g+s` is a marked free block: items 2 and 3 (removing it
        // from the index left its bits set).
        unsafe {
            self.unfile(c, g, s);
            c.unmark_free(g, s);
        }
        self.free_granules -= s as usize;
        self.free_blocks -= 1;
    }

    /// Changes indexed free block `g` from `old` to `new` granules, same start.
    ///
    /// # Safety
    /// 1. `c` is a live chunk of this heap;
    /// 2. `g` is an indexed free block of it of size `old`;
    /// 3. `new >= 1`, `g + new <= c.frontier()`, and `g..g+new` belongs to nobody (no user, no
    ///    quick list, no free block but `g`'s own);
    /// 4. it has no free neighbour.
    #[inline]
    pub(super) unsafe fn resize_free(&mut self, c: Chunk, g: Gran, old: Gran, new: Gran) {
        debug_assert!(
            // SAFETY: g is an indexed free block of live chunk c (contract).
            new >= 1 && unsafe { c.get(g, Size) == old && g + new <= c.frontier() },
            "resize_free: {g} is not a free block of {old} granules, or {new} does not fit"
        );
        // SAFETY: `unmark_free`: (1) live: item 1; (2) `g..g+old` is a marked free block: item
        // 2. `mark_free`: (1) live: item 1; (2) `first <= g` (g is a block: item 2), `g + new <=
        // frontier`, `new >= 1`: item 3; (3) nobody's and, `g`'s own bits cleared just above,
        // in no marked free block: item 3. `index::resize`: (1) live: item 1; (2) `g` is still
        // indexed (item 2; only bits changed); (3) just marked, nobody else's: item 3; (4) item 4.
        unsafe {
            if self.binned(old) || self.binned(new) {
                self.unfile(c, g, old);
                c.unmark_free(g, old);
                c.mark_free(g, new);
                self.file(c, g, new);
            } else {
                c.unmark_free(g, old);
                c.mark_free(g, new);
                index::resize(c, g, new);
            }
        }
        self.free_granules = self.free_granules + new as usize - old as usize;
    }

    /// Moves indexed free block `old` (size `old_size`) to `new..new+size`, keeping its end.
    ///
    /// # Safety
    /// 1. `c` is a live chunk of this heap and `old` an indexed free block of it of size
    ///    `old_size`;
    /// 2. `size >= 1` and `new + size == old + old_size`;
    /// 3. `c.first() <= new`, and `new..new+size` belongs to nobody (no user, no quick list, no
    ///    free block but `old`'s own);
    /// 4. no other free block starts in it or between it and `old`, and it has no free
    ///    neighbour.
    #[inline]
    pub(super) unsafe fn shift_free(
        &mut self,
        c: Chunk,
        old: Gran,
        old_size: Gran,
        new: Gran,
        size: Gran,
    ) {
        debug_assert!(
            size >= 1 && new as u64 + size as u64 == old as u64 + old_size as u64,
            "shift_free: {old}+{old_size} moved to {new}+{size} does not keep its end"
        );
        // SAFETY: `unmark_free`: (1) live: item 1; (2) `old..old+old_size` is a marked free
        // block: item 1. `mark_free`: (1) live: item 1; (2) `first <= new`: item 3; `new + size
        // == old + old_size <= frontier` (items 2 and 1: a free block lies below the frontier);
        // `size >= 1`: item 2; (3) nobody's and, `old`'s bits cleared just above, in no marked
        // free block: item 3. `index::move_key`: (1) `old` is still indexed (item 1; only bits
        // and the node of `new` changed); (2) item 2, and `size(old)` still reads `old_size`
        // (`mark_free` wrote the `Size` of granule `new`, which is `old` only if nothing moves);
        // (3) just marked, nobody else's: item 3; (4) item 4.
        unsafe {
            if self.binned(old_size) || self.binned(size) {
                self.unfile(c, old, old_size);
                c.unmark_free(old, old_size);
                c.mark_free(new, size);
                self.file(c, new, size);
            } else {
                c.unmark_free(old, old_size);
                c.mark_free(new, size);
                index::move_key(c, old, new, size);
            }
        }
        self.free_granules = self.free_granules + size as usize - old_size as usize;
    }

    /// Does this heap keep free blocks of `s` granules on its chunks' size-class lists
    /// (`bins`: O(1) fit, a good fit) rather than in the address-ordered index? Heaps with
    /// quick reuse (the default), checked or not, for blocks of up to `BIN_MAX` granules. With
    /// `quick_reuse(false)` every free block is indexed (exact lowest-address first fit).
    #[inline]
    pub(crate) fn binned(&self, s: Gran) -> bool {
        s <= BIN_MAX && self.bins_on()
    }

    /// Does this heap use size-class lists at all (see `binned`)?
    #[inline]
    pub(crate) fn bins_on(&self) -> bool {
        self.cfg.quick_reuse
    }

    /// Files free block `g` (marked, of size `s`) in the index or on its size-class list.
    ///
    /// # Safety
    /// 1. `c` is a live chunk of this heap;
    /// 2. `g` is a marked free block of size `s`, neither indexed nor listed.
    #[inline]
    unsafe fn file(&mut self, c: Chunk, g: Gran, s: Gran) {
        // SAFETY: `bins::insert`: (1) item 1; (2) item 2, and `s <= BIN_MAX` (binned). `index::
        // insert`: (1) item 1; (2) marked: item 2; (3) not indexed: item 2.
        unsafe {
            if self.binned(s) {
                bins::insert(c, g);
            } else {
                index::insert(c, g);
            }
        }
    }

    /// Takes free block `g` (of size `s`) out of the index or its size-class list.
    ///
    /// # Safety
    /// 1. `c` is a live chunk of this heap;
    /// 2. `g` is a free block of size `s` filed by `file` (its node unchanged since).
    #[inline]
    unsafe fn unfile(&mut self, c: Chunk, g: Gran, s: Gran) {
        // SAFETY: `bins::remove`: (1) item 1; (2) a binned block is on its class's list (item
        // 2). `index::remove`: (1) item 1; (2) an unbinned block is indexed (item 2).
        unsafe {
            if self.binned(s) {
                bins::remove(c, g);
            } else {
                index::remove(c, g);
            }
        }
    }

    #[inline]
    pub(super) fn used(&mut self, n: Gran) {
        self.in_use += bytes(n);
        if self.in_use > self.peak {
            self.peak = self.in_use;
        }
        if self.in_use > self.regrow_at {
            self.regrown();
        }
    }
}
