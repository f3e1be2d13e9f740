//! Policy: fit, split, merge, grow and shrink in place, asking the region for more. This is the
//! only module that changes blocks and the index together, so the cross-module invariants live
//! here:
//!
//! 1. Blocks tile `first..frontier` of every chunk; everything from `frontier` up is untouched.
//! 2. A block is in its chunk's index iff it is free (and then its two boundary bits are set).
//! 3. No two free blocks are adjacent, and no free block touches the frontier: a free that
//!    would make them adjacent merges instead. So every free span is exactly one block.
//! 4. `in_use + free_granules * GRANULE + frontier bytes + metadata == mapped`.
//!
//! `HeapCore` takes `&mut self`: the interior mutability and the trait edges are in `api`.
//!
//! One concept per file:
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | `HeapCore`, its counters and invariants, the chunk walk |
//! | `config.rs` | `Config`, defaults, the builder's validation (`build`) |
//! | `free_set.rs` | every change to the set of indexed free blocks (add, take, resize, shift) |
//! | `alloc.rs` | quick lists, first fit in address order, frontiers, a new chunk |
//! | `free.rs` | freeing: quick lists or `merge_free` with both neighbours |
//! | `resize.rs` | grow in place or move, shrink in place |
//! | `chunks.rs` | growth policy, mapping and linking chunks, finding a pointer's chunk, reset |
//! | `decommit.rs` | giving free pages back to the OS while the heap lives |
//! | `checked.rs` | checked mode as a layer: verification, poison, misuse reports |

use crate::addr::{align_down, align_up, is_aligned};
use crate::bins::{self, BIN_MAX};
use crate::block::{
    Chunk, ChunkIter, GRANULE, GRANULE_SHIFT, Gran, MAX_CHUNK_GRANULES, NodeField::Size, Used,
};
use crate::error::{Fail, HeapError, Misuse};
use crate::index;
use crate::quick::{QUICK_MAX, Quick};
use crate::vg;
use core::ptr::NonNull;

mod alloc;
mod checked;
mod chunks;
mod config;
mod decommit;
mod free;
mod free_set;
mod resize;

#[cfg(test)]
/// Checked mode, at the core: every misuse is reported (as `Fail::Misuse`, before anything
/// changes) with the right reason, and the heap stays consistent afterwards. These run under
/// Miri too (the panicking edge and the child-process tests in `tests/it/faults.rs` cannot).
mod checked_tests;
#[cfg(test)]
mod tests;

pub(crate) use crate::block::seal_intact;
use checked::*;
pub(crate) use checked::{FOREIGN, POISON};
use chunks::*;
pub(crate) use chunks::{BUFFER_MAX_PIECE, BUFFER_MIN_GRANULES, lent_len_for, page};
pub use config::MAX_ALIGN;
#[allow(unused_imports)]
use config::*;
pub(crate) use config::{
    CHECKED_DEFAULT, Config, DEFAULT_GIVE_BACK, DEFAULT_GROWTH, DEFAULT_WARM, build,
};

/// The single-threaded heap state. See the module docs for its invariants.
pub(crate) struct HeapCore {
    /// Lowest-addressed chunk; chunks are linked in address order.
    pub head: Option<Chunk>,
    pub cfg: Config,
    /// Bytes in all chunks.
    pub mapped: usize,
    /// Bytes of chunk headers and bitmaps.
    pub meta: usize,
    /// Number of chunks.
    pub chunks: usize,
    /// Bytes of blocks handed out (whole granules).
    pub in_use: usize,
    /// Highest `in_use` seen.
    pub peak: usize,
    /// Granules in indexed free blocks.
    pub free_granules: usize,
    /// Number of indexed free blocks.
    pub free_blocks: usize,
    /// Recently freed small blocks, kept for exact-size reuse (see `quick`).
    pub quick: Quick,
    /// Allocations refused because they would pass the budget.
    pub refused: usize,
    /// The heap's memcheck pool key (feature `valgrind`; 0 until first used).
    pub vg_pool: usize,
    /// The give-back threshold in force: `cfg.give_back`, doubled each time the heap refills
    /// memory it gave back (see `decommit::regrown`).
    pub give_back_at: usize,
    /// The most bytes given back to the OS at once since the heap last refilled what it gave
    /// back.
    pub returned: usize,
    /// The lowest `in_use` since the first of those returns.
    pub regrow_base: usize,
    /// `regrow_base + returned / 2`: past it, the heap is refilling (`usize::MAX`: none).
    pub regrow_at: usize,
    /// Bytes of this heap's blocks its child heaps hold as chunks (part of `in_use`).
    pub lent: usize,
    /// The chunk the last pointer given back was found in (`locate`), tried first next time:
    /// a chunk of this heap's list, forgotten whenever a chunk leaves the list
    /// (`return_chunk`), so it is always live.
    pub hint: core::cell::Cell<Option<Chunk>>,
}

/// A block handed out: where it starts and how many bytes it spans.
pub(crate) type Block = NonNull<[u8]>;

/// A dangling, aligned pointer for zero-size allocations.
#[inline]
pub(crate) fn dangling(align: usize) -> Block {
    // `ptr::without_provenance_mut` (Rust 1.84) rather than `NonNull::without_provenance`
    // (1.89): the MSRV is 1.88. Never null: `align` is at least 1.
    let p = core::ptr::without_provenance_mut::<u8>(align.max(1));
    let p = NonNull::new(p).unwrap_or_else(|| unreachable!());
    NonNull::slice_from_raw_parts(p, 0)
}

/// Granules needed for `size` bytes, or `Unsupported` if that cannot be a block.
#[inline]
fn granules(size: usize) -> Result<Gran, Fail> {
    match align_up(size, GRANULE) {
        Some(b) if b >> GRANULE_SHIFT <= MAX_CHUNK_GRANULES && b <= isize::MAX as usize => {
            Ok((b >> GRANULE_SHIFT) as Gran)
        }
        _ => Err(Fail::Unsupported),
    }
}

#[inline]
fn bytes(g: Gran) -> usize {
    (g as usize) << GRANULE_SHIFT
}

impl HeapCore {
    /// This heap's chunks in address order. The heap owns them, and `&self` keeps every one of
    /// them alive for the iterator's life.
    #[inline]
    pub(crate) fn chunks(&self) -> ChunkIter<'_> {
        // SAFETY: the list holds exactly the heap's live chunks; none is given back while
        // `self` is borrowed.
        unsafe { ChunkIter::new(self.head) }
    }

    /// The same walk without borrowing the heap, for loops that change the heap as they go.
    ///
    /// # Safety
    /// The loop gives back no chunk but the one it was just handed, and links none (a chunk
    /// linked after the current one would be skipped).
    #[inline]
    pub(crate) unsafe fn chunks_mut(&self) -> ChunkIter<'static> {
        // SAFETY: as for `chunks`, with the caller's promise for the loop body.
        unsafe { ChunkIter::new(self.head) }
    }

    pub(crate) const fn new(cfg: Config) -> Self {
        HeapCore {
            head: None,
            cfg,
            mapped: 0,
            meta: 0,
            chunks: 0,
            in_use: 0,
            peak: 0,
            free_granules: 0,
            free_blocks: 0,
            quick: Quick::new(cfg.checked),
            refused: 0,
            vg_pool: 0,
            give_back_at: cfg.give_back,
            returned: 0,
            regrow_base: 0,
            regrow_at: usize::MAX,
            lent: 0,
            hint: core::cell::Cell::new(None),
        }
    }
}
