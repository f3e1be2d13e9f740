//! Scoped heaps of a [`GlobalHeap`]: while a [`Scope`] lives, the global allocator serves its
//! thread's allocations from a heap of the scope's own.
//!
//! Design:
//! - A scope heap is a *slot*: one arena (lock, heap core, remote-free stack) plus the scope's
//!   state, in a table of slots mapped from the OS and never unmapped (so a slot's address stays
//!   valid for the life of the process, whatever happens to its scope). Free slots are reused.
//! - A scope heap's chunks carry an odd owner identity that encodes the slot's page and index
//!   (plain heaps' identities are even), so `dealloc` finds the heap of any block in O(1) from
//!   the page map, and rebuilds the slot's pointer from its page's base (strict provenance).
//! - Each thread has a *current* scope heap (a const thread-local pointer, no destructor); each
//!   scope heap links to the one that was current when it started (`prev`). The chain from the
//!   current heap holds only heaps whose scope has not ended, so it never reaches a released one.
//! - Dropping a `Scope` ends it: if its heap is on the thread's chain, the heap and every heap
//!   above it (inner scopes dropped later, or forgotten) leave the chain; the heap is released
//!   when its last block is freed (at once if none is live).

use super::*;
use crate::stats::Stats;
use core::cell::Cell;
use core::marker::PhantomData;

extern crate std;

/// One scope heap and its scope's state.
pub(super) struct ScopeHeap {
    /// The heap: its lock guards `core`, its remote stack takes frees that must not wait.
    arena: Arena,
    /// Only for `Arena::locked` (the heap's own peak is the core's).
    totals: Totals,
    /// The global heap whose allocations this scope takes (set when the slot is taken; read
    /// by any thread that frees one of its blocks).
    global: AtomicPtr<GlobalHeap>,
    /// The heap that was current on the scope's thread when this one started. Read and written
    /// only by that thread.
    prev: Cell<*const ScopeHeap>,
    /// The scope was dropped: the heap takes no new allocations and is released once empty.
    ended: AtomicBool,
    /// Released: its chunks are given back and the slot is free, or about to be (written
    /// under the heap's lock).
    released: AtomicBool,
    /// Soft budget: allocations past it succeed but mark the scope as over (`over`).
    soft: AtomicUsize,
    over: AtomicBool,
    /// Next free slot (under the slot table's lock).
    next_free: Cell<*mut ScopeHeap>,
}

/// The least first chunk of a scope heap: a small request's allocations fit in it.
const FIRST_CHUNK: usize = 16 << 10;

/// Slots per page of the slot table.
#[cfg(not(miri))]
const PER_PAGE: usize = 1024;
#[cfg(miri)]
const PER_PAGE: usize = 8;
/// Pages of the slot table: at most `PAGES * PER_PAGE` scope heaps live at once.
const PAGES: usize = 64;

/// The slot table: pages mapped on demand, a free list under a spin lock.
struct Slots {
    lock: SpinLock,
    pages: [AtomicPtr<ScopeHeap>; PAGES],
    /// Pages mapped so far (under the lock).
    mapped: Cell<usize>,
    free: Cell<*mut ScopeHeap>,
}

// SAFETY: `mapped` and `free` (and the slots' `next_free`) are used only under `lock`; `pages`
// are atomics.
unsafe impl Sync for Slots {}

static SLOTS: Slots = Slots {
    lock: SpinLock::new(),
    pages: [const { AtomicPtr::new(null_mut()) }; PAGES],
    mapped: Cell::new(0),
    free: Cell::new(null_mut()),
};

const PAGE_BYTES: usize = PER_PAGE * core::mem::size_of::<ScopeHeap>();

/// The owner identity of slot `i` of page `page` (odd; `region::next_owner` hands out even
/// ones).
fn owner_id(page: usize, i: usize) -> usize {
    ((page * PER_PAGE + i) << 1) | 1
}

