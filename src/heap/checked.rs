//! Checked mode as a layer: the plain paths call into it at clear points (after a block is
//! handed out, before a block is taken back, when a quick-list block is reused). It owns the
//! misuse messages, the seal (tag and canary) at the end of every block, and the verification
//! of a pointer and layout given back.

use super::*;
use crate::block::{TAG, canary_intact, seal, unseal};

/// Misuse messages (after "isoheap: pointer 0x...").
pub(crate) const FOREIGN: &str = "does not belong to this heap (a foreign pointer)";
pub(super) const NOT_A_BLOCK: &str = "is not the start of a live block of this heap (freed already, an interior pointer, or never allocated here)";
pub(super) const DOUBLE_FREE: &str = "is free already (double free)";
pub(super) const INTERIOR: &str =
    "points inside a live block, not at its start (an interior pointer)";
pub(super) const BAD_SIZE: &str = "was given with a size that does not match its block";
pub(super) const BAD_ALIGN: &str = "was given with an alignment that does not match its block";
pub(super) const BAD_TAG: &str =
    "has a corrupted tag at the end of its block (a write out of bounds)";
pub(super) const BAD_CANARY: &str =
    "has its canary after the end overwritten (a write past the end of the block)";
pub(super) const BAD_NEIGHBOUR: &str =
    "lies next to a free block whose tag is corrupted (a write after free or out of bounds)";
pub(super) const WRITE_AFTER_FREE: &str = "was written after it was freed (a use after free)";

/// Checked mode: what freed memory is filled with (up to `POISON_MAX` bytes of each block).
pub(crate) const POISON: u8 = 0xDF;
/// Freed blocks are poisoned up to this many bytes (whole large blocks would commit memory the
/// program may never have touched).
pub(super) const POISON_MAX: usize = 64 << 10;
/// A block reused from the quick lists has this many of its bytes checked for poison.
pub(super) const POISON_CHECK: usize = 256;

impl HeapCore {
    /// Checked mode: a block with room for the tag, marked used and sealed; its length is
    /// exactly `size` (so the only size `deallocate` may pass is `size`).
    #[inline(never)]
    pub(super) fn alloc_checked(
        &mut self,
        size: usize,
        align: usize,
        zero: bool,
    ) -> Result<Block, Fail> {
        let b = self.alloc_block(size.checked_add(TAG).ok_or(Fail::Unsupported)?, align, zero)?;
        let p = b.cast::<u8>();
        let n = (b.len() >> GRANULE_SHIFT) as Gran;
        let (c, g) = self.locate(p, n)?;
        // SAFETY: g..g+n is the block just handed out in live chunk c.
        unsafe {
            c.mark_used(g, n, true);
            seal(c, g, n, size, align);
        }
        Ok(NonNull::slice_from_raw_parts(p, size))
    }

    /// Checked mode: a block taken from a quick list must still hold its poison (or zeroes,
    /// when wiping) after the link word; else the program wrote to it after freeing it.
    ///
    /// # Safety
    /// `p` is a block of `n` granules of this heap that was on a quick list.
    #[inline]
    pub(super) unsafe fn verify_poison(&self, p: NonNull<u8>, n: Gran) -> Result<(), Fail> {
        let want = u64::from_ne_bytes([if self.cfg.zero_on_free { 0 } else { POISON }; 8]);
        // Whole words after the link word (blocks are granules, so 8-byte aligned).
        let words = bytes(n).min(POISON_CHECK) / 8;
        // SAFETY: the block is at least `words` words long, aligned, and ours (contract).
        let tail =
            unsafe { core::slice::from_raw_parts(p.as_ptr().cast::<u64>().add(1), words - 1) };
        if tail.iter().fold(0, |acc, &w| acc | (w ^ want)) == 0 {
            Ok(())
        } else {
            misuse(p.addr().get(), WRITE_AFTER_FREE)
        }
    }

    /// Checked mode: is there a live block starting at granule `g` that was allocated with
    /// exactly `size` bytes at `align`, with its tag and canary intact and well-formed free
    /// neighbours? Returns its granules. O(1) plus O(n / 64) to find its end in the bitmap.
    ///
    /// `deferred`: the block's first granule was overwritten by a deferred free (another
    /// thread's, see `sync`): its bytes are not checked, and a one-granule block (whose tag was
    /// there) is checked only for its granule count.
    ///
    /// # Safety
    /// `c` is a live checked chunk of this heap, `g` a granule of its block area.
    #[inline(never)]
    pub(super) unsafe fn verify(
        &self,
        c: Chunk,
        g: Gran,
        addr: usize,
        size: usize,
        align: usize,
        deferred: bool,
    ) -> Result<Gran, Fail> {
        // SAFETY: c is live and checked; every granule read lies below its frontier.
        unsafe {
            if !c.used_bit(Used::Start, g) {
                return Err(self.not_used(c, g, addr));
            }
            let frontier = c.frontier();
            let e = c.next_used_bit(Used::End, g, frontier);
            if e >= frontier {
                return misuse(addr, BAD_TAG);
            }
            let n = e + 1 - g;
            if deferred && n == 1 {
                if granules(size.saturating_add(TAG)) != Ok(1) || !is_aligned(addr, align) {
                    return misuse(addr, BAD_SIZE);
                }
                self.check_neighbours(c, g, n, addr)?;
                return Ok(n);
            }
            let (true_size, true_align) = unseal(c, g, n).ok_or_else(|| corrupt(addr, BAD_TAG))?;
            if !canary_intact(c, g, n, true_size, deferred) {
                return misuse(addr, BAD_CANARY);
            }
            if size != true_size {
                return mismatch(addr, BAD_SIZE, size, true_size);
            }
            if align != true_align {
                return mismatch(addr, BAD_ALIGN, align, true_align);
            }
            self.check_neighbours(c, g, n, addr)?;
            Ok(n)
        }
    }

