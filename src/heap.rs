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

use crate::addr::{align_down, align_up, is_aligned};
use crate::block::{
    Chunk, GRANULE, GRANULE_SHIFT, Gran, MAX_CHUNK_GRANULES, NodeField::Size, Used,
};
use crate::error::{Fail, HeapError, Misuse};
use crate::index;
use crate::quick::{QUICK_MAX, Quick};
use crate::vg;
use core::ptr::NonNull;

/// The largest alignment served. Bigger alignments get `AllocError`.
pub const MAX_ALIGN: usize = 1 << 26;

/// Default smallest chunk mapped when the heap grows.
#[cfg(not(miri))]
pub(crate) const DEFAULT_GROWTH: usize = 64 << 10;
#[cfg(miri)]
pub(crate) const DEFAULT_GROWTH: usize = 16 << 10;

/// Chunks grow geometrically (each new chunk at least the size of all before it) up to this
/// size, so a heap of N bytes has O(log N) chunks.
#[cfg(not(miri))]
const MAX_STEP: usize = 1 << 30;
#[cfg(miri)]
const MAX_STEP: usize = 256 << 10;

/// How a heap gets and limits its memory.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Config {
    /// Smallest chunk to map when growing.
    pub growth: usize,
    /// Hard limit on bytes mapped (`usize::MAX` for none).
    pub limit: usize,
    /// May the heap map more memory at all (false for a caller's buffer)?
    pub can_grow: bool,
    /// Keep recently freed small blocks on exact-size lists (`quick`)?
    pub quick: bool,
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
    /// Is this heap an arena of a `SyncHeap` (chunks of one alignment unit each)?
    #[cfg_attr(not(feature = "mmap"), allow(dead_code))]
    pub arena: bool,
    /// Checked mode: every block carries a tag, used blocks are marked in side bitmaps, every
    /// pointer and layout given back is verified, freed memory is poisoned (see `checked`).
    pub checked: bool,
    /// Zero blocks when they are freed and all memory on `reset` (for secrets).
    pub wipe: bool,
}

/// Is checked mode on by default? In builds with debug assertions, or with the `checked`
/// feature.
pub(crate) const CHECKED_DEFAULT: bool = cfg!(any(debug_assertions, feature = "checked"));

/// Misuse messages (after "isoheap: pointer 0x...").
pub(crate) const FOREIGN: &str = "does not belong to this heap (a foreign pointer)";
const NOT_A_BLOCK: &str = "is not the start of a live block of this heap (freed already, an interior pointer, or never allocated here)";
const DOUBLE_FREE: &str = "is free already (double free)";
const INTERIOR: &str = "points inside a live block, not at its start (an interior pointer)";
const BAD_SIZE: &str = "was given with a size that does not match its block";
const BAD_ALIGN: &str = "was given with an alignment that does not match its block";
const BAD_TAG: &str = "has a corrupted tag at the end of its block (a write out of bounds)";
const BAD_CANARY: &str =
    "has its canary after the end overwritten (a write past the end of the block)";
const BAD_NEIGHBOUR: &str =
    "lies next to a free block whose tag is corrupted (a write after free or out of bounds)";
const WRITE_AFTER_FREE: &str = "was written after it was freed (a use after free)";

/// Checked mode: bytes every block carries after the caller's, at its very end: a `u16` tag
/// holding the distance from the caller's end to the block's end and the alignment.
const TAG: usize = 2;
/// Checked mode: the bytes between the caller's end and the tag.
const CANARY: u8 = 0xC5;
/// Checked mode: what freed memory is filled with (up to `POISON_MAX` bytes of each block).
pub(crate) const POISON: u8 = 0xDF;
/// Freed blocks are poisoned up to this many bytes (whole large blocks would commit memory the
/// program may never have touched).
const POISON_MAX: usize = 64 << 10;
/// A block reused from the quick lists has this many of its bytes checked for poison.
const POISON_CHECK: usize = 256;

/// Default for `Config::give_back`.
pub(crate) const DEFAULT_GIVE_BACK: usize = 64 << 10;

impl Config {
    /// What `Heap::new()` uses: grows on demand, no limit or budget, quick lists on.
    pub(crate) const DEFAULT: Config = Config {
        growth: DEFAULT_GROWTH,
        limit: usize::MAX,
        can_grow: true,
        quick: true,
        warm: DEFAULT_WARM,
        budget: usize::MAX,
        give_back: DEFAULT_GIVE_BACK,
        owner: 0,
        arena: false,
        checked: CHECKED_DEFAULT,
        wipe: false,
    };
}

/// Default for `Config::warm`.
pub(crate) const DEFAULT_WARM: usize = 1 << 20;

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
}

/// A block handed out: where it starts and how many bytes it spans.
pub(crate) type Block = NonNull<[u8]>;

