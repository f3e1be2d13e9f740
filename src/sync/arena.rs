//! One arena: a single-threaded heap behind a spin lock, plus a lock-free stack of the blocks
//! other threads freed into it while it was busy (drained under the lock).

use super::*;
use crate::block::{remote_layout, set_remote};

/// A `SyncHeap`'s bytes in use across its arenas and the most it ever had in use at once. Every
/// arena operation adds what it changed (one atomic add; a `fetch_max` only when a new peak is
/// reached), so the peak is exact: it is the highest sum the heap reached, not the sum of the
/// arenas' peaks.
pub(super) struct Totals {
    in_use: AtomicUsize,
    peak: AtomicUsize,
}

impl Totals {
    pub(super) const fn new() -> Totals {
        Totals {
            in_use: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
        }
    }

    /// An arena's bytes in use went from `before` to `after`.
    #[inline]
    pub(super) fn add(&self, before: usize, after: usize) {
        if after > before {
            let now = self.in_use.fetch_add(after - before, Relaxed) + (after - before);
            // A plain load first: the read-modify-write only when a new peak is reached.
            if now > self.peak.load(Relaxed) {
                self.peak.fetch_max(now, Relaxed);
            }
        } else if after < before {
            self.in_use.fetch_sub(before - after, Relaxed);
        }
    }

    /// The most the heap had in use at once.
    pub(super) fn peak(&self) -> usize {
        self.peak.load(Relaxed)
    }
}

/// One arena: a heap of its own behind a lock, plus the blocks other threads freed into it.
pub(super) struct Arena {
    pub(super) lock: SpinLock,
    /// This arena's identity (written into its chunks); 0 until its first use.
    pub(super) id: AtomicUsize,
    pub(super) core: UnsafeCell<HeapCore>,
    /// Blocks freed by threads that could not take the lock (or that left them to their
    /// owner): a lock-free stack linked through the blocks (`remote`; first word: next block,
    /// second word: size in bytes, log2 of the alignment in its top 6 bits).
    pub(super) remote: RemoteStack,
    /// A misuse found while merging deferred frees aborts (the global allocator) instead of
    /// panicking.
    pub(super) abort: bool,
}

/// Stops the program for a misuse found inside the allocator: an abort for the global
/// allocator (which must not unwind), else a panic.
#[cold]
pub(super) fn stop(m: Misuse, abort: bool) -> ! {
    if abort {
        abort_misuse(m)
    }
    crate::api::misuse(m)
}

/// The least size of an arena's first chunk (from the chunk provider; later ones double up to
/// half a segment, then are mappings of their own).
const FIRST_CHUNK: usize = 64 << 10;

/// Rounds of trying every arena's lock before a re-entered allocation gives up.
pub(super) const REENTRANT_ROUNDS: usize = 256;

impl Arena {
    pub(super) const fn new(abort: bool) -> Arena {
        Arena::with(
            abort,
            Config {
                arena: true,
                thread_cache: false,
                first_min: FIRST_CHUNK,
                ..Config::DEFAULT
            },
        )
    }

    /// An arena whose heap has configuration `cfg` (a scope heap's: chunks from the provider).
    pub(super) const fn with(abort: bool, cfg: Config) -> Arena {
        Arena {
            abort,
            lock: SpinLock::new(),
            id: AtomicUsize::new(0),
            core: UnsafeCell::new(HeapCore::new(cfg)),
            remote: RemoteStack::new(),
        }
    }

    /// Runs `f` on the arena's heap, after merging the blocks other threads deferred. If one of
    /// those turns out to be a misuse (checked mode), the rest are still merged, then the program
    /// stops (before `f`).
    ///
    /// What the call changes in the arena's bytes in use is added to `totals`.
    ///
    /// # Safety
    /// The caller holds this arena's lock for the whole call (a panic here unwinds through the
    /// caller's `Held` guard, which releases it).
    pub(super) unsafe fn locked<R>(
        &self,
        totals: &Totals,
        f: impl FnOnce(&mut HeapCore) -> R,
    ) -> R {
        // SAFETY: the lock makes this the only reference to the core.
        let core = unsafe { &mut *self.core.get() };
        let before = core.in_use;
        if core.cfg.owner == 0 {
            let id = crate::region::next_owner();
            core.cfg.owner = id;
            self.id.store(id, Release);
        }
        // Merge what other threads freed meanwhile.
        let mut bad = None;
        for b in self.remote.take() {
            // SAFETY: a remote block's record was written by `push_remote`, through a pointer
            // derived from its chunk's base, and published to this thread by the stack (see
            // `remote`); the block is ours to free now (its user gave it up).
            let r = unsafe {
                let (size, align) = remote_layout(b);
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
        let r = f(core);
        totals.add(before, core.in_use);
        r
    }

    /// Pushes block `b` of `size` bytes onto the remote-free stack. Lock-free, unless the stack
    /// then holds [`REMOTE_DRAIN`] bytes or more and the arena is idle: then this thread merges
    /// them (the arena's owner may have exited, and nobody else may use the arena for long).
    ///
    /// # Safety
    /// `b` is a live block of this arena (pointer with its chunk's provenance), at least 16
    /// bytes, that nobody uses any more.
    pub(super) unsafe fn push_remote(
        &self,
        totals: &Totals,
        b: NonNull<u8>,
        size: usize,
        align: usize,
    ) {
        // SAFETY: `set_remote`: (1) the block was given up by its user (contract) and is at
        // least a granule, with its chunk's provenance; (2) nobody else writes it until the
        // arena takes it. `push_chain`: a chain of this one block, live so on no stack.
        unsafe {
            set_remote(b, size, align);
            self.push_remote_chain(totals, b, b, size);
        }
    }

    /// Pushes a chain of blocks whose remote records are written (`set_remote`), `first` to
    /// `last`, `bytes` in all, onto the remote-free stack with one CAS; then, as
    /// `push_remote`, merges the stack if it holds [`REMOTE_DRAIN`] bytes or more and the arena
    /// is idle.
    ///
    /// # Safety
    /// Every block of the chain is a block of this arena (pointer with its chunk's provenance),
    /// at least 16 bytes, that nobody uses any more, with its record written, on no stack; the
    /// chain leads from `first` to `last`.
    pub(super) unsafe fn push_remote_chain(
        &self,
        totals: &Totals,
        first: NonNull<u8>,
        last: NonNull<u8>,
        bytes: usize,
    ) {
        // SAFETY: `push_chain`: (1) the blocks were given up and are ours to write, linked
        // from first to last; (2) on no stack (contract).
        let pending = unsafe { self.remote.push_chain(first, last, bytes) };
        if pending >= REMOTE_DRAIN
            && let Some(_held) = self.lock.try_hold()
        {
            // SAFETY: we hold the lock until after the call.
            unsafe { self.locked(totals, |_| ()) };
        }
    }
}

/// Bytes on an arena's remote-free stack past which the thread pushing merges them itself if
/// the arena is idle. So an arena nobody uses any more (its thread has exited) holds at most
/// this much freed-but-unmerged memory, plus one block per thread pushing at that moment.
pub(super) const REMOTE_DRAIN: usize = 256 << 10;