    /// Checked mode: why granule `g` does not start a used block.
    ///
    /// # Safety
    /// As for `verify`.
    #[cold]
    pub(super) unsafe fn not_used(&self, c: Chunk, g: Gran, addr: usize) -> Fail {
        // SAFETY: c is live; floor returns index nodes, whose sizes are readable; the quick
        // lists hold blocks of this heap; bitmaps are read below the frontier.
        unsafe {
            let mut cached = false;
            self.quick.for_each(|p, _| cached |= p.addr().get() == addr);
            let in_free = index::floor(c, g).is_some_and(|f| f + c.get(f, Size) > g)
                || (self.bins_on() && in_listed(c, g));
            if cached || in_free {
                return corrupt(addr, DOUBLE_FREE);
            }
            let first = c.first();
            let mut s = g;
            while s > first && !c.used_bit(Used::Start, s) {
                s -= 1;
            }
            if c.used_bit(Used::Start, s) && c.next_used_bit(Used::End, s, c.frontier()) >= g {
                return corrupt(addr, INTERIOR);
            }
            corrupt(addr, NOT_A_BLOCK)
        }
    }

    /// Checked mode: the free blocks on either side of `g..g+n`, if any, have consistent tags
    /// (node size, footer and boundary bits agree), so merging with them cannot spread a
    /// corruption. O(1).
    ///
    /// # Safety
    /// `g..g+n` is a used block of live checked chunk `c`.
    pub(super) unsafe fn check_neighbours(
        &self,
        c: Chunk,
        g: Gran,
        n: Gran,
        addr: usize,
    ) -> Result<(), Fail> {
        // SAFETY: every granule read lies in first..frontier, checked before it is read.
        unsafe {
            let (first, frontier) = (c.first(), c.frontier());
            if g > first && c.bit(g - 1) {
                let s = c.footer(g - 1);
                if s == 0 || s > g - first || c.get(g - s, Size) != s || !c.bit(g - s) {
                    return misuse(addr, BAD_NEIGHBOUR);
                }
            }
            let end = g + n;
            if end < frontier && c.bit(end) {
                let s = c.get(end, Size);
                if s == 0 || s > frontier - end || c.footer(end + s - 1) != s || !c.bit(end + s - 1)
                {
                    return misuse(addr, BAD_NEIGHBOUR);
                }
            }
        }
        Ok(())
    }
}

/// A detected misuse, as an error for the trait edge to report (it panics once the heap's
/// `&mut` state is released, so a panic hook may use the heap).
/// A misuse with the value given and the one the block has.
#[cold]
#[inline(never)]
pub(super) fn mismatch<T>(
    addr: usize,
    what: &'static str,
    given: usize,
    allocated: usize,
) -> Result<T, Fail> {
    Err(Fail::Misuse(Misuse {
        addr,
        what,
        values: Some((given, allocated)),
    }))
}

/// The misuse itself (for `ok_or_else` and friends).
#[cold]
pub(super) fn corrupt(addr: usize, what: &'static str) -> Fail {
    Fail::Misuse(Misuse {
        addr,
        what,
        values: None,
    })
}

#[cold]
#[inline(never)]
pub(super) fn misuse<T>(addr: usize, what: &'static str) -> Result<T, Fail> {
    Err(Fail::Misuse(Misuse {
        addr,
        what,
        values: None,
    }))
}

/// Checked mode: does granule `g` (below the frontier, starting no used block) lie in a free
/// block on a size-class list? The nearest boundary bit at or below `g` is then that block's
/// first granule (or `g` is its last): a block starting there must reach `g`, with its end bit
/// where its size says. (At the last granule of an earlier free block instead, the size read
/// there is the block's poison or zeroes, never a size that ends on a boundary bit past `g`
/// but before the frontier by chance of more than a corrupted heap's.)
///
/// # Safety
/// `c` is a live chunk of a checked heap and `g < c.frontier()`.
#[cold]
unsafe fn in_listed(c: Chunk, g: Gran) -> bool {
    // SAFETY: every granule read lies in first..frontier of the live chunk (bounds checked
    // before each read).
    unsafe {
        let Some(b) = c.prev_bit(c.first(), g) else {
            return false;
        };
        if b == g {
            return true;
        }
        let s = c.get(b, Size) as u64;
        let end = b as u64 + s;
        end > g as u64 && end <= c.frontier() as u64 && c.bit((end - 1) as Gran)
    }
}
