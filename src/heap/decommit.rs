//! Giving free memory back to the OS while the heap lives (the `give_back` threshold).

use super::*;

impl HeapCore {
    /// Is there a real surplus of free memory, worth a system call to give back? Only in a heap
    /// that has held at least 16 times the threshold (1 MiB by default: smaller heaps return
    /// their memory when dropped or reset, and their pages are better kept warm), and only when
    /// the free memory (indexed, plus `extra` bytes about to go) is at least what is in use: in
    /// a steady state that reuses its memory (a vector growing and moving, a churn) the heap
    /// keeps its pages, and only after use falls (a spike freed) do they go back.
    #[inline]
    pub(super) fn surplus(&self, extra: usize) -> bool {
        self.peak >= self.cfg.give_back.saturating_mul(16)
            && (self.free_granules << GRANULE_SHIFT) + extra >= self.in_use
    }

    /// After the frontier moved down: once the memory between it and the clean mark (handed
    /// out before, so resident) reaches the give-back threshold, returns those pages to the OS
    /// and lowers the clean mark (on Linux they read as zero again). Amortised: one system
    /// call per threshold's worth of retreat, none on small frees.
    ///
    /// # Safety
    /// `c` is a live chunk of this heap.
    #[inline]
    pub(super) unsafe fn give_back_tail(&mut self, c: Chunk) {
        // SAFETY: c is live; the pages lie between the frontier and the clean mark, which hold
        // no blocks.
        unsafe {
            if c.single() && c.frontier() == c.first() {
                // An arena's chunk made for one large block, now empty: it goes back at once.
                // Kept, it would take small blocks (its frontier is free) and never serve a large
                // one again, so each round of "big temporary, small keeper" mapped a new one.
                self.give_back_chunk(c);
                return;
            }
            let gap = bytes(c.clean() - c.frontier());
            if gap >= self.give_back_at && c.mapped() && self.surplus(gap) {
                let from = align_up(bytes(c.frontier()), page()).unwrap_or(usize::MAX);
                let to = bytes(c.clean());
                if from < to && crate::region::decommit(c.base().add(from), to - from) {
                    c.set_clean((from >> GRANULE_SHIFT) as Gran);
                    self.gave_back(to - from);
                }
            }
        }
    }

    /// After a free made the free block `start..end` out of parts of which the largest had
    /// `largest` granules: if the block's size passed another multiple of the give-back
    /// threshold T (in steps of T/4) that its largest part had not reached, returns its whole
    /// pages to the OS
    /// (keeping its first and last granule, which hold its node and footer). So a free block
    /// that grows by merges is given back at most once per T/4 bytes of growth, and a small free
    /// next to a big free block rarely makes a system call.
    ///
    /// # Safety
    /// `c` is live and `start..end` is a free block of it.
    #[inline]
    pub(super) unsafe fn give_back_inside(
        &mut self,
        c: Chunk,
        start: Gran,
        end: Gran,
        largest: Gran,
    ) {
        // Steps of a quarter of the threshold: at most a quarter of it stays resident per
        // free block, at most one system call per quarter threshold of growth.
        let step = (self.give_back_at / 4).max(1);
        let size = bytes(end - start);
        if size < self.give_back_at || size / step <= bytes(largest) / step || !self.surplus(size) {
            return;
        }
        // SAFETY: the pages are inside a free block, past its node and before its footer.
        unsafe {
            let from = align_up(bytes(start + 1), page()).unwrap_or(usize::MAX);
            let to = align_down(bytes(end - 1), page());
            if c.mapped() && from < to && crate::region::decommit(c.base().add(from), to - from) {
                self.gave_back(to - from);
            }
        }
    }

    /// `len` bytes just went back to the OS. If the heap then grows back by half of the largest
    /// return since its last low point (see `regrown`), it is refilling the memory it gave
    /// back: a page fault per page per round.
    #[cold]
    fn gave_back(&mut self, len: usize) {
        if self.cfg.arena {
            // An arena keeps the configured threshold: a thread-safe heap's resident size is
            // bounded per arena (README "Reliability"), and eight raised thresholds would not be.
            return;
        }
        if self.returned == 0 {
            self.regrow_base = self.in_use;
        }
        // The largest single return, not their sum: a free span that grows by merges is given
        // back again at each step, the same pages counted once.
        self.returned = self.returned.max(len);
        self.regrow_base = self.regrow_base.min(self.in_use);
        self.regrow_at = self.regrow_base.saturating_add(self.returned / 2);
    }

    /// The heap grew back by half of what it gave to the OS (see `gave_back`): a heap that
    /// fills and empties the same memory over and over (a batch allocated, freed, allocated
    /// again). The give-back threshold becomes twice that return, or twice itself (up to
    /// [`GIVE_BACK_MAX`]), so from the next round on the memory stays resident; a heap that never refills what it returned keeps the
    /// configured threshold, and its resident size falls after a spike.
    #[cold]
    #[inline(never)]
    pub(super) fn regrown(&mut self) {
        if self.give_back_at < GIVE_BACK_MAX {
            self.give_back_at = self
                .give_back_at
                .max(self.returned)
                .saturating_mul(2)
                .min(GIVE_BACK_MAX);
        }
        self.returned = 0;
        self.regrow_at = usize::MAX;
    }
}

/// The most the give-back threshold rises to after returns of memory (see `gave_back`).
pub(crate) const GIVE_BACK_MAX: usize = 8 << 20;

impl HeapCore {
    /// Gives every whole free page of the heap's mapped chunks back to the OS now, whatever the
    /// give-back threshold says: the quick lists are merged first, then each chunk's untouched
    /// tail that was handed out before (down to the frontier) and the inside of every free
    /// block (past its node, before its footer). Chunks stay mapped and are reused (reading as
    /// zero). Returns the bytes given back; 0 for chunks that are not mapped (a caller's
    /// buffer, a child's chunks lent by its parent), under Miri and where the OS gives no zero
    /// pages. O(c + mapped bytes / 1024 + free blocks), a system call per free span of a page
    /// or more.
    pub(crate) fn trim(&mut self) -> usize {
        self.flush();
        let page = page();
        let mut released = 0;
        for c in self.chunks() {
            // SAFETY: c is a live chunk of this heap's list. The pages decommitted lie between
            // the frontier and the clean mark (no blocks there), or inside a free block past its
            // node granule and before its footer granule (nobody's bytes); boundary bits and
            // node sizes are read below the frontier only, and after the flush every set bit
            // found walking from a block start is the first granule of a free block.
            unsafe {
                if !c.mapped() {
                    continue;
                }
                let (first, frontier) = (c.first(), c.frontier());
                let mut g = first;
                while g < frontier {
                    let s = c.next_bit(g, frontier);
                    if s >= frontier {
                        break;
                    }
                    let n = c.get(s, Size);
                    let from = align_up(bytes(s + 1), page).unwrap_or(usize::MAX);
                    let to = align_down(bytes(s + n - 1), page);
                    if from < to && crate::region::decommit(c.base().add(from), to - from) {
                        released += to - from;
                    }
                    g = s + n;
                }
                let from = align_up(bytes(frontier), page).unwrap_or(usize::MAX);
                let to = bytes(c.clean());
                if from < to && crate::region::decommit(c.base().add(from), to - from) {
                    c.set_clean((from >> GRANULE_SHIFT) as Gran);
                    released += to - from;
                }
            }
        }
        released
    }
}
