//! Allocation: the quick lists, first fit over the chunks' indexes in address order, the
//! frontiers, and a new chunk as the last resort.

use super::*;

impl HeapCore {
    /// Allocates `size` bytes aligned to `align` (a power of two). Zero sizes are dangling.
    /// When `zero`, the block reads as zero (only memory handed out before is cleared).
    ///
    /// Expected O(log n + c): a first-fit search of each chunk's index in address order (c
    /// chunks, O(log) of the heap size), O(1) when the index is empty (bump).
    #[inline]
    pub(crate) fn alloc(&mut self, size: usize, align: usize, zero: bool) -> Result<Block, Fail> {
        if size == 0 {
            return Ok(dangling(align));
        }
        if align > MAX_ALIGN {
            return Err(Fail::Unsupported);
        }
        let r = if self.cfg.checked {
            self.alloc_checked(size, align, zero)
        } else {
            self.alloc_block(size, align, zero)
        };
        if let Ok(b) = &r {
            vg::give(&mut self.vg_pool, b.cast::<u8>().as_ptr(), b.len(), zero);
        }
        r
    }

    /// A block of at least `size` bytes (the whole granules), no checked-mode bookkeeping.
    #[inline]
    pub(super) fn alloc_block(
        &mut self,
        size: usize,
        align: usize,
        zero: bool,
    ) -> Result<Block, Fail> {
        let n = granules(size)?;
        if self.in_use + bytes(n) > self.cfg.budget {
            return self.over_budget();
        }
        if n as usize <= QUICK_MAX {
            // SAFETY: the lists hold only blocks of this live heap.
            if let Some(p) = unsafe { self.quick.pop(n as usize, align) } {
                vg::defined(p.as_ptr(), bytes(n));
                if self.cfg.checked {
                    // SAFETY: the block was on a quick list: poisoned past its link word.
                    if let Err(e) = unsafe { self.verify_poison(p, n) } {
                        // Written after it was freed: merge it back (poisoned again) so the
                        // heap stays whole, then report.
                        if let Ok((c, g)) = self.locate(p, n) {
                            // SAFETY: a cached block is neither used nor free.
                            unsafe {
                                self.scrub(c, g, n);
                                self.merge_free(c, g, n);
                            }
                        }
                        return Err(e);
                    }
                }
                self.used(n);
                if zero {
                    // SAFETY: the block is n granules long and now the caller's.
                    unsafe { core::ptr::write_bytes(p.as_ptr(), 0, bytes(n)) };
                }
                return Ok(NonNull::slice_from_raw_parts(p, bytes(n)));
            }
        }
        self.alloc_fit(n, align, zero)
    }

    /// Counts a refusal by the budget.
    #[cold]
    #[inline(never)]
    pub(super) fn over_budget<T>(&mut self) -> Result<T, Fail> {
        self.refused += 1;
        Err(Fail::Budget)
    }

    /// First fit over the free blocks of all chunks in address order; only if none fits, the
    /// frontiers (untouched memory) in address order; then a new chunk.
    #[inline]
    pub(super) fn alloc_fit(&mut self, n: Gran, align: usize, zero: bool) -> Result<Block, Fail> {
        // SAFETY: allocating in a chunk gives no chunk back.
        for c in unsafe { self.chunks_mut() } {
            // SAFETY: a chunk of this heap's list, live.
            if let Some(b) = unsafe { self.fit_in(c, n, align, zero) } {
                return Ok(b);
            }
        }
        // SAFETY: allocating in a chunk gives no chunk back.
        for c in unsafe { self.chunks_mut() } {
            // SAFETY: a chunk of this heap's list, live.
            if let Some(b) = unsafe { self.bump_in(c, n, align, zero) } {
                return Ok(b);
            }
        }
        self.alloc_new_chunk(n, align, zero)
    }

