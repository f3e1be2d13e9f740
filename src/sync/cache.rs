//! Per-thread caches in front of a [`GlobalHeap`]'s arenas: the common allocation and free of
//! a small block take no lock and no atomic read-modify-write.
//!
//! - Each thread has one cache (a const thread-local, no destructor, so reading it never
//!   allocates), bound to one global heap's state at a time: a list of free blocks per size
//!   class (1 to [`CLASSES`] granules, so blocks up to 1 KiB), taken from and given back to the
//!   thread's *home* arena. Every block in a cache belongs to that arena; a block of another
//!   arena (allocated by another thread) is never cached by the thread that frees it: it goes
//!   back to its own arena (its lock if free, else its remote-free list).
//! - An empty list is refilled with half its capacity under one hold of the home arena's lock;
//!   a full one gives half back under one hold. A list holds at most 4 KiB (and 4 to 64
//!   blocks), so a cache holds at most [`THREAD_CACHE_BYTES`].
//! - Blocks in a cache count as in use in the heap's counters (so `peak_in_use` and budgets
//!   are exact to within the caches' sizes). `SyncHeap::stats` and `check` give back the
//!   calling thread's cache first.
//! - When the thread exits, the cache goes back to its arena: a `pthread` key's destructor
//!   (registered with `pthread_key_create`/`pthread_setspecific`, which allocate nothing
//!   through the Rust allocator: glibc keeps the first 32 keys' values in the thread's
//!   descriptor) flushes it, and marks it dead, so a later call on that thread (another
//!   destructor) takes the arenas directly.
//! - A state a cache was ever bound to is never freed (see `GlobalHeap`'s `Drop`), so a cache
//!   never points at freed memory, even for a global heap that is not a `static`.
//! - Re-entry (a signal handler on this thread while it is inside the allocator) never touches
//!   the cache: the thread's depth counter (`Inside`) is raised around every cache operation.
//! - Checked mode bypasses the caches (every free is verified in its arena).

use super::*;
use crate::block::{GRANULE, GRANULE_SHIFT};
use core::sync::atomic::compiler_fence;

extern crate std;

/// Size classes, by granules: blocks of 16 B to 1 KiB.
pub(super) const CLASSES: usize = 64;
/// The largest block size a cache holds.
pub(super) const CACHE_MAX: usize = CLASSES << GRANULE_SHIFT;
/// Bytes one size class's list holds at most (at least 4 blocks, at most 64).
const LIST_BYTES: usize = 4096;
/// The most a thread's cache holds: 64 lists of at most 4 KiB.
pub const THREAD_CACHE_BYTES: usize = CLASSES * LIST_BYTES;

/// How many blocks of `k` granules a list holds at most.
#[inline]
const fn cap(k: usize) -> u32 {
    let n = LIST_BYTES / (k << GRANULE_SHIFT);
    (if n < 4 {
        4
    } else if n > 64 {
        64
    } else {
        n
    }) as u32
}

pub(super) struct Cache {
    /// The state bound (null: none yet).
    heap: *const SyncHeap,
    /// The home arena of this thread in `heap`.
    home: usize,
    /// The thread is exiting (the destructor ran): no cache any more.
    dead: bool,
    /// Registered with the destructor key.
    registered: bool,
    heads: [*mut u8; CLASSES],
    lens: [u32; CLASSES],
}

std::thread_local! {
    static CACHE: UnsafeCell<Cache> = const {
        UnsafeCell::new(Cache {
            heap: core::ptr::null(),
            home: 0,
            dead: false,
            registered: false,
            heads: [null_mut(); CLASSES],
            lens: [0; CLASSES],
        })
    };
}

/// Reads the next-block link in a cached block's first word.
///
/// # Safety
/// `b` is a block on a cache list.
#[inline]
unsafe fn next_of(b: *mut u8) -> *mut u8 {
    // SAFETY: a cached block is at least a granule, aligned to one, and its first word holds
    // the link `push` wrote (with the next block's provenance).
    unsafe { b.cast::<*mut u8>().read() }
}

