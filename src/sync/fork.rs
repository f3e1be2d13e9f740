//! `pthread_atfork` handlers: lock every arena of the registered heap before `fork`, unlock in
//! parent and child after.

use super::SyncHeap;
use core::sync::atomic::{AtomicPtr, Ordering::*};

static HEAP: AtomicPtr<SyncHeap> = AtomicPtr::new(core::ptr::null_mut());

pub(super) fn register(heap: &'static SyncHeap) {
    HEAP.store((heap as *const SyncHeap).cast_mut(), Release);
    // The handlers are plain functions that only take and release spin locks of a 'static heap.
    crate::region::os::atfork(prepare, after_fork, after_fork);
}

fn heap() -> Option<&'static SyncHeap> {
    // SAFETY: only a &'static SyncHeap is ever stored.
    unsafe { HEAP.load(Acquire).as_ref() }
}

extern "C" fn prepare() {
    if let Some(h) = heap() {
        for a in &h.arenas {
            a.lock.lock();
        }
    }
}

extern "C" fn after_fork() {
    if let Some(h) = heap() {
        for a in &h.arenas {
            a.lock.unlock();
        }
    }
}
