//! The thread-safe heap: [`SyncHeap`] (`Send + Sync`, `&SyncHeap` is an allocator),
//! [`SharedHeap`] (an owned, cloneable handle, feature `std`) and [`GlobalHeap`] (for
//! `#[global_allocator]`).
//!
//! Design, for threads that mostly do not contend:
//! - [`ARENAS`] arenas, each a single-threaded heap (`HeapCore`) behind its own spin lock. A
//!   thread gets a home arena at its first allocation (round-robin, kept in a thread-local) and
//!   takes the first arena from there whose lock is free, so two threads rarely wait for each
//!   other.
//! - Arena chunks come from the chunk provider (the first 64 KiB; then doubling, then mappings
//!   of their own) and are recorded in the process-wide page map, so the arena that owns a block
//!   is found from the block's address in O(1), without any lock.
//! - A block freed by a thread that cannot take its arena's lock at once (another thread is in
//!   it) is pushed onto that arena's lock-free *remote free* list; the arena merges the list the
//!   next time anyone holds its lock. So a cross-thread free never waits.
//!
//! The lock is a test-and-test-and-set spin lock on one `AtomicBool`: it cannot allocate, cannot
//! panic and needs no OS support (so the global allocator cannot re-enter itself through it, and
//! it works in `no_std`). Critical sections are short (one allocator operation, O(log n)); after
//! a few hundred spins a waiter yields the CPU (with `std`).

use crate::api::{AllocError, edge};
use crate::error::{CheckError, Fail, Misuse};
use crate::heap::FOREIGN;
use crate::heap::{Block, Config, HeapCore};
use crate::stats::Stats;
use core::alloc::Layout;
use core::cell::UnsafeCell;
use core::fmt;
use core::ptr::{NonNull, null_mut};
use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering::*};

/// Which way a resize was asked to go: `grow`/`shrink` refuse the other direction (outside
/// their contract), `realloc` takes either.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resize {
    Grow,
    Shrink,
    Either,
}

/// Number of arenas in a [`SyncHeap`].
pub const ARENAS: usize = 8;

/// `const fn` here; a plain `fn` in the loom models (`loom/`), whose atomics have no `const`
/// constructor. The files the models share (`lock`, `remote`, `gate`) declare constructors
/// through it.
macro_rules! maybe_const {
    ($vis:vis fn $($rest:tt)*) => {
        $vis const fn $($rest)*
    };
}

/// A spin-wait's back-off, after `spins` failed tries: the CPU's spin hint, then (with `std`)
/// the rest of the time slice. (The loom models yield to the model's scheduler instead.)
#[inline]
fn relax(spins: u32) {
    if spins < 256 {
        core::hint::spin_loop();
    } else {
        #[cfg(feature = "std")]
        std::thread::yield_now();
        #[cfg(not(feature = "std"))]
        core::hint::spin_loop();
    }
}

mod arena;
#[cfg(feature = "std")]
mod cache;
mod fork;
mod gate;
mod global;
mod lock;
mod remote;
#[cfg(feature = "std")]
mod scope;
mod thread;

use crate::block::{remote_next, remote_next_set};
use arena::*;
#[cfg(feature = "std")]
pub use cache::THREAD_CACHE_BYTES;
use gate::*;
pub use global::GlobalHeap;
use global::*;
use lock::*;
use remote::*;
#[cfg(feature = "std")]
pub use scope::Scope;
use thread::*;

#[cfg(feature = "std")]
extern crate std;