/// A dangling, aligned pointer for zero-size allocations.
#[inline]
pub(crate) fn dangling(align: usize) -> Block {
    let addr = core::num::NonZeroUsize::new(align).unwrap_or(core::num::NonZeroUsize::MIN);
    NonNull::slice_from_raw_parts(NonNull::without_provenance(addr), 0)
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
            quick: Quick::new(),
            refused: 0,
            vg_pool: 0,
        }
    }

    // ---- index bookkeeping: every change to the free set goes through these three ----

    /// Makes `g..g+s` a free block and indexes it.
    ///
    /// # Safety
    /// The span is inside `c`'s block area, belongs to nobody, and has no free neighbour.
    #[inline]
    unsafe fn add_free(&mut self, c: Chunk, g: Gran, s: Gran) {
        // SAFETY: forwarded contract.
        unsafe {
            c.mark_free(g, s);
            index::insert(c, g);
        }
        self.free_granules += s as usize;
        self.free_blocks += 1;
    }

    /// Takes indexed free block `g` (of size `s`) out of the free set.
    ///
    /// # Safety
    /// `g` is an indexed free block of `c` of size `s`.
    #[inline]
    unsafe fn take_free(&mut self, c: Chunk, g: Gran, s: Gran) {
        // SAFETY: forwarded contract.
        unsafe {
            index::remove(c, g);
            c.unmark_free(g, s);
        }
        self.free_granules -= s as usize;
        self.free_blocks -= 1;
    }

    /// Changes indexed free block `g` from `old` to `new` granules, same start.
    ///
    /// # Safety
    /// `g` is an indexed free block of `c` of size `old`; `g..g+new` is free and has no free
    /// neighbour.
    #[inline]
    unsafe fn resize_free(&mut self, c: Chunk, g: Gran, old: Gran, new: Gran) {
        // SAFETY: forwarded contract.
        unsafe {
            c.unmark_free(g, old);
            c.mark_free(g, new);
            index::resize(c, g, new);
        }
        self.free_granules = self.free_granules + new as usize - old as usize;
    }

    /// Moves indexed free block `old` (size `old_size`) to `new..new+size`, keeping its end.
    ///
    /// # Safety
    /// As for `index::move_key`: `new + size == old + old_size`, the span is free and has no
    /// free neighbour.
    #[inline]
    unsafe fn shift_free(&mut self, c: Chunk, old: Gran, old_size: Gran, new: Gran, size: Gran) {
        // SAFETY: forwarded contract.
        unsafe {
            c.unmark_free(old, old_size);
            c.mark_free(new, size);
            index::move_key(c, old, new, size);
        }
        self.free_granules = self.free_granules + size as usize - old_size as usize;
    }

    #[inline]
    fn used(&mut self, n: Gran) {
        self.in_use += bytes(n);
        if self.in_use > self.peak {
            self.peak = self.in_use;
        }
    }

    // ---- allocation ----

    /// Allocates `size` bytes aligned to `align` (a power of two). Zero sizes are dangling.
    /// When `zero`, the block reads as zero (only memory handed out before is cleared).
    ///
    /// Expected O(log n + c): a first-fit search of each chunk's index in address order (c
    /// chunks, O(log) of the heap size), O(1) when the index is empty (bump).
    #[inline]
    pub(crate) fn alloc(&mut self, size: usize, align: usize, zero: bool) -> Result<Block, Fail> {
        if size == 0 {
            return Ok(dangling(align));
        }
        if align > MAX_ALIGN {
            return Err(Fail::Unsupported);
        }
        let r = if self.cfg.checked {
            self.alloc_checked(size, align, zero)
        } else {
            self.alloc_block(size, align, zero)
        };
        if let Ok(b) = &r {
            vg::give(&mut self.vg_pool, b.cast::<u8>().as_ptr(), b.len(), zero);
        }
        r
    }

    /// Checked mode: a block with room for the tag, marked used and sealed; its length is
    /// exactly `size` (so the only size `deallocate` may pass is `size`).
    #[inline(never)]
    fn alloc_checked(&mut self, size: usize, align: usize, zero: bool) -> Result<Block, Fail> {
        let b = self.alloc_block(size.checked_add(TAG).ok_or(Fail::Unsupported)?, align, zero)?;
        let p = b.cast::<u8>();
        let n = (b.len() >> GRANULE_SHIFT) as Gran;
        let (c, g) = self.locate(p, n)?;
        // SAFETY: g..g+n is the block just handed out in live chunk c.
        unsafe {
            c.mark_used(g, n, true);
            seal(c, g, n, size, align);
        }
        Ok(NonNull::slice_from_raw_parts(p, size))
    }

    /// A block of at least `size` bytes (the whole granules), no checked-mode bookkeeping.
    #[inline]
    fn alloc_block(&mut self, size: usize, align: usize, zero: bool) -> Result<Block, Fail> {
        let n = granules(size)?;
        if self.in_use + bytes(n) > self.cfg.budget {
            return self.over_budget();
        }
        if n as usize <= QUICK_MAX {
            // SAFETY: the lists hold only blocks of this live heap.
            if let Some(p) = unsafe { self.quick.pop(n as usize, align) } {
                vg::defined(p.as_ptr(), bytes(n));
                if self.cfg.checked {
                    // SAFETY: the block was on a quick list: poisoned past its link word.
                    if let Err(e) = unsafe { self.verify_poison(p, n) } {
                        // Written after it was freed: merge it back (poisoned again) so the
                        // heap stays whole, then report.
                        if let Ok((c, g)) = self.locate(p, n) {
                            // SAFETY: a cached block is neither used nor free.
                            unsafe {
                                self.scrub(c, g, n);
                                self.release(c, g, n);
                            }
                        }
                        return Err(e);
                    }
                }
                self.used(n);
                if zero {
                    // SAFETY: the block is n granules long and now the caller's.
                    unsafe { core::ptr::write_bytes(p.as_ptr(), 0, bytes(n)) };
                }
                return Ok(NonNull::slice_from_raw_parts(p, bytes(n)));
            }
        }
        self.alloc_fit(n, align, zero)
    }

    /// Checked mode: a block taken from a quick list must still hold its poison (or zeroes,
    /// when wiping) after the link word; else the program wrote to it after freeing it.
    ///
    /// # Safety
    /// `p` is a block of `n` granules of this heap that was on a quick list.
    #[inline]
    unsafe fn verify_poison(&self, p: NonNull<u8>, n: Gran) -> Result<(), Fail> {
        let want = u64::from_ne_bytes([if self.cfg.wipe { 0 } else { POISON }; 8]);
        // Whole words after the link word (blocks are granules, so 8-byte aligned).
        let words = bytes(n).min(POISON_CHECK) / 8;
        // SAFETY: the block is at least `words` words long, aligned, and ours (contract).
        let tail =
            unsafe { core::slice::from_raw_parts(p.as_ptr().cast::<u64>().add(1), words - 1) };
        if tail.iter().fold(0, |acc, &w| acc | (w ^ want)) == 0 {
            Ok(())
        } else {
            misuse(p.addr().get(), WRITE_AFTER_FREE)
        }
    }

    /// Counts a refusal by the budget.
    #[cold]
    #[inline(never)]
    fn over_budget<T>(&mut self) -> Result<T, Fail> {
        self.refused += 1;
        Err(Fail::Budget)
    }

    /// First fit over the free blocks of all chunks in address order; only if none fits, the
    /// frontiers (untouched memory) in address order; then a new chunk.
    #[inline]
    fn alloc_fit(&mut self, n: Gran, align: usize, zero: bool) -> Result<Block, Fail> {
        let mut cur = self.head;
        while let Some(c) = cur {
            // SAFETY: chunks in the list are live.
            if let Some(b) = unsafe { self.fit_in(c, n, align, zero) } {
                return Ok(b);
            }
            // SAFETY: live chunk.
            cur = unsafe { (*c.h()).next };
        }
        let mut cur = self.head;
        while let Some(c) = cur {
            // SAFETY: chunks in the list are live.
            if let Some(b) = unsafe { self.bump_in(c, n, align, zero) } {
                return Ok(b);
            }
            // SAFETY: live chunk.
            cur = unsafe { (*c.h()).next };
        }
        self.alloc_new_chunk(n, align, zero)
    }

    /// First fit in one chunk's index: the lowest-addressed free block that holds `n` granules
    /// at `align`.
    ///
    /// # Safety
    /// `c` is a live chunk of this heap.
    #[inline]
    unsafe fn fit_in(&mut self, c: Chunk, n: Gran, align: usize, zero: bool) -> Option<Block> {
        // SAFETY: c is live; every granule touched is found through the index.
        unsafe {
            if (*c.h()).single {
                return None;
            }
            if align <= GRANULE {
                let g = index::first_fit(c, n)?;
                let s = c.get(g, Size);
                if s > n {
                    self.shift_free(c, g, s, g + n, s - n);
                } else {
                    self.take_free(c, g, s);
                }
                return Some(self.hand_out(c, g, n, zero));
            }
            // Larger alignment: search for room for the block plus the worst padding (so a
            // lower block that happens to be aligned may be passed over), then give the
            // padding in front back to the free set.
            let pad_max = ((align >> GRANULE_SHIFT) - 1) as Gran;
            let g = index::first_fit(c, n.checked_add(pad_max)?)?;
            let a = self.aligned_granule(c, g, align);
            Some(self.carve(c, g, a, n, zero))
        }
    }

    /// Hands out `a..a+n` from free block `g` (`g <= a`, `a + n <=` its end), giving the
    /// padding before and the tail after back to the free set.
    ///
    /// # Safety
    /// `g` is a free block of live chunk `c` that holds `a..a+n`.
    unsafe fn carve(&mut self, c: Chunk, g: Gran, a: Gran, n: Gran, zero: bool) -> Block {
        // SAFETY: forwarded contract; the pieces lie inside the free block.
        unsafe {
            let s = c.get(g, Size);
            let pad = a - g;
            if pad > 0 {
                self.resize_free(c, g, s, pad);
                if s - pad > n {
                    self.add_free(c, a + n, s - pad - n);
                }
            } else if s > n {
                self.shift_free(c, g, s, g + n, s - n);
            } else {
                self.take_free(c, g, s);
            }
            self.hand_out(c, a, n, zero)
        }
    }

    /// Out of memory for an alignment above a granule: the usual search asks for room for the
    /// worst padding, so a free block that holds the request at its actual padding may have
    /// been passed over. Tries each free block of at least `n` granules in address order.
    /// O(k log n) for k candidates; only run before reporting out of memory.
    #[cold]
    fn alloc_aligned_exact(&mut self, n: Gran, align: usize, zero: bool) -> Option<Block> {
        let mut cur = self.head;
        while let Some(c) = cur {
            // SAFETY: chunks in the list are live; candidates come from the index.
            unsafe {
                if !(*c.h()).single {
                    let mut from = (*c.h()).first;
                    while let Some(g) = index::first_fit_from(c, n, from) {
                        let a = self.aligned_granule(c, g, align);
                        if a as u64 + n as u64 <= g as u64 + c.get(g, Size) as u64 {
                            return Some(self.carve(c, g, a, n, zero));
                        }
                        from = g + 1;
                    }
                }
                cur = (*c.h()).next;
            }
        }
        None
    }

    /// Cuts `n` granules at `align` from one chunk's frontier, if it has room. O(1).
    ///
    /// # Safety
    /// `c` is a live chunk of this heap.
    #[inline]
    unsafe fn bump_in(&mut self, c: Chunk, n: Gran, align: usize, zero: bool) -> Option<Block> {
        // SAFETY: c is live; the frontier and what lies above it belong to no block.
        unsafe {
            let h = c.h();
            let f = (*h).frontier;
            if (*h).single && f != (*h).first {
                return None;
            }
            if align <= GRANULE {
                if ((*h).granules - f) < n {
                    return None;
                }
                (*h).frontier = f + n;
                return Some(self.hand_out(c, f, n, zero));
            }
            let a = self.aligned_granule(c, f, align) as usize;
            if a + n as usize > (*h).granules as usize {
                return None;
            }
            let a = a as Gran;
            (*h).frontier = a + n;
            if a > f {
                // The padding's lower neighbour is used (invariant 3), its upper one is the
                // new block: it becomes a free block of its own.
                self.add_free(c, f, a - f);
            }
            Some(self.hand_out(c, a, n, zero))
        }
    }

    /// First fit in one chunk: its index, then its frontier (a chunk made for this request).
    ///
    /// # Safety
    /// `c` is a live chunk of this heap.
    #[inline]
    unsafe fn alloc_in(&mut self, c: Chunk, n: Gran, align: usize, zero: bool) -> Option<Block> {
        // SAFETY: forwarded contract.
        unsafe {
            self.fit_in(c, n, align, zero)
                .or_else(|| self.bump_in(c, n, align, zero))
        }
    }

    /// The first granule at or after `g` whose address is a multiple of `align`.
    ///
    /// # Safety
    /// `c` is live and `g <= granules`.
    #[inline]
    unsafe fn aligned_granule(&self, c: Chunk, g: Gran, align: usize) -> Gran {
        // SAFETY: g is inside the chunk.
        let addr = unsafe { c.ptr(g) }.addr().get();
        let up = (addr.wrapping_add(align - 1) & !(align - 1)).wrapping_sub(addr);
        // Callers compare the result with the chunk size, so saturate instead of wrapping.
        g.saturating_add(u32::try_from(up >> GRANULE_SHIFT).unwrap_or(u32::MAX))
    }

    /// Accounts `g..g+n` as used, zeroes it if asked (only below the clean mark), returns it.
    ///
    /// # Safety
    /// `g..g+n` was just taken from the free set or the frontier of live chunk `c`.
    #[inline]
    unsafe fn hand_out(&mut self, c: Chunk, g: Gran, n: Gran, zero: bool) -> Block {
        self.used(n);
        // SAFETY: the span is inside c.
        vg::defined(unsafe { c.ptr(g) }.as_ptr(), bytes(n));
        // SAFETY: the span is inside c and now belongs to the caller being served.
        unsafe {
            let h = c.h();
            let end = g + n;
            let clean = (*h).clean;
            if zero && g < clean {
                let dirty = end.min(clean) - g;
                core::ptr::write_bytes(c.ptr(g).as_ptr(), 0, bytes(dirty));
            }
            if end > clean {
                (*h).clean = end;
            }
            NonNull::slice_from_raw_parts(c.ptr(g), bytes(n))
        }
    }

    /// Maps a new chunk big enough for `n` granules at `align`, links it and allocates there.
    #[cold]
    #[inline(never)]
    fn alloc_new_chunk(&mut self, n: Gran, align: usize, zero: bool) -> Result<Block, Fail> {
        let pad = align.saturating_sub(GRANULE);
        let need = bytes(n).checked_add(pad).ok_or(Fail::Unsupported)?;
        let c = match self.grow_by(need) {
            Ok(c) => c,
            // Out of memory: merge the cached blocks and try once more before giving up, so a
            // failure is that of a fully merged heap. (While the heap can grow, the cached
            // blocks stay cached: they are bounded by the quick lists' budget, and flushing
            // them at every growth costs more than it saves.)
            Err(e) => {
                if self.quick.blocks > 0 {
                    // The retry ends here again (with empty lists) and tries the exact fit
                    // itself if it must: not a second time below.
                    self.flush();
                    return self.alloc_fit(n, align, zero).map_err(|_| e);
                }
                if align > GRANULE {
                    return self.alloc_aligned_exact(n, align, zero).ok_or(e);
                }
                return Err(e);
            }
        };
        // SAFETY: the chunk was just made for this request and linked in.
        unsafe { self.alloc_in(c, n, align, zero) }.ok_or(Fail::Unsupported)
    }

    /// Maps and links a chunk with at least `need` bytes of block area.
    #[cold]
    pub(crate) fn grow_by(&mut self, need: usize) -> Result<Chunk, Fail> {
        if !self.cfg.can_grow {
            return Err(Fail::Limit);
        }
        let min = chunk_len_for(need, self.cfg.checked).ok_or(Fail::Unsupported)?;
        let step = self.cfg.growth.max(self.mapped.min(MAX_STEP));
        let room = self.cfg.limit.saturating_sub(self.mapped);
        if min > room {
            return Err(Fail::Limit);
        }
        let len = round_len(min.max(step))
            .unwrap_or(min)
            .min(max_chunk_len())
            .max(min);
        let len = if len > room { min } else { len };
        #[cfg(feature = "mmap")]
        if self.cfg.arena {
            // Arena chunks: one alignment unit, or exactly one large block's worth.
            let unit = crate::region::pagemap::ALIGN;
            return self.map_chunk(if min <= unit { unit } else { min });
        }
        // If the OS refuses the geometric step, the bare minimum may still be granted.
        self.map_chunk(len).or_else(|e| {
            if len > min {
                self.map_chunk(min)
            } else {
                Err(e)
            }
        })
    }

    /// Maps a chunk of exactly `len` bytes (whole pages) and links it in address order.
    #[cfg(feature = "mmap")]
    pub(crate) fn map_chunk(&mut self, len: usize) -> Result<Chunk, Fail> {
        use crate::region::{cache, mmap, pagemap};
        if self.cfg.arena || self.cfg.checked {
            // Paged chunks (arenas, checked heaps): aligned to the page map's unit and recorded
            // there, so the chunk of any pointer is found in O(1).
            if self.cfg.owner == 0 {
                self.cfg.owner = pagemap::next_owner();
            }
            // A cached mapping that happens to be aligned (one a paged chunk left), else a
            // fresh one. Arena chunks have exact sizes; a checked heap takes up to 4x.
            let room = self.cfg.limit.saturating_sub(self.mapped);
            let max = if self.cfg.arena {
                len
            } else {
                len.saturating_mul(4).min(room)
            };
            let (base, len, dirty, off, map_len) = match cache::take(len, max, pagemap::ALIGN) {
                Some(m) => (m.base, m.len, m.dirty, 0, m.len),
                None => {
                    let (base, off, map_len) =
                        mmap::map_aligned(len, pagemap::ALIGN).map_err(|_| Fail::Os)?;
                    (base, len, 0, off, map_len)
                }
            };
            // SAFETY: a whole mapping of len bytes (or the aligned part of an over-aligned
            // one), aligned, owned by this heap; everything past `dirty` is still zero.
            let c = unsafe { Chunk::init(base, len, true, dirty, self.cfg.checked) };
            // SAFETY: c is live and not yet published; these fields are written once here.
            unsafe {
                let h = c.h();
                (*h).owner = self.cfg.owner;
                (*h).single = self.cfg.arena && len > pagemap::ALIGN;
                (*h).paged = true;
                (*h).map_off = off;
                (*h).map_len = map_len;
                if !pagemap::insert(base, len) {
                    mmap::unmap(base.sub(off), map_len);
                    return Err(Fail::Os);
                }
                self.link(c);
            }
            return Ok(c);
        }
        // A mapping a dropped heap left in the process cache, if one fits (up to 4x the size
        // asked for, within the limit); else a fresh one.
        let room = self.cfg.limit.saturating_sub(self.mapped);
        let (base, len, dirty) = match cache::take(len, len.saturating_mul(4).min(room), 1) {
            Some(m) => (m.base, m.len, m.dirty),
            None => (mmap::map(len).map_err(|_| Fail::Os)?, len, 0),
        };
        // SAFETY: a whole mapping of len bytes, page-aligned, owned by this heap from now on;
        // everything past `dirty` is still zero from the OS.
        let c = unsafe { Chunk::init(base, len, true, dirty, self.cfg.checked) };
        // SAFETY: c is live and not yet linked.
        unsafe { self.link(c) };
        Ok(c)
    }

    #[cfg(not(feature = "mmap"))]
    pub(crate) fn map_chunk(&mut self, _len: usize) -> Result<Chunk, Fail> {
        Err(Fail::Os)
    }

    /// Links a fresh chunk into the address-ordered list and counts it.
    ///
    /// # Safety
    /// `c` is a freshly initialised chunk that this heap owns and that is not linked yet.
    pub(crate) unsafe fn link(&mut self, c: Chunk) {
        // SAFETY: all chunks in the list and c are live.
        unsafe {
            let len = (*c.h()).len;
            self.mapped += len;
            self.meta += bytes((*c.h()).first);
            self.chunks += 1;
            let addr = c.base().addr();
            match self.head {
                Some(h) if h.base().addr() < addr => {
                    let mut prev = h;
                    while let Some(n) = (*prev.h()).next
                        && n.base().addr() < addr
                    {
                        prev = n;
                    }
                    (*c.h()).next = (*prev.h()).next;
                    (*prev.h()).next = Some(c);
                }
                _ => {
                    (*c.h()).next = self.head;
                    self.head = Some(c);
                }
            }
        }
    }

    // ---- finding a caller's block ----

    /// The chunk and first granule of a block the caller says is `n` granules at `ptr`.
    /// Misuse that can be seen here (a pointer into no chunk of this heap, off a granule, past
    /// the frontier) is `Fail::Misuse`, which the trait edge turns into a panic naming the
    /// address. Without checked mode, detection stops there: an interior pointer of a live
    /// block that happens to sit on a granule is not caught (`verify` catches it).
    ///
    /// O(1) for arenas and checked heaps (the process page map); else a walk of the chunk list
    /// (O(log) of the heap size; one chunk for a buffer heap).
    #[inline]
    fn locate(&self, ptr: NonNull<u8>, n: Gran) -> Result<(Chunk, Gran), Fail> {
        let addr = ptr.addr().get();
        #[cfg(feature = "mmap")]
        if self.cfg.owner != 0 {
            // Paged chunks: the page map gives the chunk (with its provenance) in O(1).
            let Some(base) = crate::region::pagemap::get(addr) else {
                return misuse(addr, FOREIGN);
            };
            // SAFETY: the page map holds only live paged chunks' base pointers; `owner` and the
            // block-area fields are read as places.
            unsafe {
                let c = Chunk::from_base(base);
                if (*c.h()).owner != self.cfg.owner || !c.contains(addr) {
                    return misuse(addr, FOREIGN);
                }
                return self.block_in(c, addr, n);
            }
        }
        let mut cur = self.head;
        while let Some(c) = cur {
            // SAFETY: chunks in the list are live.
            unsafe {
                if c.contains(addr) {
                    return self.block_in(c, addr, n);
                }
                cur = (*c.h()).next;
            }
        }
        misuse(addr, FOREIGN)
    }

    /// The granule of a block of `n` granules at `addr` in chunk `c`, if it can be one (on a
    /// granule of the block area, ending at or below the frontier).
    ///
    /// # Safety
    /// `c` is a live chunk of this heap that contains `addr`.
    #[inline]
    unsafe fn block_in(&self, c: Chunk, addr: usize, n: Gran) -> Result<(Chunk, Gran), Fail> {
        // SAFETY: c is live (contract).
        unsafe {
            match c.granule_of(addr) {
                Some(g) if g as usize + n as usize <= (*c.h()).frontier as usize => Ok((c, g)),
                _ => misuse(addr, NOT_A_BLOCK),
            }
        }
    }

    /// Finds the caller's block of `size` bytes aligned to `align` at `ptr`: its chunk, first
    /// granule and granules. In checked mode the pointer and layout are verified against the
    /// block's marks and tag (see `verify`).
    #[inline]
    fn find(
        &self,
        ptr: NonNull<u8>,
        size: usize,
        align: usize,
    ) -> Result<(Chunk, Gran, Gran), Fail> {
        if self.cfg.checked {
            let (c, g) = self.locate(ptr, 1)?;
            // SAFETY: c is a live chunk of this heap and g a granule of its block area.
            let n = unsafe { self.verify(c, g, ptr.addr().get(), size, align, false)? };
            return Ok((c, g, n));
        }
        let Ok(n) = granules(size) else {
            return misuse(ptr.addr().get(), BAD_SIZE);
        };
        let (c, g) = self.locate(ptr, n)?;
        Ok((c, g, n))
    }

    /// Checked mode: is there a live block starting at granule `g` that was allocated with
    /// exactly `size` bytes at `align`, with its tag and canary intact and well-formed free
    /// neighbours? Returns its granules. O(1) plus O(n / 64) to find its end in the bitmap.
    ///
    /// `deferred`: the block's first granule was overwritten by a deferred free (another
    /// thread's, see `sync`): its bytes are not checked, and a one-granule block (whose tag was
    /// there) is checked only for its granule count.
    ///
    /// # Safety
    /// `c` is a live checked chunk of this heap, `g` a granule of its block area.
    #[inline(never)]
    unsafe fn verify(
        &self,
        c: Chunk,
        g: Gran,
        addr: usize,
        size: usize,
        align: usize,
        deferred: bool,
    ) -> Result<Gran, Fail> {
        // SAFETY: c is live and checked; every granule read lies below its frontier.
        unsafe {
            if !c.used_bit(Used::Start, g) {
                return Err(self.not_used(c, g, addr));
            }
            let frontier = (*c.h()).frontier;
            let e = c.next_used_bit(Used::End, g, frontier);
            if e >= frontier {
                return misuse(addr, BAD_TAG);
            }
            let n = e + 1 - g;
            if deferred && n == 1 {
                if granules(size.saturating_add(TAG)) != Ok(1) || !is_aligned(addr, align) {
                    return misuse(addr, BAD_SIZE);
                }
                self.check_neighbours(c, g, n, addr)?;
                return Ok(n);
            }
            let (true_size, true_align) = unseal(c, g, n).ok_or_else(|| corrupt(addr, BAD_TAG))?;
            let block = c.ptr(g).as_ptr();
            let canary =
                core::slice::from_raw_parts(block.add(true_size), bytes(n) - TAG - true_size);
            let skip = if deferred {
                GRANULE.saturating_sub(true_size)
            } else {
                0
            };
            if canary
                .iter()
                .enumerate()
                .skip(skip)
                .any(|(i, &b)| b != CANARY ^ i as u8)
            {
                return misuse(addr, BAD_CANARY);
            }
            if size != true_size {
                return mismatch(addr, BAD_SIZE, size, true_size);
            }
            if align != true_align {
                return mismatch(addr, BAD_ALIGN, align, true_align);
            }
            self.check_neighbours(c, g, n, addr)?;
            Ok(n)
        }
    }

    /// Checked mode: why granule `g` does not start a used block.
    ///
    /// # Safety
    /// As for `verify`.
    #[cold]
    unsafe fn not_used(&self, c: Chunk, g: Gran, addr: usize) -> Fail {
        // SAFETY: c is live; floor returns index nodes, whose sizes are readable; the quick
        // lists hold blocks of this heap; bitmaps are read below the frontier.
        unsafe {
            let mut cached = false;
            self.quick.for_each(|p, _| cached |= p.addr().get() == addr);
            let in_free = index::floor(c, g).is_some_and(|f| f + c.get(f, Size) > g);
            if cached || in_free {
                return corrupt(addr, DOUBLE_FREE);
            }
            let first = (*c.h()).first;
            let mut s = g;
            while s > first && !c.used_bit(Used::Start, s) {
                s -= 1;
            }
            if c.used_bit(Used::Start, s) && c.next_used_bit(Used::End, s, (*c.h()).frontier) >= g {
                return corrupt(addr, INTERIOR);
            }
            corrupt(addr, NOT_A_BLOCK)
        }
    }

    /// Checked mode: the free blocks on either side of `g..g+n`, if any, have consistent tags
    /// (node size, footer and boundary bits agree), so merging with them cannot spread a
    /// corruption. O(1).
    ///
    /// # Safety
    /// `g..g+n` is a used block of live checked chunk `c`.
    unsafe fn check_neighbours(&self, c: Chunk, g: Gran, n: Gran, addr: usize) -> Result<(), Fail> {
        // SAFETY: every granule read lies in first..frontier, checked before it is read.
        unsafe {
            let (first, frontier) = ((*c.h()).first, (*c.h()).frontier);
            if g > first && c.bit(g - 1) {
                let s = c.footer(g - 1);
                if s == 0 || s > g - first || c.get(g - s, Size) != s || !c.bit(g - s) {
                    return misuse(addr, BAD_NEIGHBOUR);
                }
            }
            let end = g + n;
            if end < frontier && c.bit(end) {
                let s = c.get(end, Size);
                if s == 0 || s > frontier - end || c.footer(end + s - 1) != s || !c.bit(end + s - 1)
                {
                    return misuse(addr, BAD_NEIGHBOUR);
                }
            }
        }
        Ok(())
    }

    // ---- freeing ----

    /// Frees the block of `size` bytes at `ptr`, merging it with free neighbours. O(1) to find
    /// the neighbours, expected O(log n) to update the index.
    ///
    /// # Safety
    /// `ptr` was returned by this heap for a block of `size` bytes (any size between the one
    /// requested and the length returned) aligned to `align`, and is not used afterwards.
    #[inline]
    pub(crate) unsafe fn dealloc(
        &mut self,
        ptr: NonNull<u8>,
        size: usize,
        align: usize,
    ) -> Result<(), Fail> {
        if size == 0 {
            return Ok(());
        }
        let (c, g, n) = self.find(ptr, size, align)?;
        // SAFETY: find checked that g..g+n is a block inside c's block area.
        unsafe { self.retire(c, g, n) };
        Ok(())
    }

    /// Frees a block another thread gave up while this heap was busy (`sync`'s deferred frees):
    /// as `dealloc`, but its first 16 bytes hold the deferral, not the caller's data.
    ///
    /// # Safety
    /// As for `dealloc`.
    pub(crate) unsafe fn dealloc_deferred(
        &mut self,
        ptr: NonNull<u8>,
        size: usize,
        align: usize,
    ) -> Result<(), Fail> {
        if !self.cfg.checked {
            // SAFETY: forwarded contract.
            return unsafe { self.dealloc(ptr, size, align) };
        }
        let (c, g) = self.locate(ptr, 1)?;
        // SAFETY: c is a live chunk of this heap and g a granule of its block area; then
        // g..g+n is a verified block of c.
        unsafe {
            let n = self.verify(c, g, ptr.addr().get(), size, align, true)?;
            self.retire(c, g, n);
        }
        Ok(())
    }

    /// A used block is given up: unmarked (checked mode), then freed.
    ///
    /// # Safety
    /// As for `free_block`.
    #[inline]
    unsafe fn retire(&mut self, c: Chunk, g: Gran, n: Gran) {
        if self.cfg.checked {
            // SAFETY: g..g+n is a used block of c, a checked chunk.
            unsafe { c.mark_used(g, n, false) };
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_block(c, g, n) };
    }

    /// Checked mode poisons, wiping mode zeroes the bytes of a block being freed.
    ///
    /// # Safety
    /// `g..g+n` is a block of live chunk `c` that nobody uses any more.
    #[inline]
    unsafe fn scrub(&self, c: Chunk, g: Gran, n: Gran) {
        // SAFETY: the span is inside c and the heap's again.
        unsafe {
            let (p, len) = (c.ptr(g).as_ptr(), bytes(n));
            if self.cfg.wipe {
                vg::defined(p, len);
                core::ptr::write_bytes(p, 0, len);
                vg::noaccess(p, len);
            } else if self.cfg.checked {
                let len = len.min(POISON_MAX);
                vg::defined(p, len);
                core::ptr::write_bytes(p, POISON, len);
                vg::noaccess(p, len);
            }
        }
    }

    /// Frees used block `g..g+n`: onto its quick list if that takes it, else merged into the
    /// free set.
    ///
    /// # Safety
    /// `g..g+n` is a used block of live chunk `c` that nobody uses any more.
    #[inline]
    unsafe fn free_block(&mut self, c: Chunk, g: Gran, n: Gran) {
        self.in_use -= bytes(n);
        // SAFETY: forwarded contract.
        unsafe {
            self.scrub(c, g, n);
            vg::take(self.vg_pool, c.ptr(g).as_ptr());
        }
        if self.cfg.quick && self.quick.admits(n as usize, self.in_use, self.peak) {
            // SAFETY: the pointer is rebuilt from the chunk base; the block is ours again.
            unsafe { self.quick.push(c.ptr(g), n as usize) };
            return;
        }
        // SAFETY: forwarded contract.
        unsafe { self.release(c, g, n) };
        if self.quick.over(self.in_use, self.peak) {
            self.trim_quick();
        }
    }

    /// The quick lists hold far more than their budget (use fell since they filled): merge a
    /// few cached blocks back, largest first, so that memory coalesces and can go back to the
    /// OS. O(1) per block.
    #[cold]
    fn trim_quick(&mut self) {
        for _ in 0..4 {
            // SAFETY: the lists hold only blocks of this live heap.
            let Some((p, n)) = (unsafe { self.quick.pop_any() }) else {
                return;
            };
            if let Ok((c, g)) = self.locate(p, n as Gran) {
                // SAFETY: a cached block is neither used nor free: it goes back now.
                unsafe { self.release(c, g, n as Gran) };
            }
        }
    }

    /// Merges every block on the quick lists into the free set. O(cached blocks x chunks).
    #[cold]
    pub(crate) fn flush(&mut self) {
        for n in 1..=QUICK_MAX {
            // SAFETY: the lists hold only blocks of this live heap.
            while let Some(p) = unsafe { self.quick.pop(n, 1) } {
                // A cached block always lies in a chunk (`check()` verifies it).
                if let Ok((c, g)) = self.locate(p, n as Gran) {
                    // SAFETY: a cached block is neither used nor free: it goes back now.
                    unsafe { self.release(c, g, n as Gran) };
                }
            }
        }
    }

    /// Returns `g..g+n` (no longer used) to the free set, merging with free neighbours or the
    /// frontier.
    ///
    /// # Safety
    /// `g..g+n` lies in `c`'s block area, is not free and nobody uses it any more.
    unsafe fn release(&mut self, c: Chunk, g: Gran, n: Gran) {
        // SAFETY: c is live; neighbours are found through boundary bits and their tags.
        unsafe {
            let h = c.h();
            let (start, end) = (g, g + n);
            let frontier = (*h).frontier;
            let prev = if start > (*h).first && c.bit(start - 1) {
                let s = c.footer(start - 1);
                Some((start - s, s))
            } else {
                None
            };
            if end < frontier && c.bit(end) {
                // The next block is free: it absorbs ours (and the previous one, if free),
                // keeping its end, so its index node just moves down.
                let s = c.get(end, Size);
                let (low, ps) = match prev {
                    Some((p, ps)) => {
                        self.take_free(c, p, ps);
                        (p, ps)
                    }
                    None => (start, 0),
                };
                self.shift_free(c, end, s, low, end + s - low);
                self.give_back_inside(c, low, end + s, n.max(s).max(ps));
                return;
            }
            match prev {
                Some((p, ps)) if end == frontier => {
                    self.take_free(c, p, ps);
                    (*h).frontier = p;
                    self.give_back_tail(c);
                }
                Some((p, ps)) => {
                    self.resize_free(c, p, ps, end - p);
                    self.give_back_inside(c, p, end, n.max(ps));
                }
                None if end == frontier => {
                    (*h).frontier = start;
                    self.give_back_tail(c);
                }
                None => {
                    self.add_free(c, start, n);
                    self.give_back_inside(c, start, end, 0);
                }
            }
        }
    }

    /// Is there a real surplus of free memory, worth a system call to give back? Only in a heap
    /// that has held at least 16 times the threshold (1 MiB by default: smaller heaps return
    /// their memory when dropped or reset, and their pages are better kept warm), and only when
    /// the free memory (indexed, plus `extra` bytes about to go) is at least what is in use: in
    /// a steady state that reuses its memory (a vector growing and moving, a churn) the heap
    /// keeps its pages, and only after use falls (a spike freed) do they go back.
    #[inline]
    fn surplus(&self, extra: usize) -> bool {
        self.peak >= self.cfg.give_back.saturating_mul(16)
            && (self.free_granules << GRANULE_SHIFT) + extra >= self.in_use
    }

    /// After the frontier moved down: once the memory between it and the clean mark (handed
    /// out before, so resident) reaches the give-back threshold, returns those pages to the OS
    /// and lowers the clean mark (on Linux they read as zero again). Amortised: one system
    /// call per threshold's worth of retreat, none on small frees.
    ///
    /// # Safety
    /// `c` is a live chunk of this heap.
    #[inline]
    unsafe fn give_back_tail(&mut self, c: Chunk) {
        // SAFETY: c is live; the pages lie between the frontier and the clean mark, which hold
        // no blocks.
        unsafe {
            let h = c.h();
            let gap = bytes((*h).clean - (*h).frontier);
            if gap >= self.cfg.give_back && (*h).mapped && self.surplus(gap) {
                let from = align_up(bytes((*h).frontier), page()).unwrap_or(usize::MAX);
                let to = bytes((*h).clean);
                if from < to && crate::region::decommit(c.base().add(from), to - from) {
                    (*h).clean = (from >> GRANULE_SHIFT) as Gran;
                }
            }
        }
    }

    /// After a free made the free block `start..end` out of parts of which the largest had
    /// `largest` granules: if the block's size passed another multiple of the give-back
    /// threshold T (in steps of T/4) that its largest part had not reached, returns its whole
    /// pages to the OS
    /// (keeping its first and last granule, which hold its node and footer). So a free block
    /// that grows by merges is given back at most once per T/4 bytes of growth, and a small free
    /// next to a big free block rarely makes a system call.
    ///
    /// # Safety
    /// `c` is live and `start..end` is a free block of it.
    #[inline]
    unsafe fn give_back_inside(&mut self, c: Chunk, start: Gran, end: Gran, largest: Gran) {
        // Steps of a quarter of the threshold: at most a quarter of it stays resident per
        // free block, at most one system call per quarter threshold of growth.
        let step = (self.cfg.give_back / 4).max(1);
        let size = bytes(end - start);
        if size < self.cfg.give_back || size / step <= bytes(largest) / step || !self.surplus(size)
        {
            return;
        }
        // SAFETY: the pages are inside a free block, past its node and before its footer.
        unsafe {
            let from = align_up(bytes(start + 1), page()).unwrap_or(usize::MAX);
            let to = align_down(bytes(end - 1), page());
            if (*c.h()).mapped && from < to {
                crate::region::decommit(c.base().add(from), to - from);
            }
        }
    }

    // ---- resizing ----

    /// Grows a block, in place when the space behind it is free or frontier, else by moving.
    /// O(1) plus expected O(log n) index work in place; O(size) when it moves. A `new` below
    /// `old` is refused (`Unsupported`) without touching the block.
    ///
    /// # Safety
    /// `ptr` is a live block of this heap of `old` bytes aligned to `old_align`.
    pub(crate) unsafe fn grow(
        &mut self,
        ptr: NonNull<u8>,
        (old, old_align): (usize, usize),
        (new, align): (usize, usize),
        zero: bool,
    ) -> Result<Block, Fail> {
        if new < old {
            // Outside the trait's contract; refused without touching the block.
            return Err(Fail::Unsupported);
        }
        if old == 0 {
            return self.alloc(new, align, zero);
        }
        if align > MAX_ALIGN {
            return Err(Fail::Unsupported);
        }
        let (c, g, n_old) = self.find(ptr, old, old_align)?;
        let n_new = granules(self.inner(new)?)?;
        // In place the block grows by the difference; a move needs even more at its peak.
        if self.in_use + bytes(n_new) - bytes(n_old.min(n_new)) > self.cfg.budget {
            return self.over_budget();
        }
        if is_aligned(ptr.addr().get(), align) {
            // SAFETY: g..g+n_old is the caller's block in c.
            if unsafe { self.extend_in_place(c, g, n_old, n_new) } {
                // SAFETY: bytes old..n_new granules are inside the caller's (grown) block.
                unsafe {
                    vg::defined(c.ptr(g + n_old).as_ptr(), bytes(n_new - n_old));
                    settle_tail(c, g, old, n_new, zero);
                    vg::resize(self.vg_pool, ptr.as_ptr(), old, new, zero);
                }
                // SAFETY: g..g+n_new is the caller's block in c.
                return Ok(unsafe { self.resized(c, g, n_old, n_new, new, align) });
            }
        }
        let b = self.alloc(new, align, zero)?;
        // SAFETY: the two blocks are distinct live blocks; old bytes are readable.
        unsafe {
            core::ptr::copy_nonoverlapping(ptr.as_ptr(), b.cast::<u8>().as_ptr(), old);
            self.retire(c, g, n_old);
        }
        Ok(b)
    }

    /// Bytes a block of `size` caller bytes needs: `size`, plus the tag in checked mode.
    #[inline]
    fn inner(&self, size: usize) -> Result<usize, Fail> {
        if self.cfg.checked {
            size.checked_add(TAG).ok_or(Fail::Unsupported)
        } else {
            Ok(size)
        }
    }

    /// After block `g` was resized in place from `n_old` to `n_new` granules: moves its
    /// checked-mode marks and reseals it; returns what the caller gets.
    ///
    /// # Safety
    /// `g..g+n_new` is now the caller's block in live chunk `c` (and was `g..g+n_old`).
    #[inline]
    unsafe fn resized(
        &mut self,
        c: Chunk,
        g: Gran,
        n_old: Gran,
        n_new: Gran,
        size: usize,
        align: usize,
    ) -> Block {
        // SAFETY: g..g+n_new is inside c (contract).
        unsafe {
            if self.cfg.checked {
                c.mark_used(g, n_old, false);
                c.mark_used(g, n_new, true);
                seal(c, g, n_new, size, align);
                return NonNull::slice_from_raw_parts(c.ptr(g), size);
            }
            NonNull::slice_from_raw_parts(c.ptr(g), bytes(n_new))
        }
    }

    /// Tries to make block `g..g+n_old` span `n_new >= n_old` granules without moving it.
    ///
    /// # Safety
    /// `g..g+n_old` is a used block of live chunk `c`.
    unsafe fn extend_in_place(&mut self, c: Chunk, g: Gran, n_old: Gran, n_new: Gran) -> bool {
        let need = n_new - n_old;
        if need == 0 {
            return true;
        }
        // SAFETY: c is live; the block after ours is found by its boundary bit.
        unsafe {
            let h = c.h();
            let end = g + n_old;
            if end == (*h).frontier {
                if (*h).granules - end < need {
                    return false;
                }
                (*h).frontier = end + need;
                self.used(need);
                // The clean mark is raised by `settle_tail`, which first zeroes what needs it.
                return true;
            }
            if !c.bit(end) {
                return false;
            }
            let s = c.get(end, Size);
            if s < need {
                return false;
            }
            if s > need {
                self.shift_free(c, end, s, end + need, s - need);
            } else {
                self.take_free(c, end, s);
            }
            self.used(need);
            true
        }
    }

    /// Shrinks a block in place, giving the tail back (merged with what follows); moves only
    /// when the block is not aligned to `align`. Expected O(log n). A `new` above `old` is
    /// refused (`Unsupported`) without touching the block.
    ///
    /// # Safety
    /// `ptr` is a live block of this heap of `old` bytes aligned to `old_align`.
    pub(crate) unsafe fn shrink(
        &mut self,
        ptr: NonNull<u8>,
        (old, old_align): (usize, usize),
        (new, align): (usize, usize),
    ) -> Result<Block, Fail> {
        if new > old {
            // Outside the trait's contract; refused without touching the block.
            return Err(Fail::Unsupported);
        }
        if align > MAX_ALIGN {
            return Err(Fail::Unsupported);
        }
        if new == 0 {
            // SAFETY: forwarded contract.
            unsafe { self.dealloc(ptr, old, old_align)? };
            return Ok(dangling(align));
        }
        let (c, g, n_old) = self.find(ptr, old, old_align)?;
        let n_new = granules(self.inner(new)?)?;
        if !is_aligned(ptr.addr().get(), align) {
            let b = self.alloc(new, align, false)?;
            // SAFETY: distinct live blocks (the old one was found above); `new` bytes of the
            // old one are readable.
            unsafe {
                core::ptr::copy_nonoverlapping(ptr.as_ptr(), b.cast::<u8>().as_ptr(), new);
                self.retire(c, g, n_old);
            }
            return Ok(b);
        }
        vg::resize(self.vg_pool, ptr.as_ptr(), old, new, false);
        if n_new < n_old {
            self.in_use -= bytes(n_old - n_new);
            // SAFETY: the tail is part of the caller's block, which it gives up.
            unsafe {
                self.scrub(c, g + n_new, n_old - n_new);
                self.release(c, g + n_new, n_old - n_new);
            }
        }
        // SAFETY: g..g+n_new is the caller's block in c.
        Ok(unsafe { self.resized(c, g, n_old, n_new, new, align) })
    }

    /// Frees every block at once: each kept chunk becomes one untouched span again (its
    /// bitmap cleared up to the old frontier), chunks beyond the first `warm` bytes (in address
    /// order) are given back. O(chunks + mapped bytes / 1024), whatever the number of blocks.
    /// The peak restarts from zero.
    pub(crate) fn reset(&mut self, warm: usize) {
        self.quick.clear();
        vg::forget_all(&mut self.vg_pool);
        let mut cur = self.head.take();
        let mut tail: Option<Chunk> = None;
        let (mut kept, mut meta, mut chunks) = (0usize, 0usize, 0usize);
        while let Some(c) = cur {
            // SAFETY: c is live; a chunk is either re-initialised in place (its mapping and
            // clean mark kept) or released, after its fields are read.
            unsafe {
                let h = c.h();
                cur = (*h).next;
                let len = (*h).len;
                if self.cfg.wipe {
                    let from = (*h).first;
                    let (p, len) = (c.ptr(from).as_ptr(), bytes((*h).frontier - from));
                    vg::defined(p, len);
                    core::ptr::write_bytes(p, 0, len);
                    vg::noaccess(p, len);
                }
                if kept + len <= warm || !(*h).mapped {
                    c.clear_blocks();
                    (*h).next = None;
                    match tail {
                        Some(t) => (*t.h()).next = Some(c),
                        None => self.head = Some(c),
                    }
                    tail = Some(c);
                    kept += len;
                    meta += bytes((*h).first);
                    chunks += 1;
                } else {
                    release_chunk(c);
                }
            }
        }
        self.mapped = kept;
        self.meta = meta;
        self.chunks = chunks;
        self.in_use = 0;
        self.peak = 0;
        self.refused = 0;
        self.free_granules = 0;
        self.free_blocks = 0;
    }

    /// Unmaps every chunk this heap mapped.
    pub(crate) fn release_all(&mut self) {
        self.quick.clear();
        vg::forget_all(&mut self.vg_pool);
        let mut cur = self.head.take();
        while let Some(c) = cur {
            // SAFETY: c is live until unmapped here; its fields are read first.
            unsafe {
                cur = (*c.h()).next;
                release_chunk(c);
            }
        }
        *self = HeapCore::new(self.cfg);
    }
}

