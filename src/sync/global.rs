//! `GlobalHeap`: a `SyncHeap` as the process's `#[global_allocator]`; misuse aborts (no
//! unwinding), failures are null.

use super::*;

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
    /// The arenas: a `SyncHeap` in a mapping of its own, made at the first use and never moved
    /// (so the thread caches can point at it whatever happens to this value; see `cache`).
    state: AtomicPtr<SyncHeap>,
    /// Checked mode for the state.
    checked: bool,
    /// A thread cache has used the state: it is never freed (a cache may still hold blocks of
    /// it, and gives them back when its thread exits).
    pub(super) cached: AtomicBool,
    forks: AtomicBool,
    /// Has a scope of this heap ever started? Until then no free looks for a scope heap.
    /// (Scopes need `std`.)
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(super) scoped: AtomicBool,
    /// Scope heaps taken and not yet released (`live_scopes`).
    #[cfg_attr(not(feature = "std"), allow(dead_code))]
    pub(super) live_scopes: AtomicUsize,
    /// The next heap made fork-safe before this one (see `fork`).
    pub(super) fork_next: AtomicPtr<GlobalHeap>,
}

impl GlobalHeap {
    /// The global heap; maps nothing until the first allocation. Checked mode follows the
    /// build (on with debug assertions or the `checked` feature); to choose it, see
    /// [`with_checked`](Self::with_checked).
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    ///
    /// fn main() {
    ///     let s = String::from("served by isoheap");
    ///     assert!(GLOBAL.heap().stats().in_use >= s.len());
    /// }
    /// ```
    pub const fn new() -> GlobalHeap {
        GlobalHeap::with_checked(crate::heap::CHECKED_DEFAULT)
    }