/// A heap that any number of threads can use at once: `Send + Sync`, `&SyncHeap` implements
/// `Allocator`. See the module docs for how threads avoid contending.
///
/// ```
/// use isoheap::SyncHeap;
/// use allocator_api2::vec::Vec;
///
/// let heap = SyncHeap::new();
/// std::thread::scope(|s| {
///     for t in 0..4u64 {
///         let heap = &heap;
///         s.spawn(move || {
///             let mut v: Vec<u64, &SyncHeap> = Vec::new_in(heap);
///             v.extend(0..10_000 * t);
///             assert_eq!(v.len() as u64, 10_000 * t);
///         });
///     }
/// });
/// heap.check().unwrap();
/// assert_eq!(heap.stats().in_use, 0);
/// ```
pub struct SyncHeap {
    arenas: [Arena; ARENAS],
    /// Bytes in use across the arenas and the most ever in use at once (`stats().peak_in_use`).
    totals: Totals,
    /// Made fork-safe (a `GlobalHeap`'s, see `fork`): inside `fork` the forking thread holds
    /// every arena lock.
    fork_safe: AtomicBool,
    /// Checked mode (see [`with_checked`](Self::with_checked)).
    checked: bool,
}

// SAFETY: every arena's core is reached only under its lock (or, for `remote` and `id`,
// through atomics); chunks are owned by the SyncHeap and can be used from any thread.
unsafe impl Sync for SyncHeap {}
// SAFETY: as above; moving the SyncHeap moves ownership of all its chunks.
unsafe impl Send for SyncHeap {}

/// Runs `f` on an arena's heap marked as re-entered for this call if `reentrant` (see
/// `Config::reentrant`: its growth then never waits for the chunk provider's lock).
#[inline]
fn as_reentrant<R>(c: &mut HeapCore, reentrant: bool, f: impl FnOnce(&mut HeapCore) -> R) -> R {
    c.cfg.reentrant = reentrant;
    let r = f(c);
    c.cfg.reentrant = false;
    r
}

impl Default for SyncHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncHeap {
    /// An empty heap. `const`: it maps nothing until first used. Checked mode follows the
    /// build (on with debug assertions or the `checked` feature); to choose it, see
    /// [`with_checked`](Self::with_checked).
    ///
    /// ```
    /// static HEAP: isoheap::SyncHeap = isoheap::SyncHeap::new();
    /// let b = allocator_api2::boxed::Box::new_in(5u32, &HEAP);
    /// # let _ = b;
    /// ```
    pub const fn new() -> SyncHeap {
        SyncHeap::with(false, crate::heap::CHECKED_DEFAULT)
    }

    /// An empty heap in checked mode (`true`) or not (`false`), whatever the build: a debug
    /// build that wants the unchecked speed (or a release build that wants the checks) says so
    /// here. See the README's checked-mode table for what checked mode detects.
    ///
    /// ```
    /// use isoheap::SyncHeap;
    /// static FAST: SyncHeap = SyncHeap::with_checked(false);
    /// static SAFE: SyncHeap = SyncHeap::with_checked(true);
    /// assert!(!FAST.is_checked());
    /// assert!(SAFE.is_checked());
    /// ```
    pub const fn with_checked(on: bool) -> SyncHeap {
        SyncHeap::with(false, on)
    }

    /// The global allocator's heap: a misuse found later (in a deferred free) aborts.
    const fn for_global(checked: bool) -> SyncHeap {
        SyncHeap::with(true, checked)
    }

    const fn with(abort: bool, checked: bool) -> SyncHeap {
        SyncHeap {
            arenas: [const { Arena::new(false) }; ARENAS],
            totals: Totals::new(),
            fork_safe: AtomicBool::new(false),
            checked,
        }
        .arenas_with(abort, checked)
    }

    /// Sets every arena's `abort` and checked mode (a `const` loop: arrays of non-`Copy` values
    /// cannot be built from a closure in a `const fn`).
    const fn arenas_with(mut self, abort: bool, checked: bool) -> SyncHeap {
        let mut i = 0;
        while i < ARENAS {
            self.arenas[i].abort = abort;
            self.arenas[i].core.get_mut().cfg.checked = checked;
            i += 1;
        }
        self
    }