/// The slot an odd owner identity names, with its page's provenance; `None` if it names none.
fn slot_of(owner: usize) -> Option<&'static ScopeHeap> {
    if owner & 1 == 0 {
        return None;
    }
    let n = owner >> 1;
    let (page, i) = (n / PER_PAGE, n % PER_PAGE);
    let base = NonNull::new(SLOTS.pages.get(page)?.load(Acquire))?;
    // SAFETY: a published page holds PER_PAGE initialised slots (written before the page was
    // published with Release) and is never unmapped; slots are only used through `&`.
    Some(unsafe { &*base.as_ptr().add(i) })
}

impl ScopeHeap {
    fn empty(owner: usize) -> ScopeHeap {
        ScopeHeap {
            arena: Arena::with(
                true,
                Config {
                    owner,
                    give_back_big: true,
                    first_min: FIRST_CHUNK,
                    thread_cache: false,
                    ..Config::DEFAULT
                },
            ),
            totals: Totals::new(),
            global: AtomicPtr::new(null_mut()),
            prev: Cell::new(core::ptr::null()),
            ended: AtomicBool::new(true),
            released: AtomicBool::new(true),
            soft: AtomicUsize::new(usize::MAX),
            over: AtomicBool::new(false),
            next_free: Cell::new(null_mut()),
        }
    }