impl Cache {
    #[inline]
    fn push(&mut self, i: usize, b: *mut u8) {
        // SAFETY: b is a block of at least a granule, given up by its user, now ours.
        unsafe { b.cast::<*mut u8>().write(self.heads[i]) };
        self.heads[i] = b;
        self.lens[i] += 1;
    }

    #[inline]
    fn pop(&mut self, i: usize) -> Option<*mut u8> {
        let b = self.heads[i];
        if b.is_null() {
            return None;
        }
        // SAFETY: b is on list i.
        self.heads[i] = unsafe { next_of(b) };
        self.lens[i] -= 1;
        Some(b)
    }

    /// The bound state, if it is `heap` (binding it if the cache is free to).
    #[inline]
    fn bound(&mut self, g: &GlobalHeap, heap: &SyncHeap, me: *mut Cache) -> bool {
        if core::ptr::eq(self.heap, heap) {
            return true;
        }
        self.bind(g, heap, me)
    }

    #[cold]
    #[inline(never)]
    fn bind(&mut self, g: &GlobalHeap, heap: &SyncHeap, me: *mut Cache) -> bool {
        if self.dead || heap.checked {
            return false;
        }
        if !self.registered {
            if !register(me) {
                return false;
            }
            self.registered = true;
        }
        // Another heap's blocks go back to it first (its state is never freed).
        self.flush_all();
        g.cached.store(true, Relaxed);
        self.heap = heap;
        self.home = home();
        true
    }

    /// Gives `n` blocks of list `i` back to the home arena, under one hold of its lock.
    fn flush(&mut self, i: usize, n: u32) {
        if self.heap.is_null() || n == 0 {
            return;
        }
        // SAFETY: a bound state is never freed (module docs).
        let heap = unsafe { &*self.heap };
        let a = &heap.arenas[self.home];
        let size = (i + 1) << GRANULE_SHIFT;
        let _held = heap.lock(a);
        // SAFETY: we hold a's lock until after the call; every cached block is a live block of
        // a (from its point of view) of `size` bytes, which nobody uses.
        unsafe {
            a.locked(&heap.totals, |c| {
                for _ in 0..n {
                    let Some(b) = self.pop(i) else { break };
                    let b = NonNull::new_unchecked(b);
                    if let Err(Fail::Misuse(m)) = c.dealloc(b, size, GRANULE) {
                        stop(m, a.abort);
                    }
                }
            })
        };
    }

    /// Gives every cached block back.
    fn flush_all(&mut self) {
        for i in 0..CLASSES {
            self.flush(i, self.lens[i]);
        }
    }

    /// Fills list `i` with half its capacity from the home arena, under one hold of its lock.
    #[cold]
    #[inline(never)]
    fn refill(&mut self, heap: &SyncHeap, i: usize) {
        let size = (i + 1) << GRANULE_SHIFT;
        let n = cap(i + 1).div_ceil(2);
        let a = &heap.arenas[self.home];
        let _held = heap.lock(a);
        // SAFETY: we hold a's lock until after the call.
        unsafe {
            a.locked(&heap.totals, |c| {
                for _ in 0..n {
                    match c.alloc(size, GRANULE, false) {
                        Ok(b) => self.push(i, b.cast::<u8>().as_ptr()),
                        Err(_) => break,
                    }
                }
            })
        };
    }
}

/// Registers this thread's cache (`c`, the thread-local's own pointer, so that it stays valid
/// beside later references made from it) with the key whose destructor flushes it at thread
/// exit.
fn register(c: *mut Cache) -> bool {
    static KEY: AtomicUsize = AtomicUsize::new(usize::MAX);
    let mut key = KEY.load(Acquire);
    if key == usize::MAX {
        let mut k: libc::pthread_key_t = 0;
        // SAFETY: a valid out pointer and a destructor with the expected signature.
        if unsafe { libc::pthread_key_create(&mut k, Some(at_exit)) } != 0 {
            return false;
        }
        key = match KEY.compare_exchange(usize::MAX, k as usize, AcqRel, Acquire) {
            Ok(_) => k as usize,
            Err(theirs) => {
                // SAFETY: our key, never used.
                unsafe { libc::pthread_key_delete(k) };
                theirs
            }
        };
    }
    // SAFETY: a key created above; the value is this thread's cache (a thread-local that
    // outlives the key's destructors).
    unsafe { libc::pthread_setspecific(key as libc::pthread_key_t, c.cast::<libc::c_void>()) == 0 }
}

