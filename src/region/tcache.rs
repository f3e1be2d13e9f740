//! Each thread's cache of free provider chunks, in front of the chunk provider's lock: a heap
//! made and dropped on a thread (a heap per collection, a heap per request) takes its chunk
//! from here and gives it back here, with no lock, no buddy split or merge and no system call.
//!
//! Per thread, per chunk size up to [`MAX_CACHED`] (64 KiB), a short stack of chunks with their
//! dirty prefix, at most [`MAX_BYTES`] (128 KiB) in all. A chunk that does not fit goes to the
//! provider as before. To the provider a cached chunk is still carved (its segment stays, and
//! its slice entries say "no chunk", so no lookup finds it). The cache goes back to the
//! provider when its thread exits (a thread-local destructor) and when the thread calls
//! `release_cached`.
//!
//! Only heaps of one thread use it (`Heap`, not `SyncHeap`'s arenas or the global heap's scope
//! heaps: `Config::thread_cache`): the global allocator
//! must not use a thread-local with a destructor (on targets without
//! `__cxa_thread_atexit_impl`, registering one allocates), and an arena's chunk may be asked
//! for from a signal handler. A signal handler that makes a `Heap` while its thread is inside
//! the cache finds it busy and goes to the provider: the cache is never entered twice.

extern crate std;

use super::provider;
use core::cell::{Cell, UnsafeCell};
use core::ptr::NonNull;

/// Chunk sizes cached: `MIN_CARVE << k` for `k < ORDERS` (512 B to 64 KiB).
const ORDERS: usize = 8;
/// The largest chunk a thread caches.
const MAX_CACHED: usize = provider::MIN_CARVE << (ORDERS - 1);
/// Chunks per size.
const DEPTH: usize = 8;
/// Bytes a thread keeps at most.
const MAX_BYTES: usize = 128 << 10;

/// The chunks one thread keeps.
struct Stacks {
    len: [usize; ORDERS],
    /// (base, dirty prefix) per chunk.
    slots: [[(*mut u8, usize); DEPTH]; ORDERS],
    bytes: usize,
}

struct Cache {
    /// Set while this thread is inside the cache (a signal handler that interrupts it must not
    /// enter it again).
    busy: Cell<bool>,
    stacks: UnsafeCell<Stacks>,
}

impl Drop for Cache {
    fn drop(&mut self) {
        // The thread is exiting: its chunks go back to the provider.
        flush_into(self.stacks.get_mut());
    }
}

std::thread_local! {
    static CACHE: Cache = const {
        Cache {
            busy: Cell::new(false),
            stacks: UnsafeCell::new(Stacks {
                len: [0; ORDERS],
                slots: [[(core::ptr::null_mut(), 0); DEPTH]; ORDERS],
                bytes: 0,
            }),
        }
    };
}

/// Runs `f` on this thread's cache; `None` (running nothing) if the thread has no cache (it is
/// exiting) or is inside it already (a signal handler interrupted it there).
fn with<R>(f: impl FnOnce(&mut Stacks) -> R) -> Option<R> {
    CACHE
        .try_with(|c| {
            if c.busy.replace(true) {
                return None;
            }
            // The flag must be in memory before the stacks change: a signal handler may run
            // between any two instructions of `f`.
            core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
            // SAFETY: `busy` was clear and is set until after `f`, and `f` calls nothing that
            // enters the cache: this is the only reference to the stacks (a thread-local, so
            // no other thread has one).
            let r = f(unsafe { &mut *c.stacks.get() });
            core::sync::atomic::compiler_fence(core::sync::atomic::Ordering::SeqCst);
            c.busy.set(false);
            Some(r)
        })
        .ok()
        .flatten()
}

/// The cache's size index for a chunk of `len` bytes, if it caches that size.
#[inline]
fn order(len: usize) -> Option<usize> {
    debug_assert!(
        len.is_power_of_two() && len >= provider::MIN_CARVE,
        "tcache: {len} is not a provider chunk size"
    );
    (len <= MAX_CACHED)
        .then(|| (len.trailing_zeros() - provider::MIN_CARVE.trailing_zeros()) as usize)
}

