//! Resizing: grow in place into a free successor or the frontier, else move; shrink in
//! place, giving the tail back.

use super::*;
use crate::block::{TAG, seal};

impl HeapCore {
    /// Grows a block, in place when the space behind it is free or frontier, else by moving.
    /// O(1) plus expected O(log n) index work in place; O(size) when it moves. A `new` below
    /// `old` is refused (`Unsupported`) without touching the block.
    ///
    /// # Safety
    /// 1. `ptr` is a live block of this heap of `old` bytes (any size between the one requested
    ///    and the length returned);
    /// 2. it was allocated with alignment `old_align`;
    /// 3. once this returns `Ok`, `ptr` is not used again (the block may have moved and the
    ///    old one been freed).
    pub(crate) unsafe fn grow(
        &mut self,
        ptr: NonNull<u8>,
        (old, old_align): (usize, usize),
        (new, align): (usize, usize),
        zero: bool,
    ) -> Result<Block, Fail> {
        if new < old {
            // Outside the trait's contract; refused without touching the block.
            return Err(Fail::Unsupported);
        }
        if old == 0 {
            return self.alloc(new, align, zero);
        }
        if align > MAX_ALIGN {
            return Err(Fail::Unsupported);
        }
        if let Some(b) = self.same_granules(ptr, old, new, align) {
            if zero {
                // SAFETY: `old..b.len()` is inside the caller's block: item 1 makes `ptr` a
                // block this heap handed out, which spans whole granules (the length returned
                // then) with the provenance of its chunk, and `b.len()` is its granules' end.
                unsafe { core::ptr::write_bytes(ptr.as_ptr().add(old), 0, b.len() - old) };
            }
            vg::resize(self.vg_pool, ptr.as_ptr(), old, new, zero);
            return Ok(b);
        }
        let (c, g, n_old) = self.find(ptr, old, old_align)?;
        let n_new = granules(self.inner(new)?)?;
        // In place the block grows by the difference; a move needs even more at its peak.
        if self.in_use + bytes(n_new) - bytes(n_old.min(n_new)) > self.cfg.budget {
            return self.over_budget();
        }
        if is_aligned(ptr.addr().get(), align) {
            // SAFETY: g..g+n_old is the caller's block in c.
            if unsafe { self.extend_in_place(c, g, n_old, n_new) } {
                // SAFETY: bytes old..n_new granules are inside the caller's (grown) block.
                unsafe {
                    vg::defined(c.ptr(g + n_old).as_ptr(), bytes(n_new - n_old));
                    settle_tail(c, g, old, n_new, zero);
                    vg::resize(self.vg_pool, ptr.as_ptr(), old, new, zero);
                }
                // SAFETY: g..g+n_new is the caller's block in c.
                return Ok(unsafe { self.resized(c, g, n_old, n_new, new, align) });
            }
        }
        // A small step (at most a quarter of the old size) is the shape of appends, which
        // come again: such a block moves with headroom. Larger steps (doubling vectors, a
        // resize to a new size) move exactly.
        let b = if new - old <= old / 4 {
            self.alloc_moved(new, n_new, align, zero)?
        } else {
            self.alloc(new, align, zero)?
        };
        // SAFETY: the two blocks are distinct live blocks; old bytes are readable.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), b.cast::<u8>().as_ptr(), old);
            self.retire(c, g, n_old);
        }
        Ok(b)
    }

    /// The new home of a block that grows by moving, by a small step (an append): `new`
    /// bytes (`n` granules) at `align`, placed with headroom behind it when the heap bins
    /// (see [`room`]). Room for `n + room(n)` granules is cut from the memory the heap has (a
    /// free block or a frontier: never a new chunk, never the quick lists), then the extra
    /// granules go straight back to the free set, merged with what follows, so the next small
    /// grow of this block finds its successor free and extends in place. Nothing is hidden or
    /// reserved: the headroom is an ordinary free block that any allocation may take, and the
    /// caller's block is exactly what `alloc` would have given. Else (over the budget, or no
    /// room that large) a plain allocation.
    fn alloc_moved(
        &mut self,
        new: usize,
        n: Gran,
        align: usize,
        zero: bool,
    ) -> Result<Block, Fail> {
        let h = room(n);
        if h == 0 || !self.bins_on() || self.in_use + bytes(n + h) > self.cfg.budget {
            return self.alloc(new, align, zero);
        }
        let peak = self.peak;
        let Some((c, g)) = self.alloc_spare(n + h, align, zero) else {
            return self.alloc(new, align, zero);
        };
        // The headroom was never the caller's: the peak counts only what was handed out
        // (restored before the merge below, which weighs free memory against the peak).
        self.in_use -= bytes(h);
        self.peak = peak.max(self.in_use);
        // SAFETY: `g..g+n+h` was just handed out in live chunk `c`, and nobody uses it yet:
        // `scrub` and `merge_free` (1) live, the tail inside the block area; (2) handed out, so
        // no free block's and on no quick list; (3) unused. `mark_used`/`seal`: `c` is checked
        // (checked heaps only), `g..g+n` a used block of it with `new + TAG <= bytes(n) < new +
        // TAG + GRANULE` (`n` is `granules(inner(new))`, see `grow`).
        unsafe {
            self.scrub(c, g + n, h);
            self.merge_free(c, g + n, h);
            let p = c.ptr(g);
            let b = if self.cfg.checked {
                c.mark_used(g, n, true);
                seal(c, g, n, new, align);
                NonNull::slice_from_raw_parts(p, new)
            } else {
                NonNull::slice_from_raw_parts(p, bytes(n))
            };
            vg::give(&mut self.vg_pool, p.as_ptr(), b.len(), zero);
            Ok(b)
        }
    }

    /// `n` granules at `align` from the memory the heap has: first fit over the chunks' free
    /// blocks, then their frontiers (as `alloc_fit`, without mapping a chunk or the
    /// out-of-memory search). The block is handed out (counted in `in_use`), without checked
    /// marks and unknown to Valgrind: the caller finishes it.
    fn alloc_spare(&mut self, n: Gran, align: usize, zero: bool) -> Option<(Chunk, Gran)> {
        let mut found = None;
        // SAFETY: allocating in a chunk gives no chunk back.
        for c in unsafe { self.chunks_mut() } {
            // SAFETY: a chunk of this heap's list, live.
            if let Some(b) = unsafe { self.fit_in(c, n, align, zero) } {
                found = Some((c, b));
                break;
            }
        }
        if found.is_none() {
            // SAFETY: as above.
            for c in unsafe { self.chunks_mut() } {
                // SAFETY: a chunk of this heap's list, live.
                if let Some(b) = unsafe { self.bump_in(c, n, align, zero) } {
                    found = Some((c, b));
                    break;
                }
            }
        }
        let (c, b) = found?;
        // SAFETY: live chunk; the block was just cut from it, so its granule is in the block
        // area.
        let g = unsafe { c.granule_of(b.cast::<u8>().addr().get()) };
        debug_assert!(g.is_some(), "alloc_spare: a block outside its chunk");
        g.map(|g| (c, g))
    }

    /// A resize that stays inside the block's last granule, in a heap that is not checked,
    /// changes nothing in the heap: the block as it is (whole granules), without looking it up.
    /// (So a foreign pointer goes unnoticed there, as in every allocator without checks; any
    /// resize that changes the heap looks the block up first.) `None` when the resize needs
    /// the heap.
    #[inline]
    fn same_granules(
        &self,
        ptr: NonNull<u8>,
        old: usize,
        new: usize,
        align: usize,
    ) -> Option<Block> {
        debug_assert!(old >= 1 && new >= 1, "same_granules: a zero size");
        let n = (new - 1) >> GRANULE_SHIFT;
        (!self.cfg.checked
            && n == (old - 1) >> GRANULE_SHIFT
            && is_aligned(ptr.addr().get(), align))
        .then(|| NonNull::slice_from_raw_parts(ptr, (n + 1) << GRANULE_SHIFT))
    }

    /// Bytes a block of `size` caller bytes needs: `size`, plus the tag in checked mode.
    #[inline]
    pub(super) fn inner(&self, size: usize) -> Result<usize, Fail> {
        if self.cfg.checked {
            size.checked_add(TAG).ok_or(Fail::Unsupported)
        } else {
            Ok(size)
        }
    }

    /// After block `g` was resized in place from `n_old` to `n_new` granules: moves its
    /// checked-mode marks and reseals it; returns what the caller gets.
    ///
    /// # Safety
    /// `g..g+n_new` is now the caller's block in live chunk `c` (and was `g..g+n_old`).
    #[inline]
    pub(super) unsafe fn resized(
        &mut self,
        c: Chunk,
        g: Gran,
        n_old: Gran,
        n_new: Gran,
        size: usize,
        align: usize,
    ) -> Block {
        // SAFETY: g..g+n_new is inside c (contract).
        unsafe {
            if self.cfg.checked {
                c.mark_used(g, n_old, false);
                c.mark_used(g, n_new, true);
                seal(c, g, n_new, size, align);
                return NonNull::slice_from_raw_parts(c.ptr(g), size);
            }
            NonNull::slice_from_raw_parts(c.ptr(g), bytes(n_new))
        }
    }

    /// Tries to make block `g..g+n_old` span `n_new >= n_old` granules without moving it.
    ///
    /// # Safety
    /// `g..g+n_old` is a used block of live chunk `c`.
    pub(super) unsafe fn extend_in_place(
        &mut self,
        c: Chunk,
        g: Gran,
        n_old: Gran,
        n_new: Gran,
    ) -> bool {
        debug_assert!(
            // SAFETY: c is live (contract); only header fields are read.
            n_new >= n_old && n_old >= 1 && unsafe { g + n_old <= c.frontier() },
            "extend_in_place: block {g}+{n_old} cannot grow to {n_new} granules"
        );
        let need = n_new - n_old;
        if need == 0 {
            return true;
        }
        // SAFETY: c is live; the block after ours is found by its boundary bit.
        unsafe {
            let end = g + n_old;
            if end == c.frontier() {
                if c.granules() - end < need {
                    return false;
                }
                c.set_frontier(end + need);
                self.used(need);
                // The clean mark is raised by `settle_tail`, which first zeroes what needs it.
                return true;
            }
            if !c.bit(end) {
                return false;
            }
            let s = c.get(end, Size);
            if s < need {
                return false;
            }
            if s > need {
                self.shift_free(c, end, s, end + need, s - need);
            } else {
                self.take_free(c, end, s);
            }
            self.used(need);
            true
        }
    }

    /// Shrinks a block in place, giving the tail back (merged with what follows); moves only
    /// when the block is not aligned to `align`. Expected O(log n). A `new` above `old` is
    /// refused (`Unsupported`) without touching the block.
    ///
    /// # Safety
    /// 1. `ptr` is a live block of this heap of `old` bytes (any size between the one requested
    ///    and the length returned);
    /// 2. it was allocated with alignment `old_align`;
    /// 3. once this returns `Ok`, `ptr` is not used again (the block may have moved, or been
    ///    freed for `new == 0`).
    pub(crate) unsafe fn shrink(
        &mut self,
        ptr: NonNull<u8>,
        (old, old_align): (usize, usize),
        (new, align): (usize, usize),
    ) -> Result<Block, Fail> {
        if new > old {
            // Outside the trait's contract; refused without touching the block.
            return Err(Fail::Unsupported);
        }
        if align > MAX_ALIGN {
            return Err(Fail::Unsupported);
        }
        if new == 0 {
            // SAFETY: `dealloc`: (1) `ptr` was returned by this heap for `old` bytes at
            // `old_align`: items 1 and 2; (2) on `Ok` the caller does not use it again (item 3),
            // and on `Err` (a misuse, reported before anything changed) nothing was freed.
            unsafe { self.dealloc(ptr, old, old_align)? };
            return Ok(dangling(align));
        }
        if let Some(b) = self.same_granules(ptr, old, new, align) {
            vg::resize(self.vg_pool, ptr.as_ptr(), old, new, false);
            return Ok(b);
        }
        let (c, g, n_old) = self.find(ptr, old, old_align)?;
        let n_new = granules(self.inner(new)?)?;
        if !is_aligned(ptr.addr().get(), align) {
            let b = self.alloc(new, align, false)?;
            // SAFETY: distinct live blocks (the old one was found above); `new` bytes of the
            // old one are readable.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr.as_ptr(), b.cast::<u8>().as_ptr(), new);
                self.retire(c, g, n_old);
            }
            return Ok(b);
        }
        vg::resize(self.vg_pool, ptr.as_ptr(), old, new, false);
        if n_new < n_old {
            self.in_use -= bytes(n_old - n_new);
            // SAFETY: the tail is part of the caller's block, which it gives up.
            unsafe {
                self.scrub(c, g + n_new, n_old - n_new);
                // Valgrind: the tail is no block's now (as a freed block is).
                vg::noaccess(c.ptr(g + n_new).as_ptr(), bytes(n_old - n_new));
                self.merge_free(c, g + n_new, n_old - n_new);
            }
        }
        // SAFETY: g..g+n_new is the caller's block in c.
        Ok(unsafe { self.resized(c, g, n_old, n_new, new, align) })
    }
}

