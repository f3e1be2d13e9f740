//! The thread-safe heap: [`SyncHeap`] (`Send + Sync`, `&SyncHeap` is an allocator),
//! [`SharedHeap`] (an owned, cloneable handle, feature `std`) and [`GlobalHeap`] (for
//! `#[global_allocator]`).
//!
//! Design, for threads that mostly do not contend:
//! - [`ARENAS`] arenas, each a single-threaded heap (`HeapCore`) behind its own spin lock. A
//!   thread gets a home arena at its first allocation (round-robin, kept in a thread-local) and
//!   takes the first arena from there whose lock is free, so two threads rarely wait for each
//!   other.
//! - Arena chunks are aligned to 4 MiB and recorded in a process-wide page map, so the arena that
//!   owns a block is found from the block's address in O(1), without any lock.
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
use crate::heap::{Block, CHECKED_DEFAULT, Config, HeapCore};
use crate::region::pagemap;
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

struct SpinLock(AtomicBool);

impl SpinLock {
    const fn new() -> Self {
        SpinLock(AtomicBool::new(false))
    }

    #[inline]
    fn try_lock(&self) -> bool {
        !self.0.load(Relaxed)
            && self
                .0
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
    }

    fn lock(&self) {
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
    fn unlock(&self) {
        self.0.store(false, Release);
    }

    /// Takes the lock if it is free; the guard releases it, also when a panic unwinds.
    #[inline]
    fn try_hold(&self) -> Option<Held<'_>> {
        // `then`, not `then_some`: a guard built for a lock not taken would release it on drop.
        self.try_lock().then(|| Held(self))
    }

    /// Waits for the lock; the guard releases it, also when a panic unwinds.
    #[inline]
    fn hold(&self) -> Held<'_> {
        self.lock();
        Held(self)
    }
}

/// A held [`SpinLock`], released on drop (so a panic under the lock cannot leave it held).
struct Held<'a>(&'a SpinLock);

impl Drop for Held<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.unlock();
    }
}

#[cfg(feature = "std")]
extern crate std;

/// One arena: a heap of its own behind a lock, plus the blocks other threads freed into it.
struct Arena {
    lock: SpinLock,
    /// This arena's identity (written into its chunks); 0 until its first use.
    id: AtomicUsize,
    core: UnsafeCell<HeapCore>,
    /// Blocks freed by threads that could not take the lock: a lock-free stack linked through
    /// the blocks (first word: next block, second word: size in bytes, log2 of the alignment
    /// in its top 6 bits).
    remote: AtomicPtr<u8>,
    /// A misuse found while merging deferred frees aborts (the global allocator) instead of
    /// panicking.
    abort: bool,
}

#[cfg(feature = "std")]
std::thread_local! {
    /// How many calls into a `SyncHeap` this thread is inside (const-initialised, no
    /// destructor: reading it never allocates).
    static DEPTH: core::cell::Cell<u32> = const { core::cell::Cell::new(0) };
}

/// This thread is inside the allocator for the guard's life. `reentrant`: it already was (a
/// signal handler that interrupted an allocation, or an allocation from inside one): then it
/// must never wait for a lock, which may be the one it holds. Without `std` there is no
/// thread-local to tell, and `reentrant` is false.
struct Inside {
    reentrant: bool,
}

impl Inside {
    #[inline]
    fn enter() -> Inside {
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
        Inside { reentrant }
    }
}

