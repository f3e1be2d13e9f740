//! One arena: a single-threaded heap behind a spin lock, plus a lock-free stack of the blocks
//! other threads freed into it while it was busy (drained under the lock).

use super::*;
use crate::block::{remote_layout, remote_next, remote_next_set, set_remote};

/// A `SyncHeap`'s bytes in use across its arenas and the most it ever had in use at once. Every
/// arena operation adds what it changed (one atomic add; a `fetch_max` only when a new peak is
/// reached), so the peak is exact: it is the highest sum the heap reached, not the sum of the
/// arenas' peaks.
pub(super) struct Totals {
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

impl Totals {
    pub(super) const fn new() -> Totals {
        Totals {
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// An arena's bytes in use went from `before` to `after`.
    #[inline]
    pub(super) fn add(&self, before: usize, after: usize) {
        if after > before {
            let now = self.in_use.fetch_add(after - before, Relaxed) + (after - before);
            // A plain load first: the read-modify-write only when a new peak is reached.
            if now > self.peak.load(Relaxed) {
                self.peak.fetch_max(now, Relaxed);
            }
        } else if after < before {
            self.in_use.fetch_sub(before - after, Relaxed);
        }
    }

    /// The most the heap had in use at once.
    pub(super) fn peak(&self) -> usize {
        self.peak.load(Relaxed)
    }
}

/// One arena: a heap of its own behind a lock, plus the blocks other threads freed into it.
pub(super) struct Arena {
    pub(super) lock: SpinLock,
    /// This arena's identity (written into its chunks); 0 until its first use.
    pub(super) id: AtomicUsize,
    pub(super) core: UnsafeCell<HeapCore>,
    /// Blocks freed by threads that could not take the lock: a lock-free stack linked through
    /// the blocks (first word: next block, second word: size in bytes, log2 of the alignment
    /// in its top 6 bits).
    pub(super) remote: AtomicPtr<u8>,
    /// A misuse found while merging deferred frees aborts (the global allocator) instead of
    /// panicking.
    pub(super) abort: bool,
}

/// Stops the program for a misuse found inside the allocator: an abort for the global
/// allocator (which must not unwind), else a panic.
#[cold]
pub(super) fn stop(m: Misuse, abort: bool) -> ! {
    if abort {
        abort_misuse(m)
    }
    crate::api::misuse(m)
}

/// Rounds of trying every arena's lock before a re-entered allocation gives up.
pub(super) const REENTRANT_ROUNDS: usize = 256;

impl Arena {
    pub(super) const fn new(abort: bool) -> Arena {
        Arena {
            abort,
            lock: SpinLock::new(),
            id: AtomicUsize::new(0),
            core: UnsafeCell::new(HeapCore::new(Config {
                arena: true,
                ..Config::DEFAULT
            })),
            remote: AtomicPtr::new(null_mut()),
        }
    }

    /// Runs `f` on the arena's heap, after merging the blocks other threads deferred. If one of
    /// those turns out to be a misuse (checked mode), the rest are still merged, then the program
    /// stops (before `f`).
    ///
    /// What the call changes in the arena's bytes in use is added to `totals`.
    ///
    /// # Safety
    /// The caller holds this arena's lock for the whole call (a panic here unwinds through the
    /// caller's `Held` guard, which releases it).
    pub(super) unsafe fn locked<R>(
        &self,
        totals: &Totals,
        f: impl FnOnce(&mut HeapCore) -> R,
    ) -> R {
        // SAFETY: the lock makes this the only reference to the core.
        let core = unsafe { &mut *self.core.get() };
        let before = core.in_use;
        if core.cfg.owner == 0 {
            let id = crate::region::next_owner();
            core.cfg.owner = id;
            self.id.store(id, Release);
        }
        // Merge what other threads freed meanwhile (a plain load first: the swap is an atomic
        // read-modify-write, too dear for every operation).
        let mut p = if self.remote.load(Relaxed).is_null() {
            null_mut()
        } else {
            self.remote.swap(null_mut(), Acquire)
        };
        let mut bad = None;
        while let Some(b) = NonNull::new(p) {
            // SAFETY: a remote block's record was written by `push_remote`, through a pointer
            // derived from its chunk's base, and published by the Release CAS that the swap
            // above acquired; the block is ours to free now (as its owner gave it up).
            let r = unsafe {
                p = remote_next(b);
                let (size, align) = remote_layout(b);
                core.dealloc_deferred(b, size, align)
            };
            if let Err(Fail::Misuse(m)) = r {
                bad.get_or_insert(m);
            }
        }
        if let Some(m) = bad {
            // A misuse another thread committed, found now (checked mode): stop the program.
            stop(m, self.abort);
        }
        let r = f(core);
        totals.add(before, core.in_use);
        r
    }

    /// Pushes block `b` of `size` bytes onto the remote-free stack. Lock-free.
    ///
    /// # Safety
    /// `b` is a live block of this arena (pointer with its chunk's provenance), at least 16
    /// bytes, that nobody uses any more.
    pub(super) unsafe fn push_remote(&self, b: NonNull<u8>, size: usize, align: usize) {
        // SAFETY: the block was given up by its user (contract) and is at least a granule;
        // nobody else writes it until the arena drains it.
        unsafe { set_remote(b, size, align) };
        let mut head = self.remote.load(Relaxed);
        loop {
            // SAFETY: as above; the link is rewritten before each publication attempt.
            unsafe { remote_next_set(b, head) };
            match self
                .remote
                .compare_exchange_weak(head, b.as_ptr(), Release, Relaxed)
            {
                Ok(_) => return,
                Err(h) => head = h,
            }
        }
    }
}
