//! The fork gate: the list of fork-safe heaps and the lock that `fork`'s handlers hold from
//! `prepare` to `after` (see `fork`, which registers them with `pthread_atfork`).
//!
//! - `prepare` takes the gate, marks this thread as forking (`set_in_fork`), then every lock
//!   of every listed heap, always in list order (two forking threads take turns at the gate).
//! - `after` releases the same locks, then the gate: the list cannot grow between the two,
//!   since `register` holds the gate too, so the heaps unlocked are the heaps locked.
//! - The list is linked through the heaps (`Forked::fork_next`), never unlinked: the heaps are
//!   `'static`.
//!
//! This file is also compiled by the loom models (`loom/`), with loom's atomics and their own
//! `set_in_fork`.

use super::*;

/// A heap that `fork`'s handlers lock.
pub(super) trait Forked: Sized + Sync + 'static {
    /// The link to the heap registered before this one.
    fn fork_next(&self) -> &AtomicPtr<Self>;
    /// Every lock of the heap, always in the same order.
    fn fork_locks(&self) -> impl Iterator<Item = &SpinLock>;
    /// The heap is now locked by `prepare`: its operations must tell a forking thread's
    /// allocation (which may use it unlocked) from another thread's (which waits).
    fn set_fork_safe(&self);
}

/// The fork-safe heaps, newest first, and the gate.
pub(super) struct ForkList<T: Forked> {
    heaps: AtomicPtr<T>,
    gate: SpinLock,
}

impl<T: Forked> ForkList<T> {
    maybe_const! {
        pub(super) fn new() -> Self {
            ForkList {
                heaps: AtomicPtr::new(null_mut()),
                gate: SpinLock::new(),
            }
        }
    }

    /// Adds `heap` (once per heap: the caller checks).
    pub(super) fn register(&self, heap: &'static T) {
        let _gate = self.gate.hold();
        let me = (heap as *const T).cast_mut();
        // Under the gate nobody else changes the list: a plain load and store would do, but
        // the list is read by `heaps` without the gate (by `prepare` only after taking it).
        heap.fork_next().store(self.heaps.load(Acquire), Relaxed);
        self.heaps.store(me, Release);
        heap.set_fork_safe();
    }

    /// The registered heaps, newest first.
    fn heaps(&self) -> impl Iterator<Item = &'static T> {
        let mut cur = self.heaps.load(Acquire);
        core::iter::from_fn(move || {
            // SAFETY: only `&'static T`s are ever linked (`register`), and never unlinked;
            // the Release store that linked each one is seen by the Acquire load that found it.
            let h: &'static T = unsafe { cur.as_ref()? };
            cur = h.fork_next().load(Acquire);
            Some(h)
        })
    }

    /// Before `fork`: the gate, then every lock of every heap.
    pub(super) fn prepare(&self) {
        // First, so that an allocation on this thread while the locks are taken (an
        // earlier-registered atfork handler's, after this one) sees that this thread holds them.
        self.gate.lock();
        set_in_fork(true);
        for h in self.heaps() {
            for l in h.fork_locks() {
                l.lock();
            }
        }
    }

    /// After `fork`, in the parent and in the child: every lock `prepare` took, then the gate.
    pub(super) fn after(&self) {
        for h in self.heaps() {
            for l in h.fork_locks() {
                l.unlock();
            }
        }
        set_in_fork(false);
        self.gate.unlock();
    }
}