impl Drop for Inside {
    #[inline]
    fn drop(&mut self) {
        #[cfg(feature = "std")]
        let _ = DEPTH.try_with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Stops the program for a misuse found inside the allocator: an abort for the global
/// allocator (which must not unwind), else a panic.
#[cold]
fn stop(m: Misuse, abort: bool) -> ! {
    if abort {
        abort_misuse(m)
    }
    crate::api::misuse(m)
}

/// Rounds of trying every arena's lock before a re-entered allocation gives up.
const REENTRANT_ROUNDS: usize = 256;

/// Bit position of the alignment in a deferred free's size word.
const ALIGN_SHIFT_IN_SIZE: u32 = usize::BITS - 6;

impl Arena {
    const fn new(abort: bool) -> Arena {
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
    /// # Safety
    /// The caller holds this arena's lock for the whole call (a panic here unwinds through the
    /// caller's `Held` guard, which releases it).
    unsafe fn locked<R>(&self, f: impl FnOnce(&mut HeapCore) -> R) -> R {
        // SAFETY: the lock makes this the only reference to the core.
        let core = unsafe { &mut *self.core.get() };
        if core.cfg.owner == 0 {
            let id = pagemap::next_owner();
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
            // SAFETY: a remote block's first two words were written by `push_remote`, through a
            // pointer derived from its chunk's base; the block is ours to free now.
            let r = unsafe {
                p = b.cast::<*mut u8>().read();
                let word = b.cast::<usize>().add(1).read();
                let size = word & ((1 << ALIGN_SHIFT_IN_SIZE) - 1);
                let align = 1 << (word >> ALIGN_SHIFT_IN_SIZE);
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
        f(core)
    }

    /// Pushes block `b` of `size` bytes onto the remote-free stack. Lock-free.
    ///
    /// # Safety
    /// `b` is a live block of this arena (pointer with its chunk's provenance), at least 16
    /// bytes, that nobody uses any more.
    unsafe fn push_remote(&self, b: NonNull<u8>, size: usize, align: usize) {
        let word = size | (align.trailing_zeros() as usize) << ALIGN_SHIFT_IN_SIZE;
        // SAFETY: the block is ours and at least one 16-byte granule long.
        unsafe { b.cast::<usize>().add(1).write(word) };
        let mut head = self.remote.load(Relaxed);
        loop {
            // SAFETY: as above; the link is rewritten before each publication attempt.
            unsafe { b.cast::<*mut u8>().write(head) };
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
}

// SAFETY: every arena's core is reached only under its lock (or, for `remote` and `id`,
// through atomics); chunks are owned by the SyncHeap and can be used from any thread.
unsafe impl Sync for SyncHeap {}
// SAFETY: as above; moving the SyncHeap moves ownership of all its chunks.
unsafe impl Send for SyncHeap {}

impl Default for SyncHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl SyncHeap {
    /// An empty heap. `const`: it maps nothing until first used.
    pub const fn new() -> SyncHeap {
        SyncHeap {
            arenas: [const { Arena::new(false) }; ARENAS],
        }
    }

    /// The global allocator's heap: a misuse found later (in a deferred free) aborts.
    const fn for_global() -> SyncHeap {
        SyncHeap {
            arenas: [const { Arena::new(true) }; ARENAS],
        }
    }

    /// The arena a thread starts at. With `std`: handed out round-robin at the thread's first
    /// allocation and kept in a thread-local (const-initialised, no destructor: reading it never
    /// allocates), so the first `ARENAS` threads get an arena each. Without `std`, or while the
    /// thread-local is gone (thread exit): a hash of where the thread's stack is.
    #[inline]
    fn home() -> usize {
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

    /// Runs `f` in the first arena (from this thread's home) whose lock is free, or waits for
    /// the home arena. Re-entered (see `Inside`), it never waits for one lock (it may be the one
    /// this thread holds): it keeps trying every arena for a while, then gives up (`None`).
    fn with_any<R>(&self, reentrant: bool, f: impl FnOnce(&mut HeapCore) -> R) -> Option<R> {
        let home = Self::home();
        let rounds = if reentrant { REENTRANT_ROUNDS } else { 1 };
        for _ in 0..rounds {
            for k in 0..ARENAS {
                let a = &self.arenas[(home + k) % ARENAS];
                if let Some(_held) = a.lock.try_hold() {
                    // SAFETY: we hold a's lock until after the call.
                    return Some(unsafe { a.locked(f) });
                }
            }
            core::hint::spin_loop();
        }
        if reentrant {
            return None;
        }
        let a = &self.arenas[home];
        let _held = a.lock.hold();
        // SAFETY: we hold a's lock until after the call.
        Some(unsafe { a.locked(f) })
    }

    /// The arena that owns the block at `addr` and the block's pointer rebuilt from its
    /// chunk's base (for provenance), or a misuse if no arena of this heap owns it. O(1).
    fn owner(&self, addr: usize) -> Result<(&Arena, NonNull<u8>), Fail> {
        let misuse = Err(Fail::Misuse(Misuse {
            addr,
            what: FOREIGN,
            values: None,
        }));
        let Some(base) = pagemap::get(addr) else {
            return misuse;
        };
        // SAFETY: the page map holds only live arena chunks, whose `owner` field is written
        // before publication and never changes.
        let c = unsafe { crate::block::Chunk::from_base(base) };
        // SAFETY: as above; `len` is also written once before publication. An address in the
        // page map's window past the chunk's end is not the chunk's.
        let (owner, inside) = unsafe { ((*c.h()).owner, c.contains(addr)) };
        if !inside {
            return misuse;
        }
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
    /// As for `Heap::deallocate`, on this heap.
    pub(crate) unsafe fn dealloc_raw(&self, ptr: NonNull<u8>, layout: Layout) -> Result<(), Fail> {
        let (size, align) = (layout.size(), layout.align());
        if size == 0 {
            return Ok(());
        }
        let inside = Inside::enter();
        let (a, p) = self.owner(ptr.addr().get())?;
        if CHECKED_DEFAULT && !inside.reentrant {
            // Checked mode verifies every free before anything is written to the block, so it
            // waits for the owner's lock (a deferral writes into the block first).
            let _held = a.lock.hold();
            // SAFETY: we hold a's lock until after the call; the caller's contract.
            return unsafe { a.locked(|c| c.dealloc(p, size, align)) };
        }
        // A block of this thread's home arena is freed at once if the lock is free; a block of
        // another arena (allocated by another thread, typically) goes onto that arena's remote
        // list, so this thread never touches the other arena's lock or state.
        if core::ptr::eq(a, &self.arenas[Self::home()])
            && let Some(_held) = a.lock.try_hold()
        {
            // SAFETY: we hold a's lock until after the call; the caller's contract.
            return unsafe { a.locked(|c| c.dealloc(p, size, align)) };
        }
        // SAFETY: p is the caller's live block, rebuilt with its chunk's provenance.
        unsafe { a.push_remote(p, size, align) };
        Ok(())
    }

    /// # Safety
    /// As for `Heap::grow`/`Heap::shrink`, on this heap.
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
            let Some(held) = a.lock.try_hold() else {
                let b = self
                    .with_any(true, |c| c.alloc(new.size(), new.align(), zero))
                    .unwrap_or(Err(Fail::Os))?;
                // SAFETY: the old block is the caller's (contract) and the new one is distinct
                // and at least as long as what is copied; then the old one is given up.
                unsafe {
                    let keep = old.size().min(new.size());
                    core::ptr::copy_nonoverlapping(p.as_ptr(), b.cast::<u8>().as_ptr(), keep);
                    a.push_remote(p, old.size(), old.align());
                }
                return Ok(b);
            };
            held
        } else {
            a.lock.hold()
        };
        // SAFETY: we hold a's lock until after the call; the caller's contract.
        let r = unsafe {
            a.locked(|c| {
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
        };
        drop(held);
        r
    }

    /// Runs `f` on every arena in turn, under its lock.
    fn each<R>(&self, mut f: impl FnMut(&mut HeapCore) -> R) -> impl Iterator<Item = R> {
        let _in = Inside::enter();
        let mut out = [const { None }; ARENAS];
        for (a, slot) in self.arenas.iter().zip(out.iter_mut()) {
            let _held = a.lock.hold();
            // SAFETY: we hold a's lock until after the call.
            *slot = Some(unsafe { a.locked(&mut f) });
        }
        out.into_iter().flatten()
    }

    /// Allocates a block (see [`Heap::allocate`](crate::Heap::allocate)). Takes the first free
    /// arena from this thread's home: O(ARENAS) tries, then as for `Heap`.
    pub fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        edge(self.alloc_raw(layout, false))
    }

    /// Like [`allocate`](Self::allocate), reading as zero.
    pub fn allocate_zeroed(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        edge(self.alloc_raw(layout, true))
    }

    /// Frees a block. The owning arena is found in O(1); if another thread is in it, the block
    /// goes onto its remote-free list without waiting.
    ///
    /// # Safety
    /// As for [`Heap::deallocate`](crate::Heap::deallocate), on this heap.
    pub unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        // SAFETY: forwarded contract.
        let r = unsafe { self.dealloc_raw(ptr, layout) };
        let _ = edge(r);
    }

    /// Grows a block (in place when possible), in its owning arena.
    ///
    /// # Safety
    /// As for [`Heap::grow`](crate::Heap::grow), on this heap.
    pub unsafe fn grow(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded contract.
        edge(unsafe { self.resize_raw(ptr, old, new, false, Resize::Grow) })
    }

    /// Like [`grow`](Self::grow), the new bytes reading as zero.
    ///
    /// # Safety
    /// As for [`Heap::grow`](crate::Heap::grow), on this heap.
    pub unsafe fn grow_zeroed(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded contract.
        edge(unsafe { self.resize_raw(ptr, old, new, true, Resize::Grow) })
    }

    /// Shrinks a block in place, in its owning arena.
    ///
    /// # Safety
    /// As for [`Heap::shrink`](crate::Heap::shrink), on this heap.
    pub unsafe fn shrink(
        &self,
        ptr: NonNull<u8>,
        old: Layout,
        new: Layout,
    ) -> Result<NonNull<[u8]>, AllocError> {
        // SAFETY: forwarded contract.
        edge(unsafe { self.resize_raw(ptr, old, new, false, Resize::Shrink) })
    }

    /// Counters summed over the arenas (each merged first: remote frees, quick lists).
    pub fn stats(&self) -> Stats {
        let mut t = Stats::default();
        for s in self.each(|c| c.flushed_stats()) {
            t.in_use += s.in_use;
            t.free += s.free;
            t.free_blocks += s.free_blocks;
            t.largest_free = t.largest_free.max(s.largest_free);
            t.mapped += s.mapped;
            t.metadata += s.metadata;
            t.peak_in_use += s.peak_in_use;
            t.chunks += s.chunks;
            t.budget_refusals += s.budget_refusals;
            t.cached_before += s.cached_before;
        }
        t
    }

    /// Is this heap in checked mode? `SyncHeap` and `GlobalHeap` follow the build's default:
    /// on with debug assertions or the `checked` feature (see
    /// [`HeapBuilder::checked`](crate::HeapBuilder::checked)).
    pub fn is_checked(&self) -> bool {
        crate::heap::CHECKED_DEFAULT
    }

    /// Checks every arena (see [`Heap::check`](crate::Heap::check)).
    pub fn check(&self) -> Result<(), CheckError> {
        self.each(|c| c.check()).collect()
    }
}

impl Drop for SyncHeap {
    fn drop(&mut self) {
        for a in &mut self.arenas {
            a.core.get_mut().release_all();
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

/// The crate as the program's global allocator:
///
/// ```
/// #[global_allocator]
/// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
///
/// fn main() {
///     let v: Vec<String> = (0..100).map(|i| i.to_string()).collect();
///     assert_eq!(v[42], "42");
/// }
/// ```
///
/// `alloc` returns null when memory runs out, never panics and never allocates inside itself;
/// `alloc_zeroed` does not clear fresh pages; `realloc` grows or shrinks in place where it can.
/// A misuse the heap detects (a pointer it does not own) aborts the process with a message on
/// stderr, since a global allocator must not unwind. For programs that fork while other
/// threads allocate, see [`fork_safe`](Self::fork_safe).
pub struct GlobalHeap {
    heap: SyncHeap,
    forks: AtomicBool,
}

impl GlobalHeap {
    /// The global heap; maps nothing until the first allocation.
    pub const fn new() -> GlobalHeap {
        GlobalHeap {
            heap: SyncHeap::for_global(),
            forks: AtomicBool::new(false),
        }
    }

    /// The underlying [`SyncHeap`] (for `stats()` and `check()`).
    pub fn heap(&self) -> &SyncHeap {
        &self.heap
    }

    #[cold]
    fn register_fork(&'static self) {
        if self.forks.swap(true, AcqRel) {
            return;
        }
        fork::register(&self.heap);
    }
}

impl Default for GlobalHeap {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for GlobalHeap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GlobalHeap")
            .field("heap", &self.heap)
            .finish()
    }
}

#[cold]
#[inline(never)]
fn abort_misuse(m: Misuse) -> ! {
    die(format_args!("{m}"))
}

/// Writes the message to stderr and aborts. No allocation: the message is formatted into a
/// stack buffer (core's formatting does not allocate) and written with `write(2)`.
#[cold]
#[inline(never)]
fn die(msg: fmt::Arguments<'_>) -> ! {
    struct Buf {
        bytes: [u8; 256],
        len: usize,
    }
    impl fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            let take = s.len().min(self.bytes.len() - 1 - self.len);
            self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
            self.len += take;
            Ok(())
        }
    }
    let mut buf = Buf {
        bytes: [0; 256],
        len: 0,
    };
    let _ = fmt::Write::write_fmt(&mut buf, msg);
    buf.bytes[buf.len] = b'\n';
    // SAFETY: writing our own stack buffer to stderr, then aborting; neither allocates.
    unsafe {
        libc::write(2, buf.bytes.as_ptr().cast(), buf.len + 1);
        libc::abort();
    }
}

/// Armed around every `GlobalAlloc` call and defused (forgotten) on return: if a panic (a bug;
/// the heap's paths return errors) ever unwinds out of the allocator, this aborts instead, as a
/// global allocator must not unwind.
struct NoUnwind;

impl Drop for NoUnwind {
    fn drop(&mut self) {
        die(format_args!("isoheap: a panic inside the global allocator"))
    }
}

/// Runs one `GlobalAlloc` call under [`NoUnwind`].
#[inline(always)]
fn no_unwind<T>(f: impl FnOnce() -> T) -> T {
    let guard = NoUnwind;
    let r = f();
    core::mem::forget(guard);
    r
}

fn global<T>(r: Result<T, Fail>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(Fail::Misuse(m)) => abort_misuse(m),
        Err(_) => None,
    }
}

// SAFETY: blocks are valid until freed; `alloc` returns null on failure and never unwinds
// (misuse aborts); the heap is Sync and never calls the global allocator itself.
unsafe impl core::alloc::GlobalAlloc for GlobalHeap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        no_unwind(|| global(self.heap.alloc_raw(layout, false)))
            .map_or(null_mut(), |b| b.cast::<u8>().as_ptr())
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        no_unwind(|| global(self.heap.alloc_raw(layout, true)))
            .map_or(null_mut(), |b| b.cast::<u8>().as_ptr())
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: the GlobalAlloc contract is Heap::deallocate's.
            no_unwind(|| global(unsafe { self.heap.dealloc_raw(p, layout) }));
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        let Some(p) = NonNull::new(ptr) else {
            return null_mut();
        };
        no_unwind(|| {
            // SAFETY: the GlobalAlloc contract for realloc is Heap::grow's / shrink's.
            global(unsafe { self.heap.resize_raw(p, layout, new, false, Resize::Either) })
        })
        .map_or(null_mut(), |b| b.cast::<u8>().as_ptr())
    }
}

impl GlobalHeap {
    /// Makes `fork` safe for this heap: registers `pthread_atfork` handlers (once) that hold
    /// every arena lock across `fork`, so the child never inherits a lock held by a thread
    /// that does not exist there. A program that forks while other threads allocate calls
    /// this once, early in `main`: `GLOBAL.fork_safe()`. It needs `&'static self`, which a
    /// `#[global_allocator]` static gives, so the handlers can never see a dropped heap.
    pub fn fork_safe(&'static self) {
        self.register_fork();
    }
}

/// `pthread_atfork` handlers: lock every arena of the registered heap before `fork`, unlock in
/// parent and child after.
mod fork {
    use super::SyncHeap;
    use core::sync::atomic::{AtomicPtr, Ordering::*};

    static HEAP: AtomicPtr<SyncHeap> = AtomicPtr::new(core::ptr::null_mut());

    pub(super) fn register(heap: &'static SyncHeap) {
        HEAP.store((heap as *const SyncHeap).cast_mut(), Release);
        // SAFETY: the handlers are plain functions that only take and release spin locks of a
        // 'static heap.
        unsafe { libc::pthread_atfork(Some(prepare), Some(release), Some(release)) };
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

    extern "C" fn release() {
        if let Some(h) = heap() {
            for a in &h.arenas {
                a.lock.unlock();
            }
        }
    }
}
