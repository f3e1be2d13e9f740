//! Per-thread caches in front of a [`GlobalHeap`]'s arenas: the common allocation and free of
//! a small block take no lock and no atomic read-modify-write.
//!
//! - Each thread has one cache (a const thread-local, no destructor, so reading it never
//!   allocates), bound to one global heap's state at a time: a list of free blocks per size
//!   class (1 to [`CLASSES`] granules, so blocks up to 1 KiB), taken from and given back to the
//!   thread's *home* arena. Every block in a cache belongs to that arena; a block of another
//!   arena (allocated by another thread) is never cached by the thread that frees it: it goes
//!   back to its own arena (its lock if free, else its remote-free list).
//! - Blocks of other arenas freed on this thread are gathered per arena (their remote-free
//!   records written) and pushed onto that arena's remote-free list as one chain with one CAS,
//!   every 16 blocks or 4 KiB, and when the cache is flushed.
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
/// Bytes of other arenas' blocks a cache gathers per arena before it pushes them onto that
/// arena's remote-free list in one batch (or 16 blocks, whichever comes first).
const OUT_BYTES: usize = 4096;
const OUT_BLOCKS: u32 = 16;
/// The most a thread's cache holds: 64 lists of at most 4 KiB, and up to 4 KiB (plus one block)
/// of each arena's blocks waiting to go back to it in a batch.
pub const THREAD_CACHE_BYTES: usize = CLASSES * LIST_BYTES + ARENAS * (OUT_BYTES + CACHE_MAX);

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
    /// Per arena: blocks of it freed on this thread (not its home), their remote records
    /// written, linked through their first words, first and last, and their count and bytes.
    out_first: [*mut u8; ARENAS],
    out_last: [*mut u8; ARENAS],
    out_len: [u32; ARENAS],
    out_bytes: [usize; ARENAS],
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
            out_first: [null_mut(); ARENAS],
            out_last: [null_mut(); ARENAS],
            out_len: [0; ARENAS],
            out_bytes: [0; ARENAS],
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

    /// Gives every cached block back, and every gathered block of another arena.
    fn flush_all(&mut self) {
        for i in 0..CLASSES {
            self.flush(i, self.lens[i]);
        }
        for j in 0..ARENAS {
            self.send(j);
        }
    }

    /// Adds block `b` (`size` bytes, `align`) of arena `j` of the bound state (not the home
    /// arena) to the batch for that arena; sends the batch when it is full.
    ///
    /// # Safety
    /// `b` is a live block of arena `j` with its chunk's provenance, at least a granule, given
    /// up by its user.
    unsafe fn gather(&mut self, j: usize, b: NonNull<u8>, size: usize, align: usize) {
        // SAFETY: the block is ours to write (contract): its remote record, then the link to
        // the batch's previous first block.
        unsafe {
            crate::block::set_remote(b, size, align);
            crate::block::remote_next_set(b, self.out_first[j]);
        }
        if self.out_first[j].is_null() {
            self.out_last[j] = b.as_ptr();
        }
        self.out_first[j] = b.as_ptr();
        self.out_len[j] += 1;
        self.out_bytes[j] += size;
        if self.out_len[j] >= OUT_BLOCKS || self.out_bytes[j] >= OUT_BYTES {
            self.send(j);
        }
    }

    /// Pushes the batch for arena `j` onto its remote-free list with one CAS.
    fn send(&mut self, j: usize) {
        let (Some(first), Some(last)) = (
            NonNull::new(self.out_first[j]),
            NonNull::new(self.out_last[j]),
        ) else {
            return;
        };
        // SAFETY: a bound state is never freed (module docs).
        let heap = unsafe { &*self.heap };
        // SAFETY: the batch's blocks are blocks of arena j given up by their users, records
        // written and linked from first to last by `gather`, on no stack.
        unsafe { heap.arenas[j].push_remote_chain(&heap.totals, first, last, self.out_bytes[j]) };
        self.out_first[j] = null_mut();
        self.out_last[j] = null_mut();
        self.out_len[j] = 0;
        self.out_bytes[j] = 0;
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
            if !c.bound(g, heap, me) {
                return false;
            }
            if heap.arenas[c.home].id.load(Relaxed) != owner {
                // Another arena's block: gathered and sent back to it in a batch.
                let Some(j) = heap.arenas.iter().position(|a| a.id.load(Relaxed) == owner) else {
                    return false;
                };
                // SAFETY: a live block of arena j (the page map says so), at least a granule,
                // given up by its user (the caller's contract).
                unsafe { c.gather(j, b, size, align) };
                return true;
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