/// Gives a chunk's memory back: to the process cache of mappings if it takes it, else to the
/// OS. Buffers (not mapped) are left to their owner.
///
/// # Safety
/// `c` is a live chunk that is unlinked and never used again.
unsafe fn release_chunk(c: Chunk) {
    // SAFETY: c is live until here; its fields are read before the memory goes.
    unsafe {
        let (len, mapped) = ((*c.h()).len, (*c.h()).mapped);
        let dirty = ((*c.h()).clean as usize) << GRANULE_SHIFT;
        #[cfg(feature = "mmap")]
        if (*c.h()).paged {
            // Paged chunk: out of the page map first (so nobody finds it there once another heap
            // reuses the mapping), then to the cache if it is a whole mapping, else to the OS.
            let (off, map_len) = ((*c.h()).map_off, (*c.h()).map_len);
            crate::region::pagemap::remove(c.base(), len);
            let whole = off == 0 && map_len == len;
            if !(whole && crate::region::cache::put(c.base(), len, dirty)) {
                crate::region::mmap::unmap(c.base().sub(off), map_len);
            }
            return;
        }
        if !mapped {
            // A caller's buffer goes back to its owner: every byte addressable again (memcheck).
            crate::vg::undefined(c.base().as_ptr(), len);
        }
        #[cfg(feature = "mmap")]
        if mapped && !crate::region::cache::put(c.base(), len, dirty) {
            crate::region::mmap::unmap(c.base(), len);
        }
        let _ = (len, mapped, dirty);
    }
}