    /// First fit in one chunk's index: the lowest-addressed free block that holds `n` granules
    /// at `align`.
    ///
    /// # Safety
    /// `c` is a live chunk of this heap.
    #[inline]
    pub(super) unsafe fn fit_in(
        &mut self,
        c: Chunk,
        n: Gran,
        align: usize,
        zero: bool,
    ) -> Option<Block> {
        // SAFETY: c is live; every granule touched is found through the index.
        unsafe {
            if c.single() {
                return None;
            }
            if align <= GRANULE {
                let g = if self.binned(n) {
                    bins::fit(c, n).or_else(|| index::first_fit(c, n))?
                } else {
                    index::first_fit(c, n)?
                };
                let s = c.get(g, Size);
                if s > n {
                    self.shift_free(c, g, s, g + n, s - n);
                } else {
                    self.take_free(c, g, s);
                }
                return Some(self.hand_out(c, g, n, zero));
            }
            // Larger alignment: search for room for the block plus the worst padding (so a
            // lower block that happens to be aligned may be passed over), then give the
            // padding in front back to the free set.
            let pad_max = ((align >> GRANULE_SHIFT) - 1) as Gran;
            let want = n.checked_add(pad_max)?;
            let g = if self.binned(want) {
                bins::fit(c, want).or_else(|| index::first_fit(c, want))?
            } else {
                index::first_fit(c, want)?
            };
            let a = self.aligned_granule(c, g, align);
            Some(self.carve(c, g, a, n, zero))
        }
    }

    /// Hands out `a..a+n` from free block `g` (`g <= a`, `a + n <=` its end), giving the
    /// padding before and the tail after back to the free set.
    ///
    /// # Safety
    /// 1. `c` is a live chunk of this heap and `g` an indexed free block of it;
    /// 2. `n >= 1`, `g <= a` and `a + n <= g + size(g)`.
    pub(super) unsafe fn carve(
        &mut self,
        c: Chunk,
        g: Gran,
        a: Gran,
        n: Gran,
        zero: bool,
    ) -> Block {
        debug_assert!(
            g <= a
                // SAFETY: g is a free block of live chunk c (contract).
                && unsafe { c.bit(g) && a as u64 + n as u64 <= g as u64 + c.get(g, Size) as u64 },
            "carve: {a}+{n} is not inside free block {g}"
        );
        // SAFETY: `get`: (1) live, (2) `g` is a free block with its node written: item 1. With
        // `s` its size, invariant 3 says `g - 1` and `g + s` are in no free block.
        // `resize_free` (pad > 0): (1) live; (2) `g` indexed, of size `s`: item 1; (3) `1 <= pad <
        // s` (item 2: `a + n <= g + s`, `n >= 1`), so `g..g+pad` is inside the block; (4) its
        // neighbours are `g - 1` and `a`, handed out below.
        // `add_free` (tail): (1) live, `a + n - g < s`, so the tail is inside the old block below
        // the frontier; (2) `g`'s block now ends at `g + pad <= a`, so the tail is nobody's;
        // (3) its neighbours are `a + n - 1`, handed out below, and `g + s`.
        // `shift_free` (no pad, s > n): (1) `g` indexed, size `s`; (2) `n < s` and
        // `(g + n) + (s - n) == g + s`; (3) `first <= g < g + n`, inside the block; (4) the
        // span starts after `g`, and its neighbours are `g + n - 1`, handed out below, and
        // `g + s`. `take_free` (s == n): (1)-(3) item 1 and `s` read above.
        // `hand_out`: (1) live; (2) `n >= 1` and `a..a+n` lies inside `g`'s old block (item 2),
        // so in `first..frontier`, and the branch above just took it out of the free set.
        unsafe {
            let s = c.get(g, Size);
            let pad = a - g;
            if pad > 0 {
                self.resize_free(c, g, s, pad);
                if s - pad > n {
                    self.add_free(c, a + n, s - pad - n);
                }
            } else if s > n {
                self.shift_free(c, g, s, g + n, s - n);
            } else {
                self.take_free(c, g, s);
            }
            self.hand_out(c, a, n, zero)
        }
    }

