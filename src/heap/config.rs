//! How a heap gets and limits its memory: `Config`, its defaults, and the builder's
//! validation (`build`).

#![forbid(unsafe_code)]

use super::*;

pub use crate::block::MAX_ALIGN;

/// Default smallest chunk mapped when the heap grows.
#[cfg(not(miri))]
pub(crate) const DEFAULT_GROWTH: usize = 64 << 10;
#[cfg(miri)]
pub(crate) const DEFAULT_GROWTH: usize = 16 << 10;

/// Chunks grow geometrically (each new chunk at least the size of all before it) up to this
/// size, so a heap of N bytes has O(log N) chunks.
#[cfg(not(miri))]
pub(super) const MAX_STEP: usize = 1 << 30;
#[cfg(miri)]
pub(super) const MAX_STEP: usize = 256 << 10;

/// How a heap gets and limits its memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// Smallest chunk to map when growing.
    pub growth: usize,
    /// Hard limit on bytes mapped (`usize::MAX` for none).
    pub limit: usize,
    /// May the heap map more memory at all (false for a caller's buffer)?
    pub can_grow: bool,
    /// The current call re-entered the allocator (a signal handler that interrupted a thread
    /// inside it; set by the thread-safe heap for that call only): the interrupted thread may
    /// hold the chunk provider's lock, so growth never waits for it (a chunk is then mapped
    /// from the OS instead).
    #[cfg_attr(not(feature = "mmap"), allow(dead_code))]
    pub reentrant: bool,
    /// Keep recently freed small blocks on exact-size lists (`quick`)?
    pub quick_reuse: bool,
    /// Bytes of chunks `reset` keeps mapped.
    pub warm: usize,
    /// Hard limit on bytes in use (`usize::MAX` for none).
    pub budget: usize,
    /// Free spans of at least this many bytes are given back to the OS (`usize::MAX`: never).
    pub give_back: usize,
    /// Identity of the arena this heap is (0: a plain heap). An arena maps only chunks aligned
    /// to `pagemap::ALIGN`, records them in the process page map, and finds the chunk of a
    /// pointer there in O(1).
    #[cfg_attr(not(feature = "mmap"), allow(dead_code))]
    pub owner: usize,
    /// A child heap's parent: its chunks are blocks of the parent (see `chunks::lend`). The
    /// parent outlives the child (the child borrows it) and is never used while the child's
    /// core runs (one thread: `Heap` is not `Sync`).
    pub parent: Option<core::ptr::NonNull<HeapCore>>,
    /// Is this heap an arena of a `SyncHeap` (chunks of one alignment unit each)?
    #[cfg_attr(not(feature = "mmap"), allow(dead_code))]
    pub arena: bool,
    /// Checked mode: every block carries a tag, used blocks are marked in side bitmaps, every
    /// pointer and layout given back is verified, freed memory is poisoned (see `checked`).
    pub checked: bool,
    /// Zero blocks when they are freed and all memory on `reset` (for secrets).
    pub zero_on_free: bool,
    /// A block too large for the chunk provider gets a chunk of its own, given back as soon as
    /// the block is freed (a scope heap's: kept alive by one small escaped block, it must not
    /// hold on to a big temporary's mapping).
    #[cfg_attr(not(feature = "mmap"), allow(dead_code))]
    pub give_back_big: bool,
    /// The least size of the first chunk the provider carves (0: sized to the first request).
    #[cfg_attr(not(feature = "mmap"), allow(dead_code))]
    pub first_min: usize,
    /// Take and give back chunks of up to 64 KiB through the thread's cache (`region::tcache`)?
    /// Only for heaps of one thread outside the global allocator: the global allocator must not
    /// register a thread-local destructor.
    #[cfg_attr(not(all(feature = "mmap", feature = "std")), allow(dead_code))]
    pub thread_cache: bool,
}

/// Is checked mode on by default? In builds with debug assertions, or with the `checked`
/// feature.
pub(crate) const CHECKED_DEFAULT: bool = cfg!(any(debug_assertions, feature = "checked"));

/// Default for `Config::give_back`.
pub(crate) const DEFAULT_GIVE_BACK: usize = 64 << 10;

impl Config {
    /// What `Heap::new()` uses: grows on demand, no limit or budget, quick lists on.
    pub(crate) const DEFAULT: Config = Config {
        growth: DEFAULT_GROWTH,
        limit: usize::MAX,
        can_grow: true,
        quick_reuse: true,
        warm: DEFAULT_WARM,
        budget: usize::MAX,
        give_back: DEFAULT_GIVE_BACK,
        owner: 0,
        parent: None,
        arena: false,
        checked: CHECKED_DEFAULT,
        zero_on_free: false,
        reentrant: false,
        give_back_big: false,
        first_min: 0,
        thread_cache: true,
    };
}

/// Default for `Config::warm`.
pub(crate) const DEFAULT_WARM: usize = 1 << 20;

/// Validates a builder's sizes and maps the initial chunk.
pub(crate) fn build(
    initial: usize,
    growth: usize,
    limit: Option<usize>,
    quick_reuse: bool,
    (checked, zero_on_free): (bool, bool),
) -> Result<HeapCore, HeapError> {
    let limit_v = limit.unwrap_or(usize::MAX);
    if limit == Some(0) || growth == 0 {
        return Err(HeapError::ZeroSize);
    }
    let minimum = chunk_len_for(GRANULE, checked).unwrap_or(usize::MAX);
    if limit_v < minimum {
        return Err(HeapError::TooSmall {
            requested: limit_v,
            minimum,
        });
    }
    let mut core = HeapCore::new(Config {
        growth,
        limit: limit_v,
        quick_reuse,
        checked,
        zero_on_free,
        ..Config::DEFAULT
    });
    if initial > 0 {
        if initial > limit_v {
            return Err(HeapError::LimitBelowInitial {
                initial,
                limit: limit_v,
            });
        }
        let len = chunk_len_for(initial, core.cfg.checked)
            .ok_or(HeapError::TooLarge { requested: initial })?;
        // A limit between `initial` and `initial` plus metadata caps the first mapping: a heap
        // built with `initial(n).limit(n)` maps exactly its limit, once.
        let len = if len > limit_v {
            align_down_page(limit_v)
        } else {
            len
        };
        core.map_chunk(len).map_err(|_| {
            if cfg!(feature = "mmap") {
                HeapError::OsRefused {
                    bytes: len,
                    errno: crate::region::last_errno(),
                }
            } else {
                HeapError::NoBacking
            }
        })?;
    }
    Ok(core)
}