    /// A fresh scope heap for `global` from the slot table, `None` if the table is full or the
    /// OS refused a page.
    fn take(global: &'static GlobalHeap) -> Option<&'static ScopeHeap> {
        let _held = SLOTS.lock.hold();
        if SLOTS.free.get().is_null() && !Self::map_page() {
            return None;
        }
        let s = SLOTS.free.get();
        // SAFETY: the free list links only initialised slots of published pages; we hold the
        // table's lock, the only thing that touches `next_free`.
        let s: &'static ScopeHeap = unsafe { &*s };
        SLOTS.free.set(s.next_free.get());
        s.next_free.set(null_mut());
        // The slot is free: no scope uses it, but a thread may still lock it (`scope_stats`,
        // or the `end` of its previous scope after a free on another thread released it): so
        // its state changes under its lock, `ended` cleared before `released`, and such a
        // thread sees it either free or taken, never ended and live (which would release it).
        let _h = s.arena.lock.hold();
        s.ended.store(false, Release);
        s.released.store(false, Release);
        s.global
            .store(core::ptr::from_ref(global).cast_mut(), Relaxed);
        s.prev.set(core::ptr::null());
        s.soft.store(usize::MAX, Relaxed);
        s.over.store(false, Relaxed);
        // SAFETY: we hold the slot's lock; the slot has no chunks: its mode follows the global
        // heap's now.
        unsafe { (*s.arena.core.get()).cfg.checked = global.sync().checked };
        Some(s)
    }

    /// Maps the next page of slots and puts them on the free list. Under the table's lock.
    #[cold]
    fn map_page() -> bool {
        let page = SLOTS.mapped.get();
        if page == PAGES {
            return false;
        }
        let len = PAGE_BYTES.next_multiple_of(crate::region::os::page_size());
        let Ok(base) = crate::region::os::map(len) else {
            return false;
        };
        let base = base.cast::<ScopeHeap>();
        for i in (0..PER_PAGE).rev() {
            // SAFETY: slot i lies in the fresh mapping of PER_PAGE slots (aligned: a page); it is
            // written once here, before the page is published.
            unsafe {
                let s = base.as_ptr().add(i);
                s.write(ScopeHeap::empty(owner_id(page, i)));
                (*s).next_free.set(SLOTS.free.get());
                SLOTS.free.set(s);
            }
        }
        SLOTS.pages[page].store(base.as_ptr(), Release);
        SLOTS.mapped.set(page + 1);
        true
    }

    /// Runs `f` on the heap under its lock, then releases the heap if its scope has ended and
    /// nothing in it is live. `None` if re-entered (`reentrant`) while the lock is busy: it may
    /// be this thread's own, so it is never waited for then.
    fn with<R>(&self, reentrant: bool, f: impl FnOnce(&mut HeapCore) -> R) -> Option<R> {
        let held = if reentrant {
            Some(self.arena.lock.try_hold()?)
        } else {
            // Inside `fork` (after its prepare handler took every scope heap's lock, see
            // `lock_all`) the forking thread uses the heap as is.
            self.arena.lock.hold_unless_forking(true)
        };
        // SAFETY: we hold the lock (or, inside `fork`, this thread holds it) until after the
        // call.
        let (r, release) = unsafe {
            self.arena.locked(&self.totals, |c| {
                let r = f(c);
                if c.in_use > self.soft.load(Relaxed) {
                    self.over.store(true, Relaxed);
                }
                let ended = self.ended.load(Acquire);
                // A re-entered call gives nothing back (the provider's lock, which that takes,
                // may be held by the interrupted thread): the next ordinary call does.
                let release = !reentrant && c.in_use == 0 && ended && !self.released.load(Relaxed);
                if !reentrant && ended && !release && c.in_use != 0 {
                    // Kept alive by blocks that escaped the scope: it takes no new ones, so
                    // the chunks they left empty go back now.
                    c.give_back_empty();
                }
                if release {
                    // Nothing is live and the scope has ended: nobody uses any block.
                    self.released.store(true, Relaxed);
                    c.give_back_all();
                    c.cfg.budget = usize::MAX;
                    c.refused = 0;
                    c.peak = 0;
                }
                (r, release)
            })
        };
        drop(held);
        if release {
            // After the heap's lock is dropped: `fork` takes the table's lock before the
            // heaps' (`lock_all`). A re-entered call never waits for it (this thread may hold
            // it): if it is busy the slot stays out of the free list (one slot lost).
            // SAFETY: `global` was set from a `&'static GlobalHeap` when the slot was taken.
            unsafe {
                (*self.global.load(Relaxed))
                    .live_scopes
                    .fetch_sub(1, Relaxed)
            };
            let _table = if reentrant {
                let Some(t) = SLOTS.lock.try_hold() else {
                    return Some(r);
                };
                t
            } else {
                SLOTS.lock.hold()
            };
            self.next_free.set(SLOTS.free.get());
            SLOTS.free.set(core::ptr::from_ref(self).cast_mut());
        }
        Some(r)
    }

    /// Ends the scope: no new allocations; released now if nothing is live, else when the last
    /// block is freed.
    fn end(&self) {
        // Raised depth: a signal handler that interrupts this thread while it holds the lock
        // (and frees a block of this heap) must not wait for it.
        let _inside = Inside::enter();
        // `ended` is set under the lock, so a release (here or by a later free) never races
        // with the slot's next `take`. The budgets end with the scope: an escaped value that
        // grows later is not refused by them.
        let _ = self.with(false, |c| {
            c.cfg.budget = usize::MAX;
            self.soft.store(usize::MAX, Relaxed);
            self.ended.store(true, Release);
        });
    }

    /// An allocation; `None` if re-entered while the lock is busy. A re-entered one never grows
    /// the heap (that takes the provider's lock, which the interrupted thread may hold): if
    /// the heap has no room, it fails, and the caller takes the arenas.
    pub(super) fn alloc(
        &self,
        layout: Layout,
        zero: bool,
        reentrant: bool,
    ) -> Option<Result<Block, Fail>> {
        self.with(reentrant, |c| {
            let grow = c.cfg.can_grow;
            c.cfg.can_grow = grow && !reentrant;
            let r = c.alloc(layout.size(), layout.align(), zero);
            c.cfg.can_grow = grow;
            r
        })
    }

    /// # Safety
    /// `p` is a live block of this heap allocated with `layout` (pointer with its chunk's
    /// provenance), not used afterwards.
    pub(super) unsafe fn dealloc(&self, p: NonNull<u8>, layout: Layout, reentrant: bool) {
        let (size, align) = (layout.size(), layout.align());
        if reentrant {
            // Re-entered: never waits for the lock, which may be this thread's, and gives
            // nothing back: the block is left to the lock's next holder.
            // SAFETY: `push_remote`: a live block of this arena with its chunk's provenance,
            // at least a granule, given up by its user (the caller's contract).
            unsafe { self.arena.push_remote(&self.totals, p, size, align) };
            return;
        }
        // SAFETY: `HeapCore::dealloc`'s contract is the caller's.
        if let Some(r) = self.with(false, |c| unsafe { c.dealloc(p, size, align) }) {
            let _ = global(r);
        }
    }

    /// A `realloc` within this heap; `None` if re-entered (the caller moves the block).
    ///
    /// # Safety
    /// `p` is a live block of this heap allocated with `old` (pointer with its chunk's
    /// provenance); on success it is not used again.
    pub(super) unsafe fn resize(
        &self,
        p: NonNull<u8>,
        old: Layout,
        new: Layout,
        reentrant: bool,
    ) -> Option<Result<Block, Fail>> {
        if reentrant {
            return None;
        }
        // SAFETY: `grow`/`shrink`: a live block of this heap allocated with `old`, the new size
        // on the side each asks for, not used again on success: the caller's contract.
        self.with(false, |c| unsafe {
            if new.size() >= old.size() {
                c.grow(
                    p,
                    (old.size(), old.align()),
                    (new.size(), new.align()),
                    false,
                )
            } else {
                c.shrink(p, (old.size(), old.align()), (new.size(), new.align()))
            }
        })
    }
}

std::thread_local! {
    /// This thread's current scope heap (null: none). Const-initialised, no destructor.
    static CURRENT: Cell<*const ScopeHeap> = const { Cell::new(core::ptr::null()) };
}

/// This thread's current scope heap if it belongs to `global`.
#[inline]
pub(super) fn current_for(global: &GlobalHeap) -> Option<&'static ScopeHeap> {
    let p = CURRENT.try_with(|c| c.get()).ok()?;
    if p.is_null() {
        return None;
    }
    // SAFETY: the chain from the current heap holds only heaps whose scope has not ended, and
    // such a heap is never released (module docs).
    let s = unsafe { &*p };
    core::ptr::eq(s.global.load(Relaxed), global).then_some(s)
}

