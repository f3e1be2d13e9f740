//! Per-thread state: the re-entry depth (is this thread already inside the allocator?) and
//! the thread's home arena. Both are const-initialised thread-locals without destructors, so
//! reading them never allocates.

#![forbid(unsafe_code)]

use super::*;

#[cfg(feature = "std")]
std::thread_local! {
    /// How many calls into a `SyncHeap` this thread is inside (const-initialised, no
    /// destructor: reading it never allocates).
    static DEPTH: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

#[cfg(feature = "std")]
std::thread_local! {
    /// Set while this thread is inside `fork`, between the prepare handler (which took every
    /// arena lock of every fork-safe heap) and the parent's or child's handler (which releases
    /// them). Const-initialised, no destructor.
    static IN_FORK: core::cell::Cell<bool> = const { core::cell::Cell::new(false) };
}

/// Marks this thread as holding every fork-safe heap's locks (`fork`'s prepare handler), or no
/// longer. Without `std` there is no thread-local: a no-op.
pub(super) fn set_in_fork(on: bool) {
    #[cfg(feature = "std")]
    let _ = IN_FORK.try_with(|f| f.set(on));
    #[cfg(not(feature = "std"))]
    let _ = on;
}

/// Does this thread hold every fork-safe heap's locks (inside `fork`, after the prepare
/// handler)? Always false without `std`.
#[inline]
pub(super) fn in_fork() -> bool {
    #[cfg(feature = "std")]
    return IN_FORK.try_with(|f| f.get()).unwrap_or(false);
    #[cfg(not(feature = "std"))]
    false
}

/// This thread is inside the allocator for the guard's life. `reentrant`: it already was (a
/// signal handler that interrupted an allocation, or an allocation from inside one): then it
/// must never wait for a lock, which may be the one it holds. Without `std` there is no
/// thread-local to tell, and `reentrant` is false.
pub(super) struct Inside {
    pub(super) reentrant: bool,
}

impl Inside {
    #[inline]
    pub(super) fn enter() -> Inside {
        #[cfg(feature = "std")]
        let reentrant = DEPTH
            .try_with(|d| {
                let v = d.get();
                d.set(v + 1);
                v > 0
            })
            .unwrap_or(false);
        #[cfg(not(feature = "std"))]
        let reentrant = false;
        // A signal handler runs on this thread between any two instructions: the raised depth
        // must be in memory before anything the guard protects (a lock taken, a cache list
        // changed) happens.
        core::sync::atomic::compiler_fence(SeqCst);
        Inside { reentrant }
    }
}

impl Drop for Inside {
    #[inline]
    fn drop(&mut self) {
        // Everything the guard protected is done before the depth falls (see `enter`).
        core::sync::atomic::compiler_fence(SeqCst);
        #[cfg(feature = "std")]
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// The arena a thread starts at. With `std`: handed out round-robin at the thread's first
/// allocation and kept in a thread-local (const-initialised, no destructor: reading it never
/// allocates), so the first `ARENAS` threads get an arena each. Without `std`, or while the
/// thread-local is gone (thread exit): a hash of where the thread's stack is.
#[inline]
pub(super) fn home() -> usize {
    #[cfg(feature = "std")]
    {
        use core::cell::Cell;
        std::thread_local! {
            static HOME: Cell<usize> = const { Cell::new(usize::MAX) };
        }
        static NEXT_HOME: AtomicUsize = AtomicUsize::new(0);
        if let Ok(h) = HOME.try_with(|h| {
            let v = h.get();
            if v != usize::MAX {
                return v;
            }
            let v = NEXT_HOME.fetch_add(1, Relaxed) % ARENAS;
            h.set(v);
            v
        }) {
            return h;
        }
    }
    let probe = 0u8;
    let a = (&raw const probe).addr() >> 16;
    (a.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % ARENAS
}