/// After a block at `g` grew in place to `n` granules: if `zero`, zeroes bytes
/// `old..bytes(n)` (skipping granules above the clean mark, which read as zero already); in any
/// case raises the clean mark over the block.
///
/// # Safety
/// `g..g+n` is a used block of live chunk `c` whose first `old` bytes are to be kept.
pub(super) unsafe fn settle_tail(c: Chunk, g: Gran, old: usize, n: Gran, zero: bool) {
    // SAFETY: all writes are inside the block.
    unsafe {
        let end = g + n;
        let clean_byte = bytes(c.clean().max(g)) - bytes(g);
        let stop = bytes(n).min(clean_byte);
        if zero && old < stop {
            core::ptr::write_bytes(c.ptr(g).as_ptr().add(old), 0, stop - old);
        }
        if end > c.clean() {
            c.set_clean(end);
        }
    }
}

/// Headroom behind a block of `n` granules that grows by moving by a small step (see
/// `alloc_moved`): half its size, for blocks of up to `BIN_MAX` granules (64 KiB). A string
/// appended to a few bytes at a time then moves about once per half again of its size while
/// its headroom stays free, instead of whenever a reused block sits behind it; the headroom is
/// free memory meanwhile (it shows as free in `stats()` and `map()`).
#[inline]
fn room(n: Gran) -> Gran {
    if n > BIN_MAX { 0 } else { n.div_ceil(2) }
}
