//! The arena lock: a test-and-test-and-set spin lock on one `AtomicBool`, and the guard that
//! releases it (also on unwind).

#![forbid(unsafe_code)]

use super::*;

pub(super) struct SpinLock(AtomicBool);

impl SpinLock {
    pub(super) const fn new() -> Self {
        SpinLock(AtomicBool::new(false))
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
            spins += 1;
            if spins < 256 {
                core::hint::spin_loop();
            } else {
                #[cfg(feature = "std")]
                std::thread::yield_now();
                #[cfg(not(feature = "std"))]
                core::hint::spin_loop();
            }
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
}

/// A held [`SpinLock`], released on drop (so a panic under the lock cannot leave it held).
pub(super) struct Held<'a>(&'a SpinLock);

impl Drop for Held<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.unlock();
    }
}
