//! `pthread_atfork` handlers for every [`GlobalHeap`] made fork-safe: before `fork`, the
//! forking thread takes every arena lock of every registered heap, so the child never inherits
//! a lock that a thread which does not exist there held; after `fork`, in the parent and in the
//! child, it releases them. The list and its gate are in `gate`.
//!
//! Prepare handlers run in reverse order of registration, so one registered before ours (a C
//! library's) runs after ours, while this thread holds every lock. If it allocates, the heap
//! sees that this very thread holds the locks (`thread::in_fork`) and uses its home arena
//! without locking, instead of waiting for itself forever. (Without `std` there is no
//! thread-local to tell: such a handler would deadlock; no_std programs do not fork.)

use super::*;

/// The fork-safe heaps and the gate.
static HEAPS: ForkList<GlobalHeap> = ForkList::new();
/// Whether the handlers are registered with `pthread_atfork`.
static HANDLERS: AtomicBool = AtomicBool::new(false);

impl Forked for GlobalHeap {
    fn fork_next(&self) -> &AtomicPtr<Self> {
        &self.fork_next
    }

    fn fork_locks(&self) -> impl Iterator<Item = &SpinLock> {
        self.sync().arenas.iter().map(|a| &a.lock)
    }

    fn set_fork_safe(&self) {
        self.sync().fork_safe.store(true, Release);
    }
}

/// Adds `heap` to the heaps the handlers lock (once per heap: the caller checks), registering
/// the handlers with the first heap.
pub(super) fn register(heap: &'static GlobalHeap) {
    // The provider's handlers first, so its prepare runs after this one (see there).
    crate::region::provider::register_fork_handlers();
    HEAPS.register(heap);
    // After the gate is released: `pthread_atfork` takes libc's fork lock, which a concurrent
    // `fork` holds while its prepare handler waits for the gate.
    if !HANDLERS.swap(true, AcqRel) {
        // The handlers are plain functions that only take and release spin locks of 'static
        // heaps.
        crate::region::os::atfork(prepare, after_fork, after_fork);
    }
}

extern "C" fn prepare() {
    HEAPS.prepare();
    #[cfg(feature = "std")]
    scope::lock_all();
}

extern "C" fn after_fork() {
    #[cfg(feature = "std")]
    scope::unlock_all();
    HEAPS.after();
}