/// The scope heap of `global` that owns a chunk with identity `owner`, if any.
#[inline]
pub(super) fn owner_in(global: &GlobalHeap, owner: usize) -> Option<&'static ScopeHeap> {
    let s = slot_of(owner)?;
    core::ptr::eq(s.global.load(Relaxed), global).then_some(s)
}

/// Before `fork` (its prepare handler, after the fork-safe heaps' arenas): takes the slot
/// table's lock, so no scope starts or is put back, then every slot's lock, so the child
/// inherits none held by a thread it does not have.
pub(super) fn lock_all() {
    SLOTS.lock.lock();
    for l in slot_locks() {
        l.lock();
    }
}

/// After `fork`, in the parent and the child: releases what [`lock_all`] took.
pub(super) fn unlock_all() {
    for l in slot_locks() {
        l.unlock();
    }
    SLOTS.lock.unlock();
}

/// The lock of every slot of every page mapped so far (the set cannot change while the
/// table's lock is held).
fn slot_locks() -> impl Iterator<Item = &'static SpinLock> {
    (0..PAGES)
        .filter_map(|p| NonNull::new(SLOTS.pages[p].load(Acquire)))
        .flat_map(|base| {
            (0..PER_PAGE).map(move |i| {
                // SAFETY: as in `slot_of`.
                let s = unsafe { &*base.as_ptr().add(i) };
                &s.arena.lock
            })
        })
}

/// While it lives, its thread's allocations through the [`GlobalHeap`] it came from are served
/// by a heap of its own; see [`GlobalHeap::scope`].
///
/// `!Send`: it ends on the thread it started on.
pub struct Scope {
    heap: Option<&'static ScopeHeap>,
    _not_send: PhantomData<*const ()>,
}

