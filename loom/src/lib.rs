//! loom models of the thread-safe heap's concurrency.
//!
//! The modules below are the crate's own source files (`src/sync/lock.rs`, `remote.rs`,
//! `gate.rs`), compiled here against loom's atomics: each names its atomics, `relax`,
//! `in_fork`/`set_in_fork`, the remote link's read and write and `maybe_const!` through
//! `super`, and this crate root provides loom's versions. What the files do not contain (the
//! heap itself) is modelled by [`Node`] blocks and loom cells that stand for an arena's state,
//! so loom checks that every access to them is ordered by the lock or the stack.
//!
//! Run: `LOOM_MAX_PREEMPTIONS=3 cargo test -p isoheap-loom --release` (`.ci/run` does).

// The library is only the shared files and their loom glue; the models use them.
#![cfg_attr(not(test), allow(dead_code))]

use core::ptr::{NonNull, null_mut};
use loom::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};

/// loom's atomics have no `const` constructor: the shared files' constructors are plain here.
macro_rules! maybe_const {
    ($vis:vis fn $($rest:tt)*) => {
        $vis fn $($rest)*
    };
}

/// A spin-wait's back-off: give loom's scheduler the turn (a spin that never yields would be
/// explored forever).
fn relax(_spins: u32) {
    loom::thread::yield_now();
}

loom::thread_local! {
    static IN_FORK: core::cell::Cell<bool> = core::cell::Cell::new(false);
}

/// As `sync::thread::set_in_fork`.
fn set_in_fork(on: bool) {
    IN_FORK.with(|f| f.set(on));
}

/// As `sync::thread::in_fork`.
fn in_fork() -> bool {
    IN_FORK.with(|f| f.get())
}

/// A model block. Its first field stands for the block's first word (the remote link), as a
/// loom cell: loom checks that each read of a link happens after its write. `data` stands for
/// the rest of the block: its user's last write before the free, the heap's merge after.
#[repr(C)]
pub struct Node {
    next: loom::cell::UnsafeCell<*mut u8>,
    data: loom::cell::UnsafeCell<usize>,
    id: usize,
}

/// Writes a model block's link (as `block::remote_next_set`).
///
/// # Safety
/// `b` points to a live [`Node`], whose link nobody else accesses now.
unsafe fn remote_next_set(b: NonNull<u8>, next: *mut u8) {
    // SAFETY: a live Node (contract); loom checks the exclusive access.
    unsafe { (*b.cast::<Node>().as_ptr()).next.with_mut(|p| *p = next) }
}

/// Reads a model block's link (as `block::remote_next`).
///
/// # Safety
/// `b` points to a live [`Node`] whose link was written.
unsafe fn remote_next(b: NonNull<u8>) -> *mut u8 {
    // SAFETY: a live Node (contract); loom checks the write happened before.
    unsafe { (*b.cast::<Node>().as_ptr()).next.with(|p| *p) }
}

#[path = "../../src/sync/gate.rs"]
mod gate;
#[path = "../../src/sync/lock.rs"]
mod lock;
#[path = "../../src/sync/remote.rs"]
mod remote;

use lock::SpinLock;

#[cfg(test)]
mod models;
