//! A small process-wide cache of whole mappings that dropped heaps gave back, so that a program
//! that creates and drops heaps at a high rate (a heap per request, per collection) does not
//! pay an `mmap`, an `munmap` and the kernel's page zeroing each time.
//!
//! Lock-free: a fixed array of slots, each an `AtomicPtr` to a cached mapping (null when
//! empty). While a mapping sits in the cache, its first two words hold its length and the
//! number of bytes from its start that were ever written (its dirty prefix); a heap that takes
//! it zeroes nothing up front and treats only the dirty prefix as non-zero. The cache holds at
//! most [`SLOTS`] mappings of at most [`MAX_CACHED`] bytes each, so it pins at most
//! `SLOTS * MAX_CACHED` bytes; [`release_cached`](crate::release_cached) empties it.

use core::ptr::{NonNull, null_mut};
use core::sync::atomic::{AtomicPtr, AtomicUsize, Ordering::*};

/// How many mappings the cache can hold.
pub(crate) const SLOTS: usize = 8;
/// The largest mapping the cache keeps (bigger ones go straight back to the OS).
pub(crate) const MAX_CACHED: usize = 4 << 20;

static CACHE: [AtomicPtr<u8>; SLOTS] = [const { AtomicPtr::new(null_mut()) }; SLOTS];
static HITS: AtomicUsize = AtomicUsize::new(0);

/// A mapping taken from the cache.
pub(crate) struct Cached {
    pub base: NonNull<u8>,
    pub len: usize,
    /// Bytes from `base` that may be non-zero.
    pub dirty: usize,
}

/// Offers a whole mapping to the cache. Returns false if it was not taken (too big, or no
/// free slot): then the caller still owns it and must unmap it.
///
/// # Safety
/// `base..base + len` is a whole live mapping from `mmap::map` that the caller owns and will
/// not touch again if this returns true; `len >= 16`; `dirty <= len`.
pub(crate) unsafe fn put(base: NonNull<u8>, len: usize, dirty: usize) -> bool {
    if len > MAX_CACHED {
        return false;
    }
    // SAFETY: the mapping is ours and at least 16 bytes long, aligned to a page.
    unsafe {
        base.cast::<usize>().write(len);
        base.cast::<usize>().add(1).write(dirty.max(16));
    }
    for slot in &CACHE {
        // Release: the two words written above are visible to whoever takes the slot.
        if slot
            .compare_exchange(null_mut(), base.as_ptr(), Release, Relaxed)
            .is_ok()
        {
            return true;
        }
    }
    false
}

/// Takes a cached mapping of at least `min` and at most `max` bytes whose base is a multiple
/// of `align`, if one is there.
pub(crate) fn take(min: usize, max: usize, align: usize) -> Option<Cached> {
    for slot in &CACHE {
        if slot.load(Relaxed).is_null() {
            continue;
        }
        // Acquire: pairs with the Release in `put`, so the header words are visible.
        let p = slot.swap(null_mut(), Acquire);
        let Some(base) = NonNull::new(p) else {
            continue;
        };
        // SAFETY: a slot only ever holds a mapping whose first two words `put` wrote; the swap
        // made us its only owner.
        let (len, dirty) = unsafe {
            (
                base.cast::<usize>().read(),
                base.cast::<usize>().add(1).read(),
            )
        };
        if len >= min && len <= max && base.addr().get().is_multiple_of(align) {
            HITS.fetch_add(1, Relaxed);
            return Some(Cached { base, len, dirty });
        }
        // Not the right size: put it back (or, if the slot was refilled meanwhile, unmap it).
        // SAFETY: we own the mapping; its header words are still intact.
        if !unsafe { put(base, len, dirty) } {
            // SAFETY: a whole mapping that nobody else can reach.
            unsafe { super::os::unmap(base, len) };
        }
    }
    None
}

/// Unmaps every mapping in the cache; returns how many bytes went back to the OS.
pub(crate) fn release_all() -> usize {
    let mut bytes = 0;
    for slot in &CACHE {
        let p = slot.swap(null_mut(), Acquire);
        if let Some(base) = NonNull::new(p) {
            // SAFETY: we own the mapping now; its first word is its length.
            unsafe {
                let len = base.cast::<usize>().read();
                super::os::unmap(base, len);
                bytes += len;
            }
        }
    }
    bytes
}

/// How many chunk requests the cache has served.
pub(crate) fn hits() -> usize {
    HITS.load(Relaxed)
}
