//! The arena lock: a test-and-test-and-set spin lock on one `AtomicBool`, the guard that
//! releases it (also on unwind), and the rule every arena operation uses to pick a lock.
//!
//! This file is also compiled by the loom models (`loom/`), with loom's atomics: it names its
//! atomics, `relax` (the back-off), `in_fork` and `maybe_const!` through `super`, and the models
//! provide their own.

#![forbid(unsafe_code)]

use super::*;

pub(super) struct SpinLock(AtomicBool);

impl SpinLock {
    maybe_const! {
        pub(super) fn new() -> Self {
            SpinLock(AtomicBool::new(false))
        }
    }

    #[inline]
    pub(super) fn try_lock(&self) -> bool {
        !self.0.load(Relaxed)
            && self
                .0
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
    }

    pub(super) fn lock(&self) {
        let mut spins = 0u32;
        while !self.try_lock() {
            spins = spins.saturating_add(1);
            relax(spins);
        }
    }

    #[inline]
    pub(super) fn unlock(&self) {
        self.0.store(false, Release);
    }

    /// Takes the lock if it is free; the guard releases it, also when a panic unwinds.
    #[inline]
    pub(super) fn try_hold(&self) -> Option<Held<'_>> {
        // `then`, not `then_some`: a guard built for a lock not taken would release it on drop.
        self.try_lock().then(|| Held(self))
    }

    /// Waits for the lock; the guard releases it, also when a panic unwinds.
    #[inline]
    pub(super) fn hold(&self) -> Held<'_> {
        self.lock();
        Held(self)
    }

    /// Takes the lock, waiting for it, unless this thread holds it already because it is
    /// inside `fork` (`fork_safe` heaps only, see `gate`): then `None`, and the caller uses what
    /// the lock guards as is (the forking thread is the only one running it).
    #[inline]
    pub(super) fn hold_unless_forking(&self, fork_safe: bool) -> Option<Held<'_>> {
        if let Some(held) = self.try_hold() {
            return Some(held);
        }
        if fork_safe && in_fork() {
            return None;
        }
        Some(self.hold())
    }
}

/// A held [`SpinLock`], released on drop (so a panic under the lock cannot leave it held).
pub(super) struct Held<'a>(&'a SpinLock);

impl Drop for Held<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.unlock();
    }
}

/// The lock-picking rule of an arena operation, over `n` locks (`lock(i)`): the first free one
/// from `home`, each tried in turn, for `rounds` rounds. `None` if none was free: a re-entered
/// call (see `thread::Inside`) then gives up, as the lock it would wait for may be its own;
/// any other call waits for `home`'s.
pub(super) fn hold_first<'a>(
    n: usize,
    home: usize,
    rounds: usize,
    lock: impl Fn(usize) -> &'a SpinLock,
) -> Option<(usize, Held<'a>)> {
    debug_assert!(
        home < n && rounds > 0,
        "hold_first: home {home} of {n} locks, {rounds} rounds"
    );
    for _ in 0..rounds {
        for k in 0..n {
            let i = (home + k) % n;
            if let Some(held) = lock(i).try_hold() {
                return Some((i, held));
            }
        }
        relax(1);
    }
    None
}