    /// Out of memory for an alignment above a granule: the usual search asks for room for the
    /// worst padding, so a free block that holds the request at its actual padding may have
    /// been passed over. Tries each free block of at least `n` granules in address order.
    /// O(k log n) for k candidates; only run before reporting out of memory.
    #[cold]
    pub(super) fn alloc_aligned_exact(
        &mut self,
        n: Gran,
        align: usize,
        zero: bool,
    ) -> Option<Block> {
        // SAFETY: carving a block gives no chunk back.
        for c in unsafe { self.chunks_mut() } {
            // SAFETY: c is a live chunk of this heap; candidates come from the index.
            unsafe {
                if !c.single() {
                    let mut from = c.first();
                    while let Some(g) = index::first_fit_from(c, n, from) {
                        let a = self.aligned_granule(c, g, align);
                        if a as u64 + n as u64 <= g as u64 + c.get(g, Size) as u64 {
                            return Some(self.carve(c, g, a, n, zero));
                        }
                        from = g + 1;
                    }
                }
            }
        }
        None
    }

    /// Out of memory in a heap that bins: the size-class lists are searched for a good fit
    /// (see `bins::fit`), which passes over blocks that would fit but share a class with
    /// smaller ones. Tries every listed block that could hold the request at its actual
    /// padding. O(listed blocks in the classes searched); only run before reporting out of
    /// memory.
    #[cold]
    pub(super) fn alloc_binned_exact(
        &mut self,
        n: Gran,
        align: usize,
        zero: bool,
    ) -> Option<Block> {
        if !self.binned(n) {
            return None;
        }
        let pad_max = ((align.max(GRANULE) >> GRANULE_SHIFT) - 1) as Gran;
        // Classes above this one hold only blocks `bins::fit` would have taken.
        let hi = bins::class_up(n.saturating_add(pad_max).min(BIN_MAX));
        // SAFETY: carving a block gives no chunk back.
        for c in unsafe { self.chunks_mut() } {
            // SAFETY: c is a live chunk of this heap; candidates come from its lists.
            unsafe {
                if c.single() {
                    continue;
                }
                let fits = |g: Gran, s: Gran| {
                    let a = self.aligned_granule(c, g, align);
                    a as u64 + n as u64 <= g as u64 + s as u64
                };
                if let Some(g) = bins::scan(c, bins::class(n), hi, fits) {
                    let a = self.aligned_granule(c, g, align);
                    return Some(self.carve(c, g, a, n, zero));
                }
            }
        }
        None
    }

    /// Cuts `n` granules at `align` from one chunk's frontier, if it has room. O(1).
    ///
    /// # Safety
    /// `c` is a live chunk of this heap.
    #[inline]
    pub(super) unsafe fn bump_in(
        &mut self,
        c: Chunk,
        n: Gran,
        align: usize,
        zero: bool,
    ) -> Option<Block> {
        // SAFETY: c is live; the frontier and what lies above it belong to no block.
        unsafe {
            let f = c.frontier();
            if c.single() && f != c.first() {
                return None;
            }
            if align <= GRANULE {
                if (c.granules() - f) < n {
                    return None;
                }
                c.set_frontier(f + n);
                return Some(self.hand_out(c, f, n, zero));
            }
            let a = self.aligned_granule(c, f, align) as usize;
            if a + n as usize > c.granules() as usize {
                return None;
            }
            let a = a as Gran;
            c.set_frontier(a + n);
            if a > f {
                // The padding's lower neighbour is used (invariant 3), its upper one is the
                // new block: it becomes a free block of its own.
                self.add_free(c, f, a - f);
            }
            Some(self.hand_out(c, a, n, zero))
        }
    }