    /// Runs `f` in the first arena (from this thread's home) whose lock is free, or waits for
    /// the home arena. Re-entered (see `Inside`), it never waits for one lock (it may be the one
    /// this thread holds): it keeps trying every arena for a while, then gives up (`None`).
    fn with_any<R>(&self, reentrant: bool, f: impl FnOnce(&mut HeapCore) -> R) -> Option<R> {
        let home = home();
        let rounds = if reentrant { REENTRANT_ROUNDS } else { 1 };
        if let Some((i, _held)) = hold_first(ARENAS, home, rounds, |i| &self.arenas[i].lock) {
            // SAFETY: we hold the arena's lock until after the call.
            return Some(unsafe {
                self.arenas[i].locked(&self.totals, |c| as_reentrant(c, reentrant, f))
            });
        }
        if reentrant {
            return None;
        }
        let a = &self.arenas[home];
        let _held = self.lock(a);
        // SAFETY: we hold a's lock until after the call (or, inside `fork`, this thread holds
        // it already).
        Some(unsafe { a.locked(&self.totals, f) })
    }

    /// Takes `a`'s lock, waiting for it; `None` when this thread holds it already because it is
    /// inside `fork` (see `fork`: an atfork handler that allocates), and may use `a` as is.
    #[inline]
    fn lock<'a>(&self, a: &'a Arena) -> Option<Held<'a>> {
        a.lock.hold_unless_forking(self.fork_safe.load(Relaxed))
    }

    /// The arena that owns the block at `addr` and the block's pointer rebuilt from its
    /// chunk's base (for provenance), or a misuse if no arena of this heap owns it. O(1).
    fn owner(&self, addr: usize) -> Result<(&Arena, NonNull<u8>), Fail> {
        let misuse = Err(Fail::Misuse(Misuse {
            addr,
            what: FOREIGN,
            values: None,
        }));
        let Some((c, owner)) = crate::block::Chunk::paged_at(addr) else {
            return misuse;
        };
        let base = c.base();
        match self.arenas.iter().find(|a| a.id.load(Acquire) == owner) {
            Some(a) => Ok((
                a,
                base.with_addr(core::num::NonZeroUsize::new(addr).unwrap_or(base.addr())),
            )),
            None => misuse,
        }
    }

    pub(crate) fn alloc_raw(&self, layout: Layout, zero: bool) -> Result<Block, Fail> {
        let inside = Inside::enter();
        self.with_any(inside.reentrant, |c| {
            c.alloc(layout.size(), layout.align(), zero)
        })
        .unwrap_or(Err(Fail::Os))
    }

    /// # Safety
    /// As for `Heap::deallocate`, on this heap: 1. `ptr` was returned by this heap for `layout`;
    /// 2. it is not used afterwards.
    pub(crate) unsafe fn dealloc_raw(&self, ptr: NonNull<u8>, layout: Layout) -> Result<(), Fail> {
        let (size, align) = (layout.size(), layout.align());
        if size == 0 {
            return Ok(());
        }
        let inside = Inside::enter();
        let (a, p) = self.owner(ptr.addr().get())?;
        if self.checked && !inside.reentrant {
            // Checked mode verifies every free before anything is written to the block, so it
            // waits for the owner's lock (a deferral writes into the block first).
            let _held = self.lock(a);
            // SAFETY: we hold a's lock until after the call; the caller's contract.
            return unsafe { a.locked(&self.totals, |c| c.dealloc(p, size, align)) };
        }
        // A block of this thread's home arena is freed at once if the lock is free; a block of
        // another arena (allocated by another thread, typically) goes onto that arena's remote
        // list, so this thread never touches the other arena's lock or state.
        if core::ptr::eq(a, &self.arenas[home()])
            && let Some(_held) = a.lock.try_hold()
        {
            // SAFETY: we hold a's lock until after the call; the caller's contract.
            return unsafe { a.locked(&self.totals, |c| c.dealloc(p, size, align)) };
        }
        // SAFETY: p is the caller's live block, rebuilt with its chunk's provenance.
        unsafe { a.push_remote(&self.totals, p, size, align) };
        Ok(())
    }

    /// # Safety
    /// As for `Heap::grow`/`Heap::shrink`, on this heap:
    /// 1. `ptr` is a live block of this heap allocated with `old`;
    /// 2. `new.size()` is at least (`Resize::Grow`) or at most (`Resize::Shrink`) `old.size()`;
    /// 3. on success `ptr` is not used again.
    pub(crate) unsafe fn resize_raw(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
        zero: bool,
        dir: Resize,
    ) -> Result<Block, Fail> {
        match dir {
            Resize::Grow if new.size() < old.size() => return Err(Fail::Unsupported),
            Resize::Shrink if new.size() > old.size() => return Err(Fail::Unsupported),
            _ => {}
        }
        if old.size() == 0 {
            return self.alloc_raw(new, zero);
        }
        let inside = Inside::enter();
        let (a, p) = self.owner(ptr.addr().get())?;
        let held = if inside.reentrant {
            // Re-entered: the owner's lock may be the one this thread holds, so never wait for
            // it. If it is busy, move the block: a new one from any free arena, the bytes
            // copied, the old one freed through the owner's deferred list.
            let Some(held) = a.lock.try_hold().map(Some) else {
                let b = self
                    .with_any(true, |c| c.alloc(new.size(), new.align(), zero))
                    .unwrap_or(Err(Fail::Os))?;
                // SAFETY: the old block is the caller's (contract) and the new one is distinct
                // and at least as long as what is copied; then the old one is given up.
                unsafe {
                    let keep = old.size().min(new.size());
                    core::ptr::copy_nonoverlapping(p.as_ptr(), b.cast::<u8>().as_ptr(), keep);
                    a.push_remote(&self.totals, p, old.size(), old.align());
                }
                return Ok(b);
            };
            held
        } else {
            self.lock(a)
        };
        // SAFETY: we hold a's lock until after the call; the caller's contract.
        let r = unsafe {
            a.locked(&self.totals, |c| {
                as_reentrant(c, inside.reentrant, |c| {
                    if new.size() >= old.size() {
                        c.grow(
                            p,
                            (old.size(), old.align()),
                            (new.size(), new.align()),
                            zero,
                        )
                    } else {
                        c.shrink(p, (old.size(), old.align()), (new.size(), new.align()))
                    }
                })
            })
        };
        drop(held);
        r
    }

    /// Runs `f` on every arena in turn, under its lock.
    fn each<R>(&self, mut f: impl FnMut(&mut HeapCore) -> R) -> impl Iterator<Item = R> {
        let _in = Inside::enter();
        let mut out = [const { None }; ARENAS];
        for (a, slot) in self.arenas.iter().zip(out.iter_mut()) {
            let _held = self.lock(a);
            // SAFETY: we hold a's lock until after the call.
            *slot = Some(unsafe { a.locked(&self.totals, &mut f) });
        }
        out.into_iter().flatten()
    }

    /// Allocates a block (see [`Heap::allocate`](crate::Heap::allocate)). Takes the first free
    /// arena from this thread's home: O(ARENAS) tries, then as for `Heap`.
    ///
    /// # Errors
    /// [`AllocError`] when memory runs out (or for a layout no block can have).
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let heap = isoheap::SyncHeap::new();
    /// let l = Layout::array::<u32>(100).unwrap();
    /// let b = heap.allocate(l).unwrap();
    /// assert!(b.len() >= 400);
    /// unsafe { heap.deallocate(b.cast(), l) };
    /// ```
    #[track_caller]
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        edge(self.alloc_raw(layout, false))
    }

    /// Like [`allocate`](Self::allocate), reading as zero.
    ///
    /// # Errors
    /// As for [`allocate`](Self::allocate).
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let heap = isoheap::SyncHeap::new();
    /// let l = Layout::array::<u8>(64).unwrap();
    /// let b = heap.allocate_zeroed(l).unwrap();
    /// assert!(unsafe { b.as_ref() }.iter().all(|&x| x == 0));
    /// unsafe { heap.deallocate(b.cast(), l) };
    /// ```
    #[track_caller]
    pub fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        edge(self.alloc_raw(layout, true))
    }

    /// Frees a block. The owning arena is found in O(1); if another thread is in it, the block
    /// goes onto its remote-free list without waiting.
    ///
    /// # Safety
    /// As for [`Heap::deallocate`](crate::Heap::deallocate), on this heap (items 1 and 2).
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let heap = isoheap::SyncHeap::new();
    /// let l = Layout::new::<[u64; 4]>();
    /// let b = heap.allocate(l).unwrap();
    /// // Freed on another thread: fine for a SyncHeap.
    /// let p = b.cast::<u8>().as_ptr() as usize;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| unsafe { heap.deallocate(std::ptr::NonNull::new(p as *mut u8).unwrap(), l) });
    /// });
    /// assert_eq!(heap.stats().in_use, 0);
    /// ```
    #[track_caller]
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: `dealloc_raw`: (1) `ptr` was returned by this heap for `layout`; (2) it is not
        // used afterwards: this function's items 1 and 2.
        let r = unsafe { self.dealloc_raw(ptr, layout) };
        let _ = edge(r);
    }

    /// Grows a block (in place when possible), in its owning arena.
    ///
    /// # Safety
    /// As for [`Heap::grow`](crate::Heap::grow), on this heap (items 1-3).
    ///
    /// # Errors
    /// [`AllocError`] when memory runs out; the block is then unchanged.
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let heap = isoheap::SyncHeap::new();
    /// let (a, b) = (Layout::array::<u8>(16).unwrap(), Layout::array::<u8>(64).unwrap());
    /// let p = heap.allocate(a).unwrap().cast::<u8>();
    /// unsafe { p.as_ptr().write(7) };
    /// let q = unsafe { heap.grow(p, a, b) }.unwrap();
    /// assert_eq!(unsafe { q.cast::<u8>().as_ptr().read() }, 7);
    /// unsafe { heap.deallocate(q.cast(), b) };
    /// ```
    #[track_caller]
    pub unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `resize_raw`: (1) a live block of this heap allocated with `old`; (2)
        // `new.size() >= old.size()`, as `Resize::Grow` asks; (3) not used again on success:
        // this function's items 1-3.
        edge(unsafe { self.resize_raw(ptr, old, new, false, Resize::Grow) })
    }

    /// Like [`grow`](Self::grow), the new bytes reading as zero.
    ///
    /// # Safety
    /// As for [`Heap::grow`](crate::Heap::grow), on this heap (items 1-3).
    ///
    /// # Errors
    /// As for [`grow`](Self::grow).
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let heap = isoheap::SyncHeap::new();
    /// let (a, b) = (Layout::array::<u8>(16).unwrap(), Layout::array::<u8>(64).unwrap());
    /// let p = heap.allocate(a).unwrap().cast::<u8>();
    /// let q = unsafe { heap.grow_zeroed(p, a, b) }.unwrap();
    /// assert!(unsafe { &q.as_ref()[16..64] }.iter().all(|&x| x == 0));
    /// unsafe { heap.deallocate(q.cast(), b) };
    /// ```
    #[track_caller]
    pub unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `resize_raw`: (1) a live block of this heap allocated with `old`; (2)
        // `new.size() >= old.size()`, as `Resize::Grow` asks; (3) not used again on success:
        // this function's items 1-3.
        edge(unsafe { self.resize_raw(ptr, old, new, true, Resize::Grow) })
    }

    /// Shrinks a block in place, in its owning arena.
    ///
    /// # Safety
    /// As for [`Heap::shrink`](crate::Heap::shrink), on this heap (items 1-3).
    ///
    /// # Errors
    /// [`AllocError`] only for a layout outside the contract; a shrink in place does not fail.
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let heap = isoheap::SyncHeap::new();
    /// let (a, b) = (Layout::array::<u8>(256).unwrap(), Layout::array::<u8>(32).unwrap());
    /// let p = heap.allocate(a).unwrap().cast::<u8>();
    /// let q = unsafe { heap.shrink(p, a, b) }.unwrap();
    /// unsafe { heap.deallocate(q.cast(), b) };
    /// ```
    #[track_caller]
    pub unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: `resize_raw`: (1) a live block of this heap allocated with `old`; (2)
        // `new.size() <= old.size()`, as `Resize::Shrink` asks; (3) not used again on success:
        // this function's items 1-3.
        edge(unsafe { self.resize_raw(ptr, old, new, false, Resize::Shrink) })
    }

    /// Counters summed over the arenas (each merged first: remote frees, quick lists).
    /// `peak_in_use` is the most the whole heap had in use at once (blocks freed by another
    /// thread count as in use until their arena merges them).
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let heap = isoheap::SyncHeap::new();
    /// let l = Layout::array::<u8>(1000).unwrap();
    /// let b = heap.allocate(l).unwrap();
    /// assert!(heap.stats().in_use >= 1000);
    /// unsafe { heap.deallocate(b.cast(), l) };
    /// assert_eq!(heap.stats().in_use, 0);
    /// ```
    pub fn stats(&self) -> Stats {
        #[cfg(feature = "std")]
        cache::flush_mine(self);
        let mut t = Stats::default();
        for s in self.each(|c| c.flushed_stats()) {
            t.add(&s);
        }
        // The arenas' own peaks were reached at different times: their sum is not a peak.
        t.peak_in_use = self.totals.peak();
        t
    }

    /// Frees every block at once, as [`Heap::reset`](crate::Heap::reset) does for each arena:
    /// O(chunks + mapped bytes / 1024), whatever was allocated; each arena keeps up to the
    /// default warm size (1 MiB) of its chunks mapped for the next use, the rest go back. Taking
    /// `&mut self` guarantees that no collection and no other thread still uses the heap. The
    /// peak in use restarts from zero.
    ///
    /// ```
    /// use isoheap::SyncHeap;
    /// use allocator_api2::vec::Vec;
    ///
    /// let mut heap = SyncHeap::new();
    /// std::thread::scope(|s| {
    ///     for _ in 0..2 {
    ///         s.spawn(|| {
    ///             let mut v: Vec<u64, &SyncHeap> = Vec::new_in(&heap);
    ///             v.extend(0..1000);
    ///             core::mem::forget(v); // leaked: reset frees it anyway
    ///         });
    ///     }
    /// });
    /// assert!(heap.stats().in_use >= 16_000);
    /// heap.reset();
    /// assert_eq!((heap.stats().in_use, heap.stats().peak_in_use), (0, 0));
    /// heap.check().unwrap();
    /// ```
    pub fn reset(&mut self) {
        for a in &mut self.arenas {
            // Blocks other threads freed into the arena lie in its chunks, which the reset
            // wipes: their records are dropped unread.
            let _ = a.remote.take();
            let core = a.core.get_mut();
            let warm = core.cfg.warm;
            core.reset(warm);
        }
        self.totals = Totals::new();
    }

    /// Is this heap in checked mode? By default `SyncHeap` and `GlobalHeap` follow the build:
    /// on with debug assertions or the `checked` feature (see
    /// [`HeapBuilder::checked`](crate::HeapBuilder::checked)); `with_checked` chooses.
    ///
    /// ```
    /// let heap = isoheap::SyncHeap::new();
    /// // The build's default, as for `Heap::new()`.
    /// assert_eq!(heap.is_checked(), isoheap::Heap::new().is_checked());
    /// ```
    pub fn is_checked(&self) -> bool {
        self.checked
    }

    /// Does `ptr` lie in one of this heap's chunks? O(1): one page-map lookup and a compare
    /// with each arena's identity. It reads only the process page map and the chunk provider's
    /// tables, never a chunk, so any pointer may be asked about, from any thread, even one into
    /// memory another heap is giving back at that moment. It does not say whether a block there
    /// is live (a freed block's address still lies in the chunk).
    ///
    /// ```
    /// use std::alloc::Layout;
    /// let (a, b) = (isoheap::SyncHeap::new(), isoheap::SyncHeap::new());
    /// let l = Layout::new::<u64>();
    /// let p = a.allocate(l).unwrap().cast::<u8>();
    /// assert!(a.owns(p.as_ptr()));
    /// assert!(!b.owns(p.as_ptr()));
    /// assert!(!a.owns(&l as *const Layout as *const u8));
    /// unsafe { a.deallocate(p, l) };
    /// ```
    pub fn owns(&self, ptr: *const u8) -> bool {
        let owner = crate::region::owner_at(ptr.addr());
        owner != 0 && self.arenas.iter().any(|a| a.id.load(Acquire) == owner)
    }

    /// Gives every chunk of the arenas that holds no block back (to the process cache of
    /// mappings, which keeps a few for the next heap; [`release_cached`](crate::release_cached)
    /// returns those to the OS too). Returns the bytes given back. O(chunks), under each
    /// arena's lock in turn.
    ///
    /// ```
    /// let heap = isoheap::SyncHeap::new();
    /// let v: allocator_api2::vec::Vec<u8, _> = allocator_api2::vec::Vec::with_capacity_in(1 << 20, &heap);
    /// drop(v);
    /// let before = heap.stats().mapped;
    /// let freed = heap.trim();
    /// assert!(freed >= 1 << 20, "the empty chunk went back");
    /// assert_eq!(heap.stats().mapped, before - freed);
    /// ```
    pub fn trim(&self) -> usize {
        #[cfg(feature = "std")]
        cache::flush_mine(self);
        self.each(|c| c.give_back_empty()).sum()
    }

    /// Checks every arena (see [`Heap::check`](crate::Heap::check)).
    ///
    /// # Errors
    /// The first broken invariant found ([`CheckError`]).
    ///
    /// ```
    /// let heap = isoheap::SyncHeap::new();
    /// let v = allocator_api2::vec::Vec::<u32, _>::with_capacity_in(10, &heap);
    /// heap.check().expect("consistent");
    /// # drop(v);
    /// ```
    pub fn check(&self) -> Result<(), CheckError> {
        #[cfg(feature = "std")]
        cache::flush_mine(self);
        self.each(|c| c.check()).collect()
    }
}