    /// The global heap in checked mode (`true`) or not (`false`), whatever the build. A program
    /// whose debug builds are too slow with every free verified installs
    /// `GlobalHeap::with_checked(false)`; one that wants the checks in release builds too,
    /// `with_checked(true)`. Scopes ([`scope`](Self::scope)) take the same mode.
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::with_checked(false);
    ///
    /// fn main() {
    ///     assert!(!GLOBAL.heap().is_checked());
    ///     let v: Vec<u32> = (0..100).collect();
    ///     assert_eq!(v[99], 99);
    /// }
    /// ```
    pub const fn with_checked(on: bool) -> GlobalHeap {
        GlobalHeap {
            state: AtomicPtr::new(null_mut()),
            checked: on,
            cached: AtomicBool::new(false),
            forks: AtomicBool::new(false),
            scoped: AtomicBool::new(false),
            live_scopes: AtomicUsize::new(0),
            fork_next: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// The underlying [`SyncHeap`] (for `stats()` and `check()`). Its counters count the
    /// blocks in the threads' caches as in use (at most [`THREAD_CACHE_BYTES`] per thread);
    /// its `stats()` and `check()` first give back the calling thread's cache.
    ///
    /// ```
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    /// assert_eq!(GLOBAL.heap().stats().in_use, 0);
    /// ```
    pub fn heap(&self) -> &SyncHeap {
        self.sync()
    }

    /// The arenas, made at the first call.
    #[inline]
    pub(super) fn sync(&self) -> &SyncHeap {
        let p = self.state.load(Acquire);
        if p.is_null() {
            return self.make_state();
        }
        // SAFETY: a published state is an initialised SyncHeap that lives as long as this
        // value (freed only by its `Drop`, or never).
        unsafe { &*p }
    }

    #[cold]
    #[inline(never)]
    fn make_state(&self) -> &SyncHeap {
        let len = state_len();
        let fresh = match crate::region::os::map(len) {
            Ok(m) => {
                let p = m.cast::<SyncHeap>();
                // SAFETY: a fresh mapping of `len` bytes, page-aligned: room for one SyncHeap.
                unsafe { p.as_ptr().write(SyncHeap::for_global(self.checked)) };
                p.as_ptr()
            }
            Err(_) => core::ptr::from_ref(&FALLBACK).cast_mut(),
        };
        match self
            .state
            .compare_exchange(null_mut(), fresh, AcqRel, Acquire)
        {
            // SAFETY: just published; lives as long as this value.
            Ok(_) => unsafe { &*fresh },
            Err(theirs) => {
                if !core::ptr::eq(fresh, &FALLBACK) {
                    // SAFETY: ours, never published: nothing was allocated from it.
                    unsafe {
                        core::ptr::drop_in_place(fresh);
                        crate::region::os::unmap(NonNull::new_unchecked(fresh).cast(), len);
                    }
                }
                // SAFETY: published by the winner.
                unsafe { &*theirs }
            }
        }
    }

    #[cold]
    pub(super) fn register_fork(&'static self) {
        if self.forks.swap(true, AcqRel) {
            return;
        }
        // The state first: the handlers lock its arenas, which must not appear between them.
        let _ = self.sync();
        fork::register(self);
    }
}

/// Bytes of the mapping that holds a global heap's state.
fn state_len() -> usize {
    core::mem::size_of::<SyncHeap>().next_multiple_of(crate::region::os::page_size())
}

/// The state of every global heap whose own could not be mapped (the OS refused one page at
/// its first use): they share these arenas, which is correct, only not isolated.
static FALLBACK: SyncHeap = SyncHeap::for_global(crate::heap::CHECKED_DEFAULT);

impl Drop for GlobalHeap {
    fn drop(&mut self) {
        let p = *self.state.get_mut();
        // A state a thread cache has used is never freed (the caches may point at it), nor
        // the shared fallback. (Scopes and fork-safety need `&'static self`: such a heap is
        // never dropped.)
        if p.is_null() || *self.cached.get_mut() || core::ptr::eq(p, &FALLBACK) {
            return;
        }
        // SAFETY: our own state, mapped by `make_state`, which nothing uses any more (`&mut
        // self`, and no thread cache ever held it): dropped (its chunks given back), unmapped.
        unsafe {
            core::ptr::drop_in_place(p);
            crate::region::os::unmap(NonNull::new_unchecked(p).cast(), state_len());
        }
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
            .field("heap", self.sync())
            .finish()
    }
}

#[cold]
#[inline(never)]
pub(super) fn abort_misuse(m: Misuse) -> ! {
    die(format_args!("{m}"))
}

/// Writes the message to stderr and aborts. No allocation: the message is formatted into a
/// stack buffer (core's formatting does not allocate) and written with `write(2)`.
#[cold]
#[inline(never)]
pub(super) fn die(msg: fmt::Arguments<'_>) -> ! {
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
    // Neither allocates.
    crate::region::os::write_stderr(&buf.bytes[..buf.len + 1]);
    crate::region::os::abort()
}

/// Armed around every `GlobalAlloc` call and defused (forgotten) on return: if a panic (a bug;
/// the heap's paths return errors) ever unwinds out of the allocator, this aborts instead, as a
/// global allocator must not unwind.
pub(super) struct NoUnwind;

impl Drop for NoUnwind {
    fn drop(&mut self) {
        die(format_args!("isoheap: a panic inside the global allocator"))
    }
}

/// Runs one `GlobalAlloc` call under [`NoUnwind`].
#[inline(always)]
pub(super) fn no_unwind<T>(f: impl FnOnce() -> T) -> T {
    let guard = NoUnwind;
    let r = f();
    core::mem::forget(guard);
    r
}

pub(super) fn global<T>(r: Result<T, Fail>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(Fail::Misuse(m)) => abort_misuse(m),
        Err(_) => None,
    }
}

/// Where a `GlobalAlloc` call goes: this thread's current scope heap of this global heap, if
/// any (feature `std`), else the arenas.
impl GlobalHeap {
    #[inline]
    fn alloc_any(&self, layout: Layout, zero: bool) -> *mut u8 {
        #[cfg(feature = "std")]
        if self.scoped.load(Relaxed)
            && let Some(s) = scope::current_for(self)
        {
            let inside = Inside::enter();
            match s.alloc(layout, zero, inside.reentrant) {
                // A re-entered allocation the scope heap could not serve without growing.
                Some(Err(_)) if inside.reentrant => drop(inside),
                Some(r) => return global(r).map_or(null_mut(), |b| b.cast::<u8>().as_ptr()),
                // Re-entered while the scope heap's lock is busy (maybe this thread's): the
                // arenas serve it (they never wait when re-entered either).
                None => drop(inside),
            }
        }
        let heap = self.sync();
        #[cfg(feature = "std")]
        if let Some(p) = cache::alloc(self, heap, layout.size(), layout.align(), zero) {
            return p;
        }
        global(heap.alloc_raw(layout, zero)).map_or(null_mut(), |b| b.cast::<u8>().as_ptr())
    }