impl GlobalHeap {
    /// Starts a scope on this thread: until the returned [`Scope`] is dropped, every allocation
    /// this thread makes through this global heap (by any code: `String`, `format!`,
    /// serde_json) comes from a fresh heap of the scope's own, whose [`stats`](Scope::stats)
    /// say what it holds and which can have a [budget](Scope::set_budget).
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    ///
    /// let scope = GLOBAL.scope();
    /// let words: Vec<String> = (0..100).map(|i| format!("word {i}")).collect();
    /// assert!(scope.stats().in_use >= 100 * 6);
    /// drop(scope); // the redirect ends; `words` stays valid
    /// assert_eq!(words[42], "word 42");
    /// ```
    ///
    /// - Blocks of the scope may be freed on any thread, at any time, also after the scope
    ///   ended (a value that escapes stays valid); the scope's heap is released when its last
    ///   block is freed.
    /// - Scopes nest: an inner scope's allocations count in the inner scope only; when it
    ///   ends, the outer one is current again. Dropping an outer scope first ends the redirect
    ///   of every scope started inside it on this thread as well (a forgotten inner scope
    ///   included); such an inner scope stays valid and ends when it is dropped.
    /// - `realloc` keeps a block in the heap that owns it: a block allocated before the scope
    ///   grows (or moves) within the global heap, a scope block within its scope heap.
    /// - At most 65,536 scope heaps can be live at once (a released one is reused). Past
    ///   that, or if the OS refuses memory for the table, the scope is inert: it redirects
    ///   nothing and its stats are zero ([`is_active`](Scope::is_active) says which).
    pub fn scope(&'static self) -> Scope {
        self.scoped.store(true, Relaxed);
        let heap = ScopeHeap::take(self);
        if let Some(h) = heap {
            self.live_scopes.fetch_add(1, Relaxed);
            let _ = CURRENT.try_with(|c| {
                h.prev.set(c.get());
                c.set(h);
            });
        }
        Scope {
            heap,
            _not_send: PhantomData,
        }
    }

    /// Scope heaps of this global heap not yet released: scopes alive, and ended scopes whose
    /// blocks are still live somewhere (values that escaped their scope).
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    ///
    /// let before = GLOBAL.live_scopes();
    /// let scope = GLOBAL.scope();
    /// let kept = String::from("escapes its scope");
    /// drop(scope);
    /// assert_eq!(GLOBAL.live_scopes(), before + 1); // `kept` keeps its heap alive
    /// drop(kept);
    /// assert_eq!(GLOBAL.live_scopes(), before);
    /// ```
    pub fn live_scopes(&self) -> usize {
        self.live_scopes.load(Relaxed)
    }

    /// What the scope heaps of this global heap not yet released hold together (summed
    /// [`Stats`]; `peak_in_use` is the sum of their peaks). The arenas' own counters are
    /// [`heap().stats()`](crate::SyncHeap::stats).
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    ///
    /// let scope = GLOBAL.scope();
    /// let kept = vec![0u8; 10_000];
    /// drop(scope);
    /// assert!(GLOBAL.scope_stats().in_use >= 10_000);
    /// drop(kept);
    /// ```
    pub fn scope_stats(&self) -> Stats {
        let mut t = Stats::default();
        let inside = Inside::enter();
        for page in (0..PAGES).filter_map(|p| NonNull::new(SLOTS.pages[p].load(Acquire))) {
            for i in 0..PER_PAGE {
                // SAFETY: as in `slot_of`.
                let h = unsafe { &*page.as_ptr().add(i) };
                if h.released.load(Relaxed) || !core::ptr::eq(h.global.load(Relaxed), self) {
                    continue;
                }
                let Some(s) = h.with(inside.reentrant, |c| {
                    let mut s = c.flushed_stats();
                    s.peak_in_use = c.peak;
                    s
                }) else {
                    continue;
                };
                t.add(&s);
            }
        }
        t
    }
}

impl Scope {
    /// Is the scope redirecting allocations (false only for an inert scope, see
    /// [`GlobalHeap::scope`])?
    ///
    /// ```
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    /// assert!(GLOBAL.scope().is_active());
    /// ```
    pub fn is_active(&self) -> bool {
        self.heap.is_some()
    }

