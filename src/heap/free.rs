//! Freeing: a block goes onto a quick list or is merged into the free set with both
//! neighbours (or the frontier).

use super::*;

impl HeapCore {
    /// Frees the block of `size` bytes at `ptr`, merging it with free neighbours. O(1) to find
    /// the neighbours, expected O(log n) to update the index.
    ///
    /// # Safety
    /// 1. `ptr` was returned by this heap for a block of `size` bytes (any size between the one
    ///    requested and the length returned) aligned to `align`;
    /// 2. it is not used afterwards.
    #[inline]
    pub(crate) unsafe fn dealloc(
        &mut self,
        ptr: NonNull<u8>,
        size: usize,
        align: usize,
    ) -> Result<(), Fail> {
        if size == 0 {
            return Ok(());
        }
        let (c, g, n) = self.find(ptr, size, align)?;
        // SAFETY: find checked that g..g+n is a block inside c's block area.
        unsafe { self.retire(c, g, n) };
        Ok(())
    }

    /// Frees a block another thread gave up while this heap was busy (`sync`'s deferred frees):
    /// as `dealloc`, but its first 16 bytes hold the deferral, not the caller's data.
    ///
    /// # Safety
    /// As for `dealloc` (items 1 and 2).
    #[cfg_attr(not(feature = "mmap"), allow(dead_code))]
    pub(crate) unsafe fn dealloc_deferred(
        &mut self,
        ptr: NonNull<u8>,
        size: usize,
        align: usize,
    ) -> Result<(), Fail> {
        if !self.cfg.checked {
            // SAFETY: `dealloc`'s (1) and (2) are this function's items 1 and 2.
            return unsafe { self.dealloc(ptr, size, align) };
        }
        let (c, g) = self.locate(ptr, 1)?;
        // SAFETY: c is a live chunk of this heap and g a granule of its block area; then
        // g..g+n is a verified block of c.
        unsafe {
            let n = self.verify(c, g, ptr.addr().get(), size, align, true)?;
            self.retire(c, g, n);
        }
        Ok(())
    }

    /// A used block is given up: unmarked (checked mode), then freed.
    ///
    /// # Safety
    /// As for `free_block` (items 1-3).
    #[inline]
    pub(super) unsafe fn retire(&mut self, c: Chunk, g: Gran, n: Gran) {
        debug_assert!(n >= 1, "retire: an empty block at {g}");
        if self.cfg.checked {
            // SAFETY: g..g+n is a used block of c, a checked chunk.
            unsafe { c.mark_used(g, n, false) };
        }
        // SAFETY: `free_block`'s (1)-(3) are this function's items 1-3 (dropping the checked
        // marks above does not make the block anyone else's).
        unsafe { self.free_block(c, g, n) };
    }

    /// Checked mode poisons, wiping mode zeroes the bytes of a block being freed.
    ///
    /// # Safety
    /// 1. `c` is live;
    /// 2. `g..g+n` is a block of it (in `first..frontier`);
    /// 3. nobody uses it any more.
    #[inline]
    pub(super) unsafe fn scrub(&self, c: Chunk, g: Gran, n: Gran) {
        // SAFETY: the span is inside c and the heap's again.
        unsafe {
            let (p, len) = (c.ptr(g).as_ptr(), bytes(n));
            if self.cfg.zero_on_free {
                vg::defined(p, len);
                core::ptr::write_bytes(p, 0, len);
                vg::noaccess(p, len);
            } else if self.cfg.checked {
                let len = len.min(POISON_MAX);
                vg::defined(p, len);
                core::ptr::write_bytes(p, POISON, len);
                vg::noaccess(p, len);
            }
        }
    }

