//! The free set's bookkeeping: every change to the set of indexed free blocks goes through
//! these four functions, which keep the boundary bits, the index and the counters in step.

use super::*;

impl HeapCore {
    /// Makes `g..g+s` a free block and indexes it.
    ///
    /// # Safety
    /// The span is inside `c`'s block area, belongs to nobody, and has no free neighbour.
    #[inline]
    pub(super) unsafe fn add_free(&mut self, c: Chunk, g: Gran, s: Gran) {
        debug_assert!(
            // SAFETY: c is live (contract); only header fields are read.
            s >= 1 && unsafe { c.first() <= g && g + s <= c.frontier() },
            "add_free: {g}+{s} is not inside the block area below the frontier"
        );
        // SAFETY: forwarded contract.
        unsafe {
            c.mark_free(g, s);
            index::insert(c, g);
        }
        self.free_granules += s as usize;
        self.free_blocks += 1;
    }

    /// Takes indexed free block `g` (of size `s`) out of the free set.
    ///
    /// # Safety
    /// `g` is an indexed free block of `c` of size `s`.
    #[inline]
    pub(super) unsafe fn take_free(&mut self, c: Chunk, g: Gran, s: Gran) {
        debug_assert!(
            // SAFETY: g is an indexed free block of live chunk c (contract).
            unsafe { c.bit(g) && c.get(g, Size) == s },
            "take_free: {g} is not a free block of {s} granules"
        );
        // SAFETY: forwarded contract.
        unsafe {
            index::remove(c, g);
            c.unmark_free(g, s);
        }
        self.free_granules -= s as usize;
        self.free_blocks -= 1;
    }

    /// Changes indexed free block `g` from `old` to `new` granules, same start.
    ///
    /// # Safety
    /// `g` is an indexed free block of `c` of size `old`; `g..g+new` is free and has no free
    /// neighbour.
    #[inline]
    pub(super) unsafe fn resize_free(&mut self, c: Chunk, g: Gran, old: Gran, new: Gran) {
        debug_assert!(
            // SAFETY: g is an indexed free block of live chunk c (contract).
            new >= 1 && unsafe { c.get(g, Size) == old && g + new <= c.frontier() },
            "resize_free: {g} is not a free block of {old} granules, or {new} does not fit"
        );
        // SAFETY: forwarded contract.
        unsafe {
            c.unmark_free(g, old);
            c.mark_free(g, new);
            index::resize(c, g, new);
        }
        self.free_granules = self.free_granules + new as usize - old as usize;
    }

    /// Moves indexed free block `old` (size `old_size`) to `new..new+size`, keeping its end.
    ///
    /// # Safety
    /// As for `index::move_key`: `new + size == old + old_size`, the span is free and has no
    /// free neighbour.
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
        // SAFETY: forwarded contract.
        unsafe {
            c.unmark_free(old, old_size);
            c.mark_free(new, size);
            index::move_key(c, old, new, size);
        }
        self.free_granules = self.free_granules + size as usize - old_size as usize;
    }

    #[inline]
    pub(super) fn used(&mut self, n: Gran) {
        self.in_use += bytes(n);
        if self.in_use > self.peak {
            self.peak = self.in_use;
        }
    }
}
