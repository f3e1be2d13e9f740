//! `pthread_atfork` handlers for every [`GlobalHeap`] made fork-safe. Before `fork`, the forking
//! thread takes every arena lock of every registered heap (always in the same order, so two
//! forking threads cannot deadlock), so the child never inherits a lock that a thread which
//! does not exist there held; after `fork`, in the parent and in the child, it releases them.
//!
//! - The heaps are kept in a lock-free list (linked through `GlobalHeap::fork_next`, never
//!   unlinked: the heaps are `'static`), and the handlers are registered once, for all of them.
//! - Prepare handlers run in reverse order of registration, so one registered before ours (a C
//!   library's) runs after ours, while this thread holds every lock. If it allocates, the heap
//!   sees that this very thread holds the locks (`thread::in_fork`) and uses its home arena
//!   without locking, instead of waiting for itself forever. (Without `std` there is no
//!   thread-local to tell: such a handler would deadlock; no_std programs do not fork.)

use super::*;

/// The registered heaps, newest first.
static HEAPS: AtomicPtr<GlobalHeap> = AtomicPtr::new(core::ptr::null_mut());
/// Whether the handlers are registered with `pthread_atfork`.
static HANDLERS: AtomicBool = AtomicBool::new(false);
/// Held from `prepare` to `after_fork`, and by `register`: the list cannot change between the
/// locking and the unlocking of one fork (so the same heaps are unlocked that were locked), and
/// two threads forking at once take turns.
static GATE: SpinLock = SpinLock::new();

/// Adds `heap` to the heaps the handlers lock (once per heap: the caller checks), registering
/// the handlers with the first heap.
pub(super) fn register(heap: &'static GlobalHeap) {
    {
        let _gate = GATE.hold();
        let me = (heap as *const GlobalHeap).cast_mut();
        let mut head = HEAPS.load(Acquire);
        loop {
            heap.fork_next.store(head, Relaxed);
            match HEAPS.compare_exchange_weak(head, me, AcqRel, Acquire) {
                Ok(_) => break,
                Err(h) => head = h,
            }
        }
        heap.heap.fork_safe.store(true, Release);
    }
    // Outside the gate: `pthread_atfork` takes libc's fork lock, which a concurrent `fork`
    // holds while its prepare handler waits for the gate.
    if !HANDLERS.swap(true, AcqRel) {
        // The handlers are plain functions that only take and release spin locks of 'static
        // heaps.
        crate::region::os::atfork(prepare, after_fork, after_fork);
    }
}

/// The registered heaps, newest first.
fn heaps() -> impl Iterator<Item = &'static GlobalHeap> {
    // SAFETY: only `&'static GlobalHeap`s are ever linked, and never unlinked.
    let mut cur = unsafe { HEAPS.load(Acquire).as_ref() };
    core::iter::from_fn(move || {
        let h = cur?;
        // SAFETY: as above.
        cur = unsafe { h.fork_next.load(Acquire).as_ref() };
        Some(h)
    })
}

extern "C" fn prepare() {
    // First, so that an allocation while the locks are being taken (none is expected) or after
    // (an earlier-registered handler's) sees that this thread holds them.
    GATE.lock();
    set_in_fork(true);
    for h in heaps() {
        for a in &h.heap.arenas {
            a.lock.lock();
        }
    }
}

extern "C" fn after_fork() {
    for h in heaps() {
        for a in &h.heap.arenas {
            a.lock.unlock();
        }
    }
    set_in_fork(false);
    GATE.unlock();
}