/// The key's destructor: gives the exiting thread's cache back and marks it dead.
extern "C" fn at_exit(c: *mut libc::c_void) {
    let inside = Inside::enter();
    compiler_fence(SeqCst);
    // SAFETY: the value registered by `register`: this thread's cache, alive until the
    // thread's static thread-locals are freed, after the keys' destructors.
    let c = unsafe { &mut *c.cast::<Cache>() };
    no_unwind(|| c.flush_all());
    c.dead = true;
    c.heap = core::ptr::null();
    compiler_fence(SeqCst);
    drop(inside);
}

/// A block of `size` bytes (`align` at most a granule) from this thread's cache of `g`'s state
/// `heap`, zeroed if `zero`; `None` if the cache cannot serve it (the caller takes the arenas).
#[inline]
pub(super) fn alloc(
    g: &GlobalHeap,
    heap: &SyncHeap,
    size: usize,
    align: usize,
    zero: bool,
) -> Option<*mut u8> {
    if size > CACHE_MAX || size == 0 || align > GRANULE {
        return None;
    }
    let i = (size - 1) >> GRANULE_SHIFT;
    let inside = Inside::enter();
    if inside.reentrant {
        return None;
    }
    compiler_fence(SeqCst);
    let r = CACHE
        .try_with(|c| {
            let me = c.get();
            // SAFETY: this thread's cache; nothing else on this thread uses it now (the depth
            // counter keeps a signal handler out, and nothing here calls back into it).
            let c = unsafe { &mut *me };
            if !c.bound(g, heap, me) {
                return None;
            }
            if c.heads[i].is_null() {
                c.refill(heap, i);
            }
            c.pop(i)
        })
        .ok()
        .flatten();
    compiler_fence(SeqCst);
    drop(inside);
    let b = r?;
    if zero {
        // SAFETY: a block of i + 1 granules, now the caller's.
        unsafe { core::ptr::write_bytes(b, 0, (i + 1) << GRANULE_SHIFT) };
    }
    Some(b)
}

/// Takes a block of `size` bytes (`align`) that `heap`'s arena `owner` owns into this thread's
/// cache if it can; false: the caller frees it in the arena.
///
/// # Safety
/// `b` is a live block of `heap` allocated for `size` bytes, with its chunk's provenance, not
/// used afterwards.
#[inline]
pub(super) unsafe fn free(
    g: &GlobalHeap,
    heap: &SyncHeap,
    b: NonNull<u8>,
    owner: usize,
    size: usize,
    align: usize,
) -> bool {
    if size > CACHE_MAX || size == 0 || align > GRANULE {
        return false;
    }
    let i = (size - 1) >> GRANULE_SHIFT;
    let inside = Inside::enter();
    if inside.reentrant {
        return false;
    }
    compiler_fence(SeqCst);
    let r = CACHE
        .try_with(|c| {
            let me = c.get();
            // SAFETY: as in `alloc`.
            let c = unsafe { &mut *me };
            if !c.bound(g, heap, me) || heap.arenas[c.home].id.load(Relaxed) != owner {
                return false;
            }
            c.push(i, b.as_ptr());
            if c.lens[i] > cap(i + 1) {
                c.flush(i, cap(i + 1) / 2);
            }
            true
        })
        .unwrap_or(false);
    compiler_fence(SeqCst);
    drop(inside);
    r
}

/// Gives this thread's cache back if it is bound to `heap` (before `stats` and `check`).
pub(super) fn flush_mine(heap: &SyncHeap) {
    let inside = Inside::enter();
    if inside.reentrant {
        return;
    }
    compiler_fence(SeqCst);
    let _ = CACHE.try_with(|c| {
        // SAFETY: as in `alloc`.
        let c = unsafe { &mut *c.get() };
        if core::ptr::eq(c.heap, heap) {
            c.flush_all();
        }
    });
    compiler_fence(SeqCst);
}