    /// The scope heap's counters (see [`Stats`]): what this scope's thread allocated while the
    /// scope was current and is not yet freed (`in_use`), its peak, refusals by its budget.
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    ///
    /// fn main() {
    ///     let scope = GLOBAL.scope();
    ///     let v = vec![0u64; 1000];
    ///     assert!(scope.stats().in_use >= 8000);
    ///     drop(v);
    ///     assert_eq!(scope.stats().in_use, 0);
    ///     assert!(scope.stats().peak_in_use >= 8000);
    /// }
    /// ```
    pub fn stats(&self) -> Stats {
        self.heap
            .and_then(|h| {
                let inside = Inside::enter();
                h.with(inside.reentrant, |c| {
                    let mut s = c.flushed_stats();
                    s.peak_in_use = c.peak;
                    s
                })
            })
            .unwrap_or_default()
    }

    /// Sets or clears a hard budget on the scope heap's bytes in use: an allocation past it
    /// fails as if memory had run out (`try_reserve` returns `Err`, `GlobalAlloc::alloc` null,
    /// and an infallible allocation ends the program through `handle_alloc_error`), and is
    /// counted in `budget_refusals`. For code that allocates infallibly, see
    /// [`set_soft_budget`](Self::set_soft_budget).
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    ///
    /// fn main() {
    ///     let scope = GLOBAL.scope();
    ///     scope.set_budget(Some(64 << 10));
    ///     let mut v: Vec<u8> = Vec::new();
    ///     assert!(v.try_reserve_exact(1 << 20).is_err()); // past the budget
    ///     assert!(v.try_reserve_exact(1 << 10).is_ok());
    ///     assert_eq!(scope.stats().budget_refusals, 1);
    /// }
    /// ```
    pub fn set_budget(&self, bytes: Option<usize>) {
        if let Some(h) = self.heap {
            let inside = Inside::enter();
            h.with(inside.reentrant, |c| {
                c.cfg.budget = bytes.unwrap_or(usize::MAX)
            });
        }
    }

    /// Sets or clears a soft budget: allocations past it still succeed (up to the hard budget,
    /// if any), but the scope is marked as [over](Self::is_over), so a request whose data
    /// expands past its share inside code that cannot fail gracefully (a parser) finishes its
    /// step and is refused at the step's end.
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    ///
    /// fn main() {
    ///     let scope = GLOBAL.scope();
    ///     scope.set_soft_budget(Some(4 << 10));
    ///     let v = vec![1u8; 16 << 10]; // succeeds ...
    ///     assert!(scope.is_over()); // ... and marks the scope
    ///     drop(v);
    /// }
    /// ```
    pub fn set_soft_budget(&self, bytes: Option<usize>) {
        if let Some(h) = self.heap {
            h.soft.store(bytes.unwrap_or(usize::MAX), Relaxed);
        }
    }

    /// Has the scope heap's use passed the soft budget (at any allocation since it was set)?
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    ///
    /// fn main() {
    ///     let scope = GLOBAL.scope();
    ///     scope.set_soft_budget(Some(1 << 20));
    ///     let v = vec![1u8; 100];
    ///     assert!(!scope.is_over());
    ///     drop(v);
    /// }
    /// ```
    pub fn is_over(&self) -> bool {
        self.heap.is_some_and(|h| h.over.load(Relaxed))
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        let Some(h) = self.heap else { return };
        let me: *const ScopeHeap = h;
        let _ = CURRENT.try_with(|c| {
            // Is `h` on the chain? Then it and everything above it leave the chain.
            let mut p = c.get();
            while !p.is_null() {
                if core::ptr::eq(p, me) {
                    c.set(h.prev.get());
                    break;
                }
                // SAFETY: the chain holds only heaps whose scope has not ended (module docs).
                p = unsafe { (*p).prev.get() };
            }
        });
        h.end();
    }
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("active", &self.is_active())
            .field("over", &self.is_over())
            .field("stats", &self.stats())
            .finish()
    }
}