    /// First fit in one chunk: its index, then its frontier (a chunk made for this request).
    ///
    /// # Safety
    /// `c` is a live chunk of this heap (the one item of `fit_in` and `bump_in`).
    #[inline]
    pub(super) unsafe fn alloc_in(
        &mut self,
        c: Chunk,
        n: Gran,
        align: usize,
        zero: bool,
    ) -> Option<Block> {
        // SAFETY: `fit_in` and `bump_in` ask only that `c` be a live chunk of this heap: this
        // function's contract (and `fit_in` gives no chunk back before `bump_in` runs).
        unsafe {
            self.fit_in(c, n, align, zero)
                .or_else(|| self.bump_in(c, n, align, zero))
        }
    }

    /// The first granule at or after `g` whose address is a multiple of `align`.
    ///
    /// # Safety
    /// `c` is live and `g <= granules`.
    #[inline]
    pub(super) unsafe fn aligned_granule(&self, c: Chunk, g: Gran, align: usize) -> Gran {
        // SAFETY: g is inside the chunk.
        let addr = unsafe { c.ptr(g) }.addr().get();
        let up = (addr.wrapping_add(align - 1) & !(align - 1)).wrapping_sub(addr);
        // Callers compare the result with the chunk size, so saturate instead of wrapping.
        g.saturating_add(u32::try_from(up >> GRANULE_SHIFT).unwrap_or(u32::MAX))
    }

    /// Accounts `g..g+n` as used, zeroes it if asked (only below the clean mark), returns it.
    ///
    /// # Safety
    /// 1. `c` is a live chunk of this heap;
    /// 2. `n >= 1`, `c.first() <= g`, `g + n <= c.frontier()`, and `g..g+n` was just taken from
    ///    the free set or the frontier (nobody's, and now the caller's being served).
    #[inline]
    pub(super) unsafe fn hand_out(&mut self, c: Chunk, g: Gran, n: Gran, zero: bool) -> Block {
        debug_assert!(
            // SAFETY: c is live (contract); only header fields are read.
            n >= 1 && unsafe { c.first() <= g && g + n <= c.frontier() },
            "hand_out: {g}+{n} is not inside the block area below the frontier"
        );
        self.used(n);
        // SAFETY: the span is inside c.
        vg::defined(unsafe { c.ptr(g) }.as_ptr(), bytes(n));
        // SAFETY: the span is inside c and now belongs to the caller being served.
        unsafe {
            let end = g + n;
            let clean = c.clean();
            if zero && g < clean {
                let dirty = end.min(clean) - g;
                core::ptr::write_bytes(c.ptr(g).as_ptr(), 0, bytes(dirty));
            }
            if end > clean {
                c.set_clean(end);
            }
            NonNull::slice_from_raw_parts(c.ptr(g), bytes(n))
        }
    }

    /// Maps a new chunk big enough for `n` granules at `align`, links it and allocates there.
    #[cold]
    #[inline(never)]
    pub(super) fn alloc_new_chunk(
        &mut self,
        n: Gran,
        align: usize,
        zero: bool,
    ) -> Result<Block, Fail> {
        let pad = align.saturating_sub(GRANULE);
        let need = bytes(n).checked_add(pad).ok_or(Fail::Unsupported)?;
        let c = match self.grow_by(need) {
            Ok(c) => c,
            // Out of memory: merge the cached blocks and try once more before giving up, so a
            // failure is that of a fully merged heap. (While the heap can grow, the cached
            // blocks stay cached: they are bounded by the quick lists' budget, and flushing
            // them at every growth costs more than it saves.)
            Err(e) => {
                if self.quick.blocks > 0 {
                    // The retry ends here again (with empty lists) and tries the exact fit
                    // itself if it must: not a second time below.
                    self.flush();
                    return self.alloc_fit(n, align, zero).map_err(|_| e);
                }
                if let Some(b) = self.alloc_binned_exact(n, align, zero) {
                    return Ok(b);
                }
                if align > GRANULE {
                    return self.alloc_aligned_exact(n, align, zero).ok_or(e);
                }
                return Err(e);
            }
        };
        // SAFETY: the chunk was just made for this request and linked in.
        unsafe { self.alloc_in(c, n, align, zero) }.ok_or(Fail::Unsupported)
    }
}