/// The key mixed into a block's tag: differs from block to block, so a tag copied elsewhere
/// (or random bytes) rarely reads as valid.
#[inline]
fn tag_key(c: Chunk, g: Gran) -> u16 {
    let x = (c.base().addr().get() >> 12) as u32 ^ g.wrapping_mul(0x9E37_79B9);
    (x ^ x >> 16) as u16 ^ 0xA5C3
}

/// Checked mode: writes the canary after the caller's `size` bytes and the tag (the distance
/// from the caller's end to the block's end, and log2 of the alignment) in the last two bytes.
///
/// # Safety
/// `g..g+n` is a used block of live chunk `c`, `size + TAG <= bytes(n) < size + TAG + GRANULE`.
#[inline]
unsafe fn seal(c: Chunk, g: Gran, n: Gran, size: usize, align: usize) {
    let end = bytes(n);
    let dist = end - size;
    debug_assert!(
        (TAG..TAG + GRANULE).contains(&dist),
        "seal: {size} bytes in {n} granules"
    );
    // SAFETY: the canary and tag lie in the block's last granule (contract); the tag is 2-byte
    // aligned because blocks end on a granule.
    unsafe {
        let p = c.ptr(g).as_ptr();
        for i in 0..dist - TAG {
            p.add(size + i).write(CANARY ^ i as u8);
        }
        let v = dist as u16 | (align.trailing_zeros() as u16) << 8;
        p.add(end - TAG).cast::<u16>().write(v ^ tag_key(c, g));
    }
}