/// A chunk of `len` bytes as [`provider::carve`] gives it (a power of two, aligned to itself,
/// and its dirty prefix): from this thread's cache if it holds one, else from the provider.
pub(crate) fn carve(len: usize) -> Option<(NonNull<u8>, usize)> {
    if let Some(k) = order(len)
        && let Some(Some(got)) = with(|s| {
            let n = s.len[k].checked_sub(1)?;
            s.len[k] = n;
            s.bytes -= len;
            let (p, dirty) = s.slots[k][n];
            // SAFETY: only chunks from the provider are cached, never null.
            Some((unsafe { NonNull::new_unchecked(p) }, dirty))
        })
    {
        return Some(got);
    }
    provider::carve(len)
}

/// Gives back a chunk from [`carve`] (or [`provider::carve`]) as [`provider::uncarve`] does:
/// to this thread's cache if it has room, else to the provider. `unpublish`: make it
/// unfindable first (its slice entries say "no chunk"); a heap that is being dropped, whose
/// identity no lookup can match any more, leaves them (the chunk's next heap or the provider
/// rewrites them): one store per 512 B saved.
///
/// # Safety
/// As for [`provider::uncarve`]; and if not `unpublish`, the identity the chunk was published
/// with is never used again.
pub(crate) unsafe fn uncarve(base: NonNull<u8>, len: usize, dirty: usize, unpublish: bool) {
    if let Some(k) = order(len) {
        // As the provider does: whatever memcheck thought of the blocks in it, the next heap
        // writes its header there.
        crate::vg::undefined(base.as_ptr(), len);
        if unpublish {
            // SAFETY: forwarded contract; the chunk is nobody's now.
            unsafe { provider::forget(base, len) };
        }
        let kept = with(|s| {
            if s.len[k] == DEPTH || s.bytes + len > MAX_BYTES {
                return false;
            }
            s.slots[k][s.len[k]] = (base.as_ptr(), dirty.min(len));
            s.len[k] += 1;
            s.bytes += len;
            true
        });
        if kept == Some(true) {
            return;
        }
    }
    // SAFETY: forwarded contract.
    unsafe { provider::uncarve(base, len, dirty) }
}

/// Gives this thread's cached chunks to the provider (`release_cached`).
pub(crate) fn flush() {
    let _ = with(flush_into);
}

fn flush_into(s: &mut Stacks) {
    for k in 0..ORDERS {
        for &(p, dirty) in &s.slots[k][..s.len[k]] {
            // SAFETY: a chunk the provider carved, cached here since its heap gave it back:
            // nobody else reads or writes it, and it leaves the cache now.
            unsafe {
                provider::uncarve(NonNull::new_unchecked(p), provider::MIN_CARVE << k, dirty)
            };
        }
        s.len[k] = 0;
    }
    s.bytes = 0;
}

/// Bytes this thread's cache holds (tests).
#[cfg(test)]
pub(crate) fn cached_bytes() -> usize {
    with(|s| s.bytes).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_given_back_is_taken_again_from_the_thread() {
        flush();
        let (p, _) = carve(4096).unwrap();
        // SAFETY: carved just above, unused.
        unsafe { p.as_ptr().write_bytes(0xa5, 100) };
        // SAFETY: carved just above, given back once, unused after.
        unsafe { uncarve(p, 4096, 100, true) };
        assert_eq!(cached_bytes(), 4096);
        let (q, dirty) = carve(4096).unwrap();
        assert_eq!(q, p, "the cached chunk comes back first");
        assert_eq!(dirty, 100, "with the dirty prefix it was given back with");
        assert_eq!(cached_bytes(), 0);
        // SAFETY: as above.
        unsafe { uncarve(q, 4096, 100, true) };
        flush();
        assert_eq!(cached_bytes(), 0);
    }

    #[test]
    fn the_cache_is_bounded() {
        flush();
        let chunks: std::vec::Vec<_> = (0..64).map(|_| carve(MAX_CACHED).unwrap().0).collect();
        for &p in &chunks {
            // SAFETY: each carved above, given back once.
            unsafe { uncarve(p, MAX_CACHED, 64, true) };
            assert!(cached_bytes() <= MAX_BYTES);
        }
        assert_eq!(cached_bytes(), MAX_BYTES);
        flush();
    }

    #[test]
    fn a_busy_cache_is_not_entered_again() {
        // What a signal handler that interrupts the thread inside the cache sees.
        let inner = with(|_| with(|_| ()));
        assert_eq!(inner, Some(None));
        assert!(with(|_| ()).is_some(), "the cache is free again afterwards");
    }
}