impl Drop for SyncHeap {
    fn drop(&mut self) {
        for a in &mut self.arenas {
            a.core.get_mut().give_back_all();
        }
    }
}

impl fmt::Debug for SyncHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.stats();
        f.debug_struct("SyncHeap")
            .field("arenas", &ARENAS)
            .field("stats", &s)
            .finish()
    }
}

/// An owned, cloneable handle to a [`SyncHeap`] (an `Arc`), so a `Vec<T, SharedHeap>` can be
/// `'static` and `Send`. Implements the allocator traits like `&SyncHeap`.
#[cfg(feature = "std")]
#[derive(Clone, Debug, Default)]
pub struct SharedHeap(pub std::sync::Arc<SyncHeap>);

#[cfg(feature = "std")]
impl SharedHeap {
    /// A new shared heap.
    ///
    /// ```
    /// let heap = isoheap::SharedHeap::new();
    /// let mut v = allocator_api2::vec::Vec::new_in(heap.clone());
    /// v.push(1u8);
    /// std::thread::spawn(move || assert_eq!(v[0], 1)).join().unwrap();
    /// ```
    pub fn new() -> SharedHeap {
        SharedHeap(std::sync::Arc::new(SyncHeap::new()))
    }
}

#[cfg(feature = "std")]
impl core::ops::Deref for SharedHeap {
    type Target = SyncHeap;
    fn deref(&self) -> &SyncHeap {
        &self.0
    }
}