/// Checked mode: the caller's size and alignment recorded in the tag of block `g..g+n`, if the
/// tag is well formed.
///
/// # Safety
/// `g..g+n` is a block of live chunk `c`.
#[inline]
unsafe fn unseal(c: Chunk, g: Gran, n: Gran) -> Option<(usize, usize)> {
    let end = bytes(n);
    // SAFETY: the tag is the block's last two bytes.
    let v = unsafe { c.ptr(g).as_ptr().add(end - TAG).cast::<u16>().read() } ^ tag_key(c, g);
    let (dist, log) = ((v & 0xff) as usize, (v >> 8) as u32);
    if !(TAG..TAG + GRANULE).contains(&dist) || dist > end || 1usize << log.min(63) > MAX_ALIGN {
        return None;
    }
    Some((end - dist, 1 << log))
}

/// Checked mode: is block `g..g+n`'s tag well formed and its canary intact? `skip_first`: the
/// block's first granule may be being overwritten by a deferred free (arenas): its bytes are not
/// read (a one-granule block is not checked).
///
/// # Safety
/// `g..g+n` is a block of live chunk `c`.
pub(crate) unsafe fn seal_intact(c: Chunk, g: Gran, n: Gran, skip_first: bool) -> bool {
    if skip_first && n == 1 {
        return true;
    }
    // SAFETY: the tag and canary lie in the block's last granule.
    unsafe {
        let Some((size, _)) = unseal(c, g, n) else {
            return false;
        };
        let p = c.ptr(g).as_ptr();
        let from = if skip_first {
            GRANULE.saturating_sub(size)
        } else {
            0
        };
        (from..bytes(n) - TAG - size).all(|i| p.add(size + i).read() == CANARY ^ i as u8)
    }
}

