//! A process-wide map from an address to the chunk that holds it, for arena chunks (aligned to
//! [`ALIGN`]): O(1), lock-free to read. It answers "which arena owns this pointer" for the
//! thread-safe heap, and "is this pointer ours at all" for every heap's ownership check.
//!
//! Two levels over the 48-bit user address space in units of `ALIGN`: a static first level of
//! pointers to second-level tables, each mapped from the OS the first time a chunk lands in its
//! range and never freed (96 KiB each; a process with a few GiB of chunks has a handful). The
//! entries hold the chunk base pointers themselves (with their provenance), so metadata is never
//! reached through a caller's pointer, and beside each the chunk's owner and end, so "whose is
//! this address" is answered from the table alone ([`owner_of`]), without reading a chunk
//! header that another thread may be giving back.

use core::ptr::{NonNull, null_mut};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::*};

/// log2 of the arena chunk alignment.
#[cfg(not(miri))]
pub(crate) const ALIGN_SHIFT: u32 = 22;
#[cfg(miri)]
pub(crate) const ALIGN_SHIFT: u32 = 20;
/// Alignment (and size) of arena chunks: 4 MiB (1 MiB under Miri).
pub(crate) const ALIGN: usize = 1 << ALIGN_SHIFT;

const ADDR_BITS: u32 = 48;
const L2_BITS: u32 = 12;
const L1_BITS: u32 = ADDR_BITS - ALIGN_SHIFT - L2_BITS;
const L2_LEN: usize = 1 << L2_BITS;
const L2_BYTES: usize = core::mem::size_of::<Leaf>();

/// A second-level table: per `ALIGN` window, its [`Window`] entry.
#[repr(C)]
struct Leaf {
    w: [Window; L2_LEN],
}

/// One `ALIGN` window: the chunk base recorded there and, for a chunk mapped on its own, its
/// owner and end address (a segment's chunks have theirs in the segment's slice table). The
/// three words are side by side, so a lookup reads one cache line (as three arrays, their
/// entries lay 32 KiB apart and competed for one set of the L1 cache).
#[repr(C)]
struct Window {
    base: AtomicPtr<u8>,
    owner: AtomicUsize,
    end: AtomicUsize,
}

static L1: [AtomicPtr<Leaf>; 1 << L1_BITS] = [const { AtomicPtr::new(null_mut()) }; 1 << L1_BITS];

fn split(addr: usize) -> Option<(usize, usize)> {
    if addr >> ADDR_BITS != 0 {
        return None;
    }
    let unit = addr >> ALIGN_SHIFT;
    Some((unit >> L2_BITS, unit & (L2_LEN - 1)))
}

/// The second-level table for `i1`, mapping it if `create`.
#[inline]
fn leaf(i1: usize, create: bool) -> Option<&'static Leaf> {
    let p = L1[i1].load(Acquire);
    if let Some(p) = NonNull::new(p) {
        // SAFETY: published leaves are zero-initialised mappings of L2_BYTES that are never
        // unmapped; atomics are valid as all zeroes.
        return Some(unsafe { p.as_ref() });
    }
    if !create {
        return None;
    }
    new_leaf(i1)
}

/// Maps and publishes the second-level table for `i1` (or returns the one another thread
/// published first).
#[cold]
fn new_leaf(i1: usize) -> Option<&'static Leaf> {
    let len = L2_BYTES.next_multiple_of(super::os::page_size());
    let fresh = super::os::map(len).ok()?.cast::<Leaf>();
    match L1[i1].compare_exchange(null_mut(), fresh.as_ptr(), AcqRel, Acquire) {
        // SAFETY: we just published our zeroed mapping; it lives for the rest of the process.
        Ok(_) => Some(unsafe { fresh.as_ref() }),
        Err(theirs) => {
            // SAFETY: our mapping was never published; another thread's won.
            unsafe { super::os::unmap(fresh.cast(), len) };
            // SAFETY: as above for a published leaf.
            NonNull::new(theirs).map(|p| unsafe { p.as_ref() })
        }
    }
}

/// A fresh identity for a heap whose chunks are paged: even and never 0 (odd identities name
/// the global heap's scope heaps, see `sync::scope`). The provider's slice table keeps 56 bits
/// of an identity: a process would have to make 2^55 heaps before two could look alike there.
pub(crate) fn next_owner() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(2);
    NEXT.fetch_add(2, Relaxed)
}

/// Records `base` (an `ALIGN`-aligned chunk base) as the chunk for every `ALIGN` window of
/// its `len` bytes, owned by `owner` (0 for a segment: see `provider`). Returns false
/// (recording nothing) if the table could not be extended (the OS refused 96 KiB).
pub(crate) fn insert(base: NonNull<u8>, len: usize, owner: usize) -> bool {
    let end = base.addr().get().wrapping_add(len);
    let windows = len.div_ceil(ALIGN).max(1);
    for k in 0..windows {
        let Some((i1, i2)) = split(base.addr().get().wrapping_add(k << ALIGN_SHIFT)) else {
            remove(base, k << ALIGN_SHIFT);
            return false;
        };
        match leaf(i1, true) {
            Some(l) => {
                l.w[i2].owner.store(owner, Relaxed);
                l.w[i2].end.store(end, Relaxed);
                // Release: the chunk header, owner and end written before are visible to
                // whoever finds the base.
                l.w[i2].base.store(base.as_ptr(), Release);
            }
            None => {
                remove(base, k << ALIGN_SHIFT);
                return false;
            }
        }
    }
    true
}

/// Forgets the chunk of `len` bytes at `base`.
pub(crate) fn remove(base: NonNull<u8>, len: usize) {
    for k in 0..len.div_ceil(ALIGN).max(1) {
        if let Some((i1, i2)) = split(base.addr().get().wrapping_add(k << ALIGN_SHIFT))
            && let Some(l) = leaf(i1, false)
        {
            l.w[i2].base.store(null_mut(), Release);
            l.w[i2].owner.store(0, Relaxed);
            l.w[i2].end.store(0, Relaxed);
        }
    }
}

/// The chunk base recorded for the `ALIGN` window holding `addr`, if any (tests).
#[cfg(test)]
pub(crate) fn get(addr: usize) -> Option<NonNull<u8>> {
    let (i1, i2) = split(addr)?;
    NonNull::new(leaf(i1, false)?.w[i2].base.load(Acquire))
}

/// The window entry for `addr`: the base recorded there and, for a chunk mapped on its own,
/// its owner if `addr` is below its end (0 otherwise). Reads the table only. Racing with a
/// thread that records or forgets a chunk in this window, the owner may be the old or the new
/// chunk's (or 0): never that of a chunk that was not in the window during the call.
#[inline]
pub(crate) fn owner_of(addr: usize) -> Option<(NonNull<u8>, usize)> {
    let (i1, i2) = split(addr)?;
    let l = leaf(i1, false)?;
    let w = &l.w[i2];
    let base = NonNull::new(w.base.load(Acquire))?;
    let owner = w.owner.load(Relaxed);
    let below_end = addr < w.end.load(Relaxed);
    Some((base, if below_end { owner } else { 0 }))
}