    /// The scope heap of this global heap that owns the block at `addr`, if any, and the
    /// block's pointer rebuilt from its chunk's base.
    #[cfg(feature = "std")]
    #[inline]
    fn scope_of(&self, addr: usize) -> Option<(&'static scope::ScopeHeap, NonNull<u8>)> {
        if !self.scoped.load(Relaxed) {
            return None;
        }
        let (c, owner) = crate::block::Chunk::paged_at(addr)?;
        let s = scope::owner_in(self, owner)?;
        Some((s, c.base().with_addr(core::num::NonZeroUsize::new(addr)?)))
    }
}

// SAFETY: blocks are valid until freed; `alloc` returns null on failure and never unwinds
// (misuse aborts); the heap is Sync and never calls the global allocator itself.
unsafe impl core::alloc::GlobalAlloc for GlobalHeap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        no_unwind(|| self.alloc_any(layout, false))
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        no_unwind(|| self.alloc_any(layout, true))
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(p) = NonNull::new(ptr) else { return };
        let heap = self.sync();
        #[cfg(feature = "std")]
        {
            // One page-map lookup tells a scope heap's block (odd owner) from an arena's, and
            // a small arena block may go into this thread's cache.
            let small = layout.size() <= cache::CACHE_MAX && !heap.checked;
            if (small || self.scoped.load(Relaxed))
                && let Some((c, owner)) = crate::block::Chunk::paged_at(p.addr().get())
            {
                let q = c.base().with_addr(p.addr());
                if let Some(s) = scope::owner_in(self, owner) {
                    let inside = Inside::enter();
                    // SAFETY: the GlobalAlloc contract: a live block of this allocator (its
                    // scope heap's, as the page map says), allocated with `layout`, not used
                    // again; `q` has its chunk's provenance.
                    no_unwind(|| unsafe { s.dealloc(q, layout, inside.reentrant) });
                    return;
                }
                if small && {
                    // SAFETY: the GlobalAlloc contract: a live block of this heap allocated
                    // with `layout`, not used again; `q` has its chunk's provenance.
                    unsafe { cache::free(self, heap, q, owner, layout.size(), layout.align()) }
                } {
                    return;
                }
            }
        }
        // SAFETY: the GlobalAlloc contract is Heap::deallocate's.
        no_unwind(|| global(unsafe { heap.dealloc_raw(p, layout) }));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return null_mut();
        };
        let Some(p) = NonNull::new(ptr) else {
            return null_mut();
        };
        // A block stays in the heap that owns it (a scope heap's, or the arenas').
        #[cfg(feature = "std")]
        if let Some((s, p)) = self.scope_of(p.addr().get()) {
            return no_unwind(|| {
                let inside = Inside::enter();
                // SAFETY: the GlobalAlloc contract for realloc is Heap::grow's / shrink's, on
                // the scope heap that owns the block; `p` has its chunk's provenance.
                match unsafe { s.resize(p, layout, new, inside.reentrant) } {
                    Some(r) => global(r).map_or(null_mut(), |b| b.cast::<u8>().as_ptr()),
                    // Re-entered while the scope heap's lock is busy (maybe this thread's):
                    // the block moves to the arenas (which never wait when re-entered), and
                    // the old one goes onto its heap's remote list.
                    None => {
                        let Ok(b) = self.sync().alloc_raw(new, false) else {
                            return null_mut();
                        };
                        let q = b.cast::<u8>().as_ptr();
                        // SAFETY: the old block is the caller's (contract) and the new one is
                        // distinct and at least as long as what is copied; then the old one is
                        // given up (it is not used again: realloc succeeded).
                        unsafe {
                            core::ptr::copy_nonoverlapping(
                                p.as_ptr(),
                                q,
                                layout.size().min(new.size()),
                            );
                            s.dealloc(p, layout, true);
                        }
                        q
                    }
                }
            });
        }
        let heap = self.sync();
        #[cfg(feature = "std")]
        if layout.size() <= cache::CACHE_MAX
            && new_size <= cache::CACHE_MAX
            && layout.align() <= crate::block::GRANULE
            && !heap.checked
        {
            // Both sizes are cached ones: the same class keeps the block (it spans the whole
            // class), another moves it through this thread's cache.
            let g = crate::block::GRANULE_SHIFT;
            if layout.size() > 0 && (layout.size() - 1) >> g == (new_size.max(1) - 1) >> g {
                return ptr;
            }
            let q = no_unwind(|| cache::alloc(self, heap, new_size, layout.align(), false));
            if let Some(q) = q {
                // SAFETY: the old block is the caller's live block of `layout` (contract), the
                // new one distinct and at least `new_size` long; then the old one is freed
                // (realloc succeeded: the caller does not use it again).
                unsafe {
                    core::ptr::copy_nonoverlapping(ptr, q, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                return q;
            }
        }
        no_unwind(|| {
            // SAFETY: the GlobalAlloc contract for realloc is Heap::grow's / shrink's.
            global(unsafe { heap.resize_raw(p, layout, new, false, Resize::Either) })
        })
        .map_or(null_mut(), |b| b.cast::<u8>().as_ptr())
    }
}

impl GlobalHeap {
    /// Makes `fork` safe for this heap: registers `pthread_atfork` handlers (once for all
    /// fork-safe heaps) that hold every arena lock of every fork-safe heap across `fork`, so
    /// the child never inherits a lock held by a thread that does not exist there. A program
    /// that forks while other threads allocate calls this once, early in `main`:
    /// `GLOBAL.fork_safe()`. It needs `&'static self`, which a `#[global_allocator]` static
    /// gives, so the handlers can never see a dropped heap. Several heaps may be made
    /// fork-safe; calling it again for one heap does nothing.
    ///
    /// An atfork handler registered before this call (a C library's) runs after this heap's
    /// while `fork` holds the locks; if it allocates from this heap, the allocation is served
    /// (the forking thread holds the locks, so it uses its home arena directly) instead of
    /// deadlocking. That needs the `std` feature (a thread-local says which thread holds them).
    ///
    /// ```
    /// #[global_allocator]
    /// static GLOBAL: isoheap::GlobalHeap = isoheap::GlobalHeap::new();
    ///
    /// fn main() {
    ///     GLOBAL.fork_safe();
    ///     let v: Vec<u8> = vec![1, 2, 3];
    ///     assert_eq!(v.len(), 3);
    /// }
    /// ```
    pub fn fork_safe(&'static self) {
        self.register_fork();
    }
}