/// After a block at `g` grew in place to `n` granules: if `zero`, zeroes bytes
/// `old..bytes(n)` (skipping granules above the clean mark, which read as zero already); in any
/// case raises the clean mark over the block.
///
/// # Safety
/// `g..g+n` is a used block of live chunk `c` whose first `old` bytes are to be kept.
unsafe fn settle_tail(c: Chunk, g: Gran, old: usize, n: Gran, zero: bool) {
    // SAFETY: all writes are inside the block.
    unsafe {
        let h = c.h();
        let end = g + n;
        let clean_byte = bytes((*h).clean.max(g)) - bytes(g);
        let stop = bytes(n).min(clean_byte);
        if zero && old < stop {
            core::ptr::write_bytes(c.ptr(g).as_ptr().add(old), 0, stop - old);
        }
        if end > (*h).clean {
            (*h).clean = end;
        }
    }
}

/// Smallest chunk length (whole pages) whose block area holds `need` bytes.
fn chunk_len_for(need: usize, checked: bool) -> Option<usize> {
    // Metadata is a header plus one bit per granule: 1/128 of the chunk, rounded up. The bitmap
    // also covers the metadata and the page rounding, which that estimate leaves out (about
    // need / 16384 bytes): add any shortfall until the block area holds `need`.
    let meta = 64 + need / if checked { 42 } else { 128 } + 2 * GRANULE;
    let mut len = round_len(need.checked_add(meta)?)?;
    loop {
        let room = len - crate::block::meta_granules(len / GRANULE, checked) * GRANULE;
        if room >= need {
            break;
        }
        len = round_len(len.checked_add(need - room)?)?;
    }
    (len <= max_chunk_len()).then_some(len)
}

/// Rounds up to whole pages.
fn round_len(len: usize) -> Option<usize> {
    let l = align_up(len, page())?;
    (l <= isize::MAX as usize).then_some(l)
}

fn max_chunk_len() -> usize {
    align_down_page(MAX_CHUNK_GRANULES << GRANULE_SHIFT)
}

fn align_down_page(x: usize) -> usize {
    align_down(x, page())
}

#[cfg(feature = "mmap")]
pub(crate) fn page() -> usize {
    crate::region::mmap::page_size()
}
#[cfg(not(feature = "mmap"))]
pub(crate) fn page() -> usize {
    4096
}

/// A detected misuse, as an error for the trait edge to report (it panics once the heap's
/// `&mut` state is released, so a panic hook may use the heap).
/// A misuse with the value given and the one the block has.
#[cold]
#[inline(never)]
fn mismatch<T>(addr: usize, what: &'static str, given: usize, allocated: usize) -> Result<T, Fail> {
    Err(Fail::Misuse(Misuse {
        addr,
        what,
        values: Some((given, allocated)),
    }))
}

/// The misuse itself (for `ok_or_else` and friends).
#[cold]
fn corrupt(addr: usize, what: &'static str) -> Fail {
    Fail::Misuse(Misuse {
        addr,
        what,
        values: None,
    })
}

#[cold]
#[inline(never)]
fn misuse<T>(addr: usize, what: &'static str) -> Result<T, Fail> {
    Err(Fail::Misuse(Misuse {
        addr,
        what,
        values: None,
    }))
}

/// Validates a builder's sizes and maps the initial chunk.
pub(crate) fn build(
    initial: usize,
    growth: usize,
    limit: Option<usize>,
    quick: bool,
    (checked, wipe): (bool, bool),
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
        quick,
        checked,
        wipe,
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
        core.map_chunk(len).map_err(|_| HeapError::OsRefused {
            bytes: len,
            errno: last_errno(),
        })?;
    }
    Ok(core)
}