    /// Frees used block `g..g+n`: onto its quick list if that takes it, else merged into the
    /// free set.
    ///
    /// # Safety
    /// 1. `c` is a live chunk of this heap;
    /// 2. `g..g+n` is a used block of it (handed out: not free, not on a quick list);
    /// 3. nobody uses it any more.
    #[inline]
    pub(super) unsafe fn free_block(&mut self, c: Chunk, g: Gran, n: Gran) {
        debug_assert!(
            bytes(n) <= self.in_use,
            "free_block: {n} granules at {g} but only {} bytes in use",
            self.in_use
        );
        self.in_use -= bytes(n);
        // SAFETY: `scrub`: (1) live: item 1; (2) a used block is a block of `c`: item 2; (3)
        // item 3. `c.ptr(g)`: live, and `g < frontier <= granules` (item 2).
        unsafe {
            self.scrub(c, g, n);
            vg::take(self.vg_pool, c.ptr(g).as_ptr());
        }
        if self.cfg.quick_reuse && self.quick.admits(n as usize, self.in_use, self.peak) {
            // SAFETY: the pointer is rebuilt from the chunk base; the block is ours again.
            unsafe { self.quick.push(c.ptr(g), n as usize) };
            return;
        }
        // SAFETY: `merge_free`: (1) live and in the block area: items 1 and 2 (blocks tile
        // `first..frontier`); (2) not free and, since the quick list did not take it, on no list:
        // item 2; (3) item 3.
        unsafe { self.merge_free(c, g, n) };
        if self.quick.over(self.in_use, self.peak) {
            self.trim_quick();
        }
    }

    /// The quick lists hold far more than their budget (use fell since they filled): merge a
    /// few cached blocks back, largest first, so that memory coalesces and can go back to the
    /// OS. O(1) per block.
    #[cold]
    pub(super) fn trim_quick(&mut self) {
        for _ in 0..4 {
            // SAFETY: the lists hold only blocks of this live heap.
            let Some((p, n)) = (unsafe { self.quick.pop_any() }) else {
                return;
            };
            if let Ok((c, g)) = self.locate(p, n as Gran) {
                // SAFETY: a cached block is neither used nor free: it goes back now.
                unsafe { self.merge_free(c, g, n as Gran) };
            }
        }
    }

    /// Merges every block on the quick lists into the free set. O(cached blocks x chunks).
    #[cold]
    pub(crate) fn flush(&mut self) {
        for n in 1..=QUICK_MAX {
            // SAFETY: the lists hold only blocks of this live heap.
            while let Some(p) = unsafe { self.quick.pop(n, 1) } {
                // A cached block always lies in a chunk (`check()` verifies it).
                if let Ok((c, g)) = self.locate(p, n as Gran) {
                    // SAFETY: a cached block is neither used nor free: it goes back now.
                    unsafe { self.merge_free(c, g, n as Gran) };
                }
            }
        }
    }

    /// Returns `g..g+n` (no longer used) to the free set, merging with free neighbours or the
    /// frontier. An arena's single-block chunk left empty is given back at once (see
    /// `give_back_tail`): the caller must not use `c` afterwards unless a block remains in it.
    ///
    /// # Safety
    /// 1. `c` is a live chunk of this heap, `n >= 1`, and `g..g+n` lies in its block area
    ///    (`c.first() <= g`, `g + n <= c.frontier()`);
    /// 2. the span is no free block's and on no quick list;
    /// 3. nobody uses it any more.
    pub(super) unsafe fn merge_free(&mut self, c: Chunk, g: Gran, n: Gran) {
        debug_assert!(
            // SAFETY: c is live and g..g+n lies in its block area (contract).
            n >= 1 && unsafe { c.first() <= g && g + n <= c.frontier() && !c.bit(g) },
            "merge_free: {g}+{n} is not a taken span below the frontier"
        );
        // SAFETY: c is live; neighbours are found through boundary bits and their tags.
        unsafe {
            let (start, end) = (g, g + n);
            let frontier = c.frontier();
            let prev = if start > c.first() && c.bit(start - 1) {
                let s = c.footer(start - 1);
                Some((start - s, s))
            } else {
                None
            };
            if end < frontier && c.bit(end) {
                // The next block is free: it absorbs ours (and the previous one, if free),
                // keeping its end, so its index node just moves down.
                let s = c.get(end, Size);
                let (low, ps) = match prev {
                    Some((p, ps)) => {
                        self.take_free(c, p, ps);
                        (p, ps)
                    }
                    None => (start, 0),
                };
                self.shift_free(c, end, s, low, end + s - low);
                self.give_back_inside(c, low, end + s, n.max(s).max(ps));
                return;
            }
            match prev {
                Some((p, ps)) if end == frontier => {
                    self.take_free(c, p, ps);
                    c.set_frontier(p);
                    self.give_back_tail(c);
                }
                Some((p, ps)) => {
                    self.resize_free(c, p, ps, end - p);
                    self.give_back_inside(c, p, end, n.max(ps));
                }
                None if end == frontier => {
                    c.set_frontier(start);
                    self.give_back_tail(c);
                }
                None => {
                    self.add_free(c, start, n);
                    self.give_back_inside(c, start, end, 0);
                }
            }
        }
    }
}