fn last_errno() -> i32 {
    #[cfg(all(feature = "mmap", any(target_os = "linux", target_os = "android")))]
    // SAFETY: reading the calling thread's errno slot.
    let e = unsafe { *libc::__errno_location() };
    #[cfg(not(all(feature = "mmap", any(target_os = "linux", target_os = "android"))))]
    let e = 0;
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::meta_granules;

    /// A heap core that unmaps its chunks when dropped.
    struct Core(HeapCore);

    impl Drop for Core {
        fn drop(&mut self) {
            self.0.release_all();
        }
    }

    impl Core {
        fn new() -> Core {
            Core(HeapCore::new(Config {
                quick: false,
                checked: false,
                ..Config::DEFAULT
            }))
        }

        fn alloc(&mut self, size: usize) -> NonNull<u8> {
            self.alloc_aligned(size, 1)
        }

        fn alloc_aligned(&mut self, size: usize, align: usize) -> NonNull<u8> {
            let b = self.0.alloc(size, align, false).expect("allocation");
            assert_eq!(b.len(), align_up(size, GRANULE).unwrap());
            assert!(is_aligned(b.cast::<u8>().addr().get(), align));
            b.cast()
        }

        fn free(&mut self, p: NonNull<u8>, size: usize) {
            // SAFETY: every pointer the tests free came from `alloc` with this size.
            unsafe { self.0.dealloc(p, size, 1) }.unwrap();
        }

        fn check(&self) {
            if let Err(e) = self.0.check() {
                panic!("{e}");
            }
        }

        /// The only chunk.
        fn chunk(&self) -> Chunk {
            assert_eq!(self.0.chunks, 1);
            self.0.head.unwrap()
        }

        /// Granule number of a block's pointer.
        fn gran(&self, p: NonNull<u8>) -> Gran {
            // SAFETY: live chunk.
            unsafe { self.chunk().granule_of(p.addr().get()) }.expect("a block of the chunk")
        }

        fn frontier(&self) -> Gran {
            // SAFETY: live chunk.
            unsafe { (*self.chunk().h()).frontier }
        }

        /// The indexed free blocks of the only chunk, in address order.
        fn free_list(&self) -> std::vec::Vec<(Gran, Gran)> {
            let mut v = std::vec::Vec::new();
            // SAFETY: live chunk.
            unsafe {
                index::walk(self.chunk(), &mut |g, s| {
                    v.push((g, s));
                    Ok(())
                })
            }
            .unwrap();
            v
        }
    }

    #[test]
    fn merge_forward_backward_and_into_frontier() {
        let mut h = Core::new();
        let (a, b, c) = (h.alloc(100), h.alloc(200), h.alloc(300));
        let (ga, gb, gc) = (h.gran(a), h.gran(b), h.gran(c));
        assert_eq!((gb, gc), (ga + 7, ga + 7 + 13));
        assert_eq!(h.frontier(), gc + 19);
        assert_eq!(h.0.in_use, 112 + 208 + 304);
        h.check();

        h.free(b, 200);
        h.check();
        assert_eq!(h.free_list(), [(gb, 13)]);
        assert_eq!(h.0.free_blocks, 1);
        assert_eq!(h.0.in_use, 112 + 304);
        assert_eq!(
            h.0.stats().free_blocks,
            2,
            "one free block plus the frontier"
        );

        // A's successor is free: they merge into one block starting at A.
        h.free(a, 100);
        h.check();
        assert_eq!(h.free_list(), [(ga, 20)]);
        assert_eq!(h.0.free_blocks, 1);
        assert_eq!(h.0.in_use, 304);

        // C has a free predecessor and the frontier behind it: everything becomes frontier.
        let f = h.frontier();
        h.free(c, 300);
        h.check();
        assert!(h.free_list().is_empty());
        assert_eq!(h.0.free_blocks, 0);
        assert_eq!(h.0.free_granules, 0);
        assert_eq!(h.frontier(), ga);
        assert!(h.frontier() < f);
        let s = h.0.stats();
        assert_eq!((s.in_use, s.free_blocks, s.chunks), (0, 1, 1));
        assert_eq!(s.in_use + s.free + s.metadata, s.mapped);
        assert_eq!(s.largest_free, s.free);
    }

    #[test]
    fn merge_both_sides_below_frontier() {
        let mut h = Core::new();
        let (a, b, c, guard) = (h.alloc(64), h.alloc(32), h.alloc(48), h.alloc(16));
        let ga = h.gran(a);
        h.free(a, 64);
        h.free(c, 48);
        h.check();
        assert_eq!(h.free_list(), [(ga, 4), (ga + 6, 3)]);
        assert_eq!(h.0.free_blocks, 2);
        // B has free blocks on both sides: three blocks become one.
        h.free(b, 32);
        h.check();
        assert_eq!(h.free_list(), [(ga, 9)]);
        assert_eq!(h.0.free_blocks, 1);
        assert_eq!(h.0.free_granules, 9);
        assert_eq!(h.0.in_use, 16);
        assert_eq!(h.gran(guard), ga + 9);
        h.free(guard, 16);
        h.check();
        assert_eq!(h.0.free_blocks, 0);
        assert_eq!(h.frontier(), ga);
    }

    #[test]
    fn split_leaves_the_remainder_free_right_after() {
        let mut h = Core::new();
        let big = h.alloc(64 * GRANULE);
        let guard = h.alloc(GRANULE);
        let g = h.gran(big);
        h.free(big, 64 * GRANULE);
        h.check();
        assert_eq!(h.free_list(), [(g, 64)]);

        let small = h.alloc(10 * GRANULE - 3);
        assert_eq!(small, big, "first fit reuses the free block's start");
        h.check();
        assert_eq!(h.free_list(), [(g + 10, 54)]);
        let c = h.chunk();
        // SAFETY: g + 10 is a free block of the live chunk.
        unsafe {
            assert!(c.bit(g + 10) && c.bit(g + 63));
            assert!(!c.bit(g + 9) && !c.bit(g + 64));
            assert_eq!(c.footer(g + 63), 54);
        }
        assert_eq!(h.0.in_use, 11 * GRANULE);

        // An exact fit takes the whole block.
        let exact = h.alloc(54 * GRANULE);
        assert_eq!(h.gran(exact), g + 10);
        assert!(h.free_list().is_empty());
        h.check();
        h.free(small, 10 * GRANULE - 3);
        h.free(exact, 54 * GRANULE);
        h.free(guard, GRANULE);
        h.check();
        assert_eq!(h.0.in_use, 0);
        assert_eq!(h.0.stats().free_blocks, 1);
    }

    #[test]
    fn aligned_split_frees_padding_and_tail() {
        let mut h = Core::new();
        // Put a free block of 256 granules somewhere not aligned to 1024 bytes.
        let lead = h.alloc(GRANULE);
        let big = h.alloc(256 * GRANULE);
        let guard = h.alloc(GRANULE);
        let g = h.gran(big);
        h.free(big, 256 * GRANULE);
        let p = h.alloc_aligned(100, 1024);
        h.check();
        let a = h.gran(p);
        assert!(
            a >= g && a < g + 64,
            "aligned block taken from the free block"
        );
        let mut want = std::vec::Vec::new();
        if a > g {
            want.push((g, a - g));
        }
        want.push((a + 7, g + 256 - (a + 7)));
        assert_eq!(h.free_list(), want);
        assert_eq!(h.0.free_granules, 256 - 7);
        h.free(p, 100);
        h.check();
        assert_eq!(h.free_list(), [(g, 256)]);
        h.free(lead, GRANULE);
        h.free(guard, GRANULE);
        h.check();
        assert_eq!(h.0.in_use, 0);
        assert_eq!(h.0.free_blocks, 0);
    }

    #[test]
    fn grow_in_place_into_free_successor_and_shrink_merges_forward() {
        let mut h = Core::new();
        let (a, b, guard) = (h.alloc(32), h.alloc(160), h.alloc(16));
        let ga = h.gran(a);
        h.free(b, 160);
        // SAFETY: a is a live 32-byte block.
        unsafe {
            a.as_ptr().write_bytes(0xA5, 32);
            let r = h.0.grow(a, (32, 16), (96, 16), true).unwrap();
            assert_eq!(r.cast::<u8>(), a, "grew in place");
            assert_eq!(r.len(), 96);
            let s = core::slice::from_raw_parts(a.as_ptr(), 96);
            assert!(s[..32].iter().all(|&x| x == 0xA5));
            assert!(
                s[32..].iter().all(|&x| x == 0),
                "grow_zeroed over a dirty free block"
            );
        }
        h.check();
        assert_eq!(h.free_list(), [(ga + 6, 6)]);
        // Shrinking gives the tail back, merged with the free block behind it.
        // SAFETY: a is a live 96-byte block.
        let r = unsafe { h.0.shrink(a, (96, 16), (20, 16)) }.unwrap();
        assert_eq!((r.cast::<u8>(), r.len()), (a, 32));
        h.check();
        assert_eq!(h.free_list(), [(ga + 2, 10)]);
        assert_eq!(h.0.in_use, 32 + 16);
        h.free(a, 20);
        h.free(guard, 16);
        h.check();
        assert_eq!(h.0.free_blocks, 0);
    }

    #[test]
    fn zeroed_allocation_of_dirty_memory() {
        let mut h = Core::new();
        let a = h.alloc(4096);
        // SAFETY: a is a live 4096-byte block.
        unsafe { a.as_ptr().write_bytes(0xFF, 4096) };
        h.free(a, 4096);
        let b = h.0.alloc(4000, 8, true).unwrap();
        assert_eq!(b.cast::<u8>(), a, "reuses the dirty memory");
        // SAFETY: b is a live block of b.len() bytes.
        let s = unsafe { core::slice::from_raw_parts(b.cast::<u8>().as_ptr(), b.len()) };
        assert!(s.iter().all(|&x| x == 0));
        h.free(b.cast(), 4000);
        h.check();
    }

    /// A new chunk made for a request must hold it: `alloc_new_chunk` fails otherwise, and
    /// `with_capacity(n)` promises `n` bytes of block space.
    #[test]
    fn chunk_len_for_leaves_room_for_the_request() {
        let mut need = GRANULE;
        let max = if cfg!(miri) { 1 << 24 } else { 1 << 34 };
        let mut step = GRANULE;
        while need <= max {
            for k in 0..64 {
                let n = need + k * GRANULE;
                let len = chunk_len_for(n, false).unwrap();
                assert_eq!(len % page(), 0);
                let room = len - bytes(meta_granules(len / GRANULE, false) as Gran);
                assert!(room >= n, "chunk of {len} bytes holds {room} < {n}");
            }
            need += step;
            step = (step + step / 4 + GRANULE) & !(GRANULE - 1);
        }
    }

    #[test]
    fn fresh_chunk_serves_awkward_sizes() {
        // Sizes for which a chunk sized too tightly comes up short (about 1 MB up).
        for size in [1_024_096usize, 1_028_160, 2_093_056 - 16 * 8] {
            let mut h = Core::new();
            let b = h.0.alloc(size, 16, false);
            assert!(b.is_ok(), "fresh heap failed to allocate {size} bytes");
            h.free(b.unwrap().cast(), size);
            h.check();
        }
    }

    #[test]
    fn build_validates_sizes() {
        assert!(matches!(
            build(0, 0, None, true, (false, false)),
            Err(HeapError::ZeroSize)
        ));
        assert!(matches!(
            build(0, 4096, Some(0), true, (false, false)),
            Err(HeapError::ZeroSize)
        ));
        assert!(matches!(
            build(0, 4096, Some(1), true, (false, false)),
            Err(HeapError::TooSmall { requested: 1, .. })
        ));
        assert!(matches!(
            build(usize::MAX, 4096, None, true, (false, false)),
            Err(HeapError::TooLarge { .. })
        ));
        assert!(matches!(
            build(2 << 20, 4096, Some(1 << 20), true, (false, false)),
            Err(HeapError::LimitBelowInitial { .. })
        ));
        // The limit counts metadata: an initial size equal to the limit maps exactly the limit.
        let mut c = Core(
            build(
                256 << 10,
                DEFAULT_GROWTH,
                Some(256 << 10),
                true,
                (false, false),
            )
            .unwrap(),
        );
        assert_eq!(c.0.mapped, 256 << 10);
        c.check();
        assert!(c.0.alloc(200 << 10, 16, false).is_ok());
        assert_eq!(c.0.alloc(100 << 10, 16, false), Err(Fail::Limit));
        assert_eq!(c.0.chunks, 1);
    }
}

/// Checked mode, at the core: every misuse is reported (as `Fail::Misuse`, before anything
/// changes) with the right reason, and the heap stays consistent afterwards. These run under
/// Miri too (the panicking edge and the child-process tests in `tests/faults.rs` cannot).
#[cfg(test)]
mod checked_tests {
    use super::*;

    struct Core(HeapCore);

    impl Drop for Core {
        fn drop(&mut self) {
            self.0.release_all();
        }
    }

    fn core(quick: bool) -> Core {
        Core(HeapCore::new(Config {
            quick,
            checked: true,
            ..Config::DEFAULT
        }))
    }

    fn what<T: core::fmt::Debug>(r: Result<T, Fail>) -> (&'static str, Option<(usize, usize)>) {
        match r {
            Err(Fail::Misuse(m)) => (m.what, m.values),
            other => panic!("expected a misuse, got {other:?}"),
        }
    }

    fn alloc(h: &mut Core, size: usize, align: usize) -> NonNull<u8> {
        let b = h.0.alloc(size, align, false).unwrap();
        assert_eq!(b.len(), size, "checked mode returns exactly the size asked");
        b.cast()
    }

    #[test]
    fn double_free_cached_and_merged() {
        for quick in [true, false] {
            let mut h = core(quick);
            let a = alloc(&mut h, 24, 8);
            let _guard = alloc(&mut h, 24, 8);
            // SAFETY: a is live with this layout; the second free is the misuse under test.
            unsafe {
                h.0.dealloc(a, 24, 8).unwrap();
                assert_eq!(what(h.0.dealloc(a, 24, 8)).0, DOUBLE_FREE, "quick {quick}");
            }
            h.0.check().unwrap();
        }
    }

    #[test]
    fn foreign_and_interior_pointers() {
        let mut h = core(true);
        let mut other = core(true);
        let a = alloc(&mut h, 100, 16);
        let f = alloc(&mut other, 100, 16);
        // SAFETY: every call below is a misuse that must be refused before any change.
        unsafe {
            assert_eq!(what(h.0.dealloc(f, 100, 16)).0, FOREIGN);
            assert_eq!(what(h.0.dealloc(a.add(32), 68, 16)).0, INTERIOR);
            assert_eq!(what(h.0.dealloc(a.add(3), 97, 1)).0, NOT_A_BLOCK);
            let mut local = 0u64;
            let stack = NonNull::from(&mut local).cast::<u8>();
            assert_eq!(what(h.0.dealloc(stack, 8, 8)).0, FOREIGN);
            assert_eq!(
                what(h.0.grow(f, (100, 16), (200, 16), false)).0,
                FOREIGN,
                "grow checks ownership"
            );
            assert_eq!(what(h.0.shrink(f, (100, 16), (50, 16))).0, FOREIGN);
            h.0.check().unwrap();
            other.0.check().unwrap();
            h.0.dealloc(a, 100, 16).unwrap();
            other.0.dealloc(f, 100, 16).unwrap();
        }
        h.0.check().unwrap();
    }

    #[test]
    fn size_and_alignment_must_match() {
        let mut h = core(true);
        let a = alloc(&mut h, 20, 8);
        // SAFETY: misuses refused before any change, then the right layout.
        unsafe {
            // Same granules, bigger and smaller: caught by the tag; other granules too.
            for wrong in [21, 30, 17, 1, 14, 64, 4096] {
                assert_eq!(
                    what(h.0.dealloc(a, wrong, 8)),
                    (BAD_SIZE, Some((wrong, 20)))
                );
            }
            assert_eq!(what(h.0.dealloc(a, 20, 4)), (BAD_ALIGN, Some((4, 8))));
            assert_eq!(what(h.0.dealloc(a, 20, 16)), (BAD_ALIGN, Some((16, 8))));
            assert_eq!(
                what(h.0.grow(a, (24, 8), (48, 8), false)).1,
                Some((24, 20)),
                "grow checks the old layout"
            );
            assert_eq!(what(h.0.shrink(a, (20, 2), (10, 2))).0, BAD_ALIGN);
            h.0.check().unwrap();
            let b = h.0.grow(a, (20, 8), (40, 8), false).unwrap();
            let b = h.0.shrink(b.cast(), (40, 8), (9, 8)).unwrap();
            assert_eq!(b.len(), 9);
            assert_eq!(what(h.0.dealloc(b.cast(), 40, 8)).1, Some((40, 9)));
            h.0.dealloc(b.cast(), 9, 8).unwrap();
        }
        h.0.check().unwrap();
        assert_eq!(h.0.in_use, 0);
    }

    #[test]
    fn overflow_into_canary_and_tag() {
        let mut h = core(true);
        let a = alloc(&mut h, 20, 8);
        let b = alloc(&mut h, 30, 8);
        // SAFETY: the writes past the blocks' ends are the faults under test; they stay inside
        // the blocks' last granules (the heap's canary and tag), which are heap memory.
        unsafe {
            a.as_ptr().add(20).write(0);
            let e = h.0.check().unwrap_err();
            assert!(e.what.contains("canary"), "check() sees the overflow: {e}");
            assert_eq!(what(h.0.dealloc(a, 20, 8)).0, BAD_CANARY);
            a.as_ptr().add(20).write(CANARY);
            h.0.dealloc(a, 20, 8).unwrap();
            b.as_ptr().add(31).write(!b.as_ptr().add(31).read());
            assert_eq!(what(h.0.dealloc(b, 30, 8)).0, BAD_TAG);
            b.as_ptr().add(31).write(!b.as_ptr().add(31).read());
            h.0.dealloc(b, 30, 8).unwrap();
        }
        h.0.check().unwrap();
    }

    #[test]
    fn corrupted_free_neighbour_and_write_after_free() {
        let mut h = core(false);
        let a = alloc(&mut h, 200, 16);
        let b = alloc(&mut h, 200, 16);
        let _guard = alloc(&mut h, 16, 16);
        // SAFETY: the stale writes are the faults under test; they land in the heap's own
        // (free) memory.
        unsafe {
            h.0.dealloc(b, 200, 16).unwrap();
            // A stale write over b's node (its size field).
            let saved = b.as_ptr().add(12).cast::<u32>().read();
            b.as_ptr().add(12).cast::<u32>().write(7);
            assert_eq!(what(h.0.dealloc(a, 200, 16)).0, BAD_NEIGHBOUR);
            b.as_ptr().add(12).cast::<u32>().write(saved);
            h.0.check().unwrap();
            h.0.dealloc(a, 200, 16).unwrap();
        }
        h.0.check().unwrap();
        // Quick lists: a reused block must still hold its poison.
        let mut h = core(true);
        let a = alloc(&mut h, 64, 16);
        // SAFETY: a is live, then freed; the write after free is the fault under test.
        unsafe {
            a.as_ptr().write_bytes(1, 64);
            h.0.dealloc(a, 64, 16).unwrap();
            assert!(
                core::slice::from_raw_parts(a.as_ptr().add(8), 56)
                    .iter()
                    .all(|&x| x == POISON),
                "freed memory is poisoned"
            );
            a.as_ptr().add(40).write(0);
        }
        assert_eq!(what(h.0.alloc(64, 16, false)).0, WRITE_AFTER_FREE);
        // The damaged block went back to the free set: the heap is whole and usable.
        h.0.check().unwrap();
        assert_eq!(h.0.in_use, 0);
        let b = alloc(&mut h, 64, 16);
        // SAFETY: b is live with this layout.
        unsafe { h.0.dealloc(b, 64, 16).unwrap() };
        h.0.check().unwrap();
    }

    #[test]
    fn wipe_zeroes_freed_blocks_and_reset() {
        let mut h = Core(HeapCore::new(Config {
            wipe: true,
            ..Config::DEFAULT
        }));
        let a = h.0.alloc(300, 16, false).unwrap().cast::<u8>();
        let keep = h.0.alloc(300, 16, false).unwrap().cast::<u8>();
        // SAFETY: live blocks of 300 bytes; a is read after its free as heap memory (it is
        // still mapped and the test owns the heap).
        unsafe {
            a.as_ptr().write_bytes(0xAB, 300);
            keep.as_ptr().write_bytes(0xCD, 300);
            h.0.dealloc(a, 300, 16).unwrap();
            // The first words hold free-list links; the secret bytes after them are gone.
            let rest = core::slice::from_raw_parts(a.as_ptr().add(16), 280);
            assert!(rest.iter().all(|&x| x == 0), "freed block wiped");
            h.0.reset(usize::MAX);
            let rest = core::slice::from_raw_parts(keep.as_ptr(), 300);
            assert!(rest.iter().all(|&x| x == 0), "reset wipes used memory");
        }
    }
}
