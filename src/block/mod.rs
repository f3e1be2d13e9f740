//! The block format: chunk header, the free-boundary bitmap, free-block tags. All pointer
//! arithmetic between blocks lives here; other modules speak in granule numbers.
//!
//! A chunk is one run of memory (one mapping, or a caller's buffer):
//!
//! ```text
//! base                                                                   base + len
//! | Chunk header | bitmap: 1 bit per granule | blocks ...  | frontier (untouched) |
//! granule 0 ..                              `first`        `frontier`   `granules`
//! ```
//!
//! Memory is counted in granules of [`GRANULE`] bytes; a block is a whole number of granules.
//! Used blocks carry **no header**: the `Layout` handed to `deallocate` gives their size. A free
//! block keeps its metadata in its own first granule (the index node: left, right, subtree max,
//! size, each a `u32`) and repeats its size in the last four bytes of its last granule (the
//! footer; for a one-granule block it is the same word). The bitmap has a bit set at the first
//! and at the last granule of every free block, so the blocks on either side of any block are
//! found in O(1): the next block is free iff the bit just past its end is set, the previous one
//! iff the bit just before its start is set, and then its footer gives its start.

use core::mem::size_of;
use core::ptr::NonNull;

mod links;
mod seal;

pub(crate) use links::{quick_link, set_quick_link};
#[cfg(feature = "mmap")]
pub(crate) use links::{remote_layout, remote_next, remote_next_set, set_remote};
#[cfg(test)]
pub(crate) use seal::CANARY;
pub(crate) use seal::{TAG, canary_intact, seal, seal_intact, unseal};

/// The largest alignment served. Bigger alignments get `AllocError`. (The checked-mode tag
/// records log2 of the alignment.)
pub const MAX_ALIGN: usize = 1 << 26;

/// Bytes per granule: the unit of block sizes and the alignment every block has.
pub(crate) const GRANULE: usize = 16;
/// `log2(GRANULE)`.
pub(crate) const GRANULE_SHIFT: u32 = 4;
/// The most granules one chunk can hold (granule numbers are `u32`).
pub(crate) const MAX_CHUNK_GRANULES: usize = u32::MAX as usize;

/// Granule number inside one chunk. `0` is the chunk header, never a block, so it doubles as
/// "none" in index links.
pub(crate) type Gran = u32;

/// The header at the base of every chunk.
#[repr(C)]
pub(crate) struct ChunkHeader {
    /// Next chunk of the same heap in address order.
    next: Option<Chunk>,
    /// Bytes in the chunk (the whole mapping or buffer).
    len: usize,
    /// Whether the chunk is an OS mapping the heap must unmap.
    mapped: bool,
    /// Granules in the chunk, header included.
    granules: Gran,
    /// First granule that can be a block (after header and bitmap).
    first: Gran,
    /// Start of the untouched tail; blocks live in `first..frontier`.
    frontier: Gran,
    /// Granules at and above `clean` have never been handed out and still read as zero.
    clean: Gran,
    /// Root of the free-block index (0 when empty).
    root: Gran,
    /// Identity of the arena that owns the chunk (0 for a plain heap's chunks). Written once,
    /// before the chunk is published, so other threads may read it without the arena's lock.
    owner: usize,
    /// A chunk made for one large block: only its first granules may start a block (so its
    /// owner can be found from a block's address), and it is not searched by first fit.
    single: bool,
    /// Bytes of the underlying mapping before `base` (mappings over-allocated for alignment).
    map_off: usize,
    /// Bytes of the underlying mapping.
    map_len: usize,
    /// Checked mode: two more bitmaps follow the boundary bitmap, marking the first
    /// (`Used::Start`) and the last (`Used::End`) granule of every used block.
    checked: bool,
    /// The chunk's address windows are recorded in the process page map (see
    /// `region::pagemap`): arena chunks and the chunks of checked heaps.
    paged: bool,
    /// Carved from a segment of the chunk provider (`region::provider`), which takes it back.
    carved: bool,
    /// A block of the parent heap, lent to a child heap as its chunk: it goes back to the parent.
    lent: bool,
    /// Bit `k` set iff size class `k`'s list of free blocks is not empty (see `bins`).
    bin_map: u64,
    /// The first free block of each size class's list (0: empty; see `bins`).
    bins: [Gran; crate::bins::BINS],
}

/// Which of the checked-mode bitmaps of used blocks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Used {
    /// Bit set at the first granule of every used block.
    Start = 1,
    /// Bit set at the last granule of every used block.
    End = 2,
}

/// A handle to a chunk: the chunk's base pointer, which is the provenance root for every block
/// in it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Chunk(NonNull<ChunkHeader>);

/// Bytes of header plus bitmaps for a chunk of `granules` granules, rounded to a granule: one
/// bitmap, three in checked mode.
pub(crate) const fn meta_granules(granules: usize, checked: bool) -> usize {
    let words = granules.div_ceil(64) * if checked { 3 } else { 1 };
    (size_of::<ChunkHeader>() + words * 8).div_ceil(GRANULE)
}

impl Chunk {
    /// Writes a fresh chunk header and a clear bitmap over `len` bytes at `base`; every granule
    /// after the metadata is frontier.
    ///
    /// # Safety
    /// `base..base + len` is memory the caller owns exclusively for the chunk's whole life,
    /// readable and writable, aligned to [`GRANULE`]; `len` is a multiple of `GRANULE` and at
    /// most `MAX_CHUNK_GRANULES` granules, and larger than the metadata. Every byte at or after
    /// `base + dirty` reads as zero.
    pub unsafe fn init(
        base: NonNull<u8>,
        len: usize,
        mapped: bool,
        dirty: usize,
        checked: bool,
    ) -> Chunk {
        let granules = len / GRANULE;
        let first = meta_granules(granules, checked);
        debug_assert!(
            len.is_multiple_of(GRANULE) && granules <= MAX_CHUNK_GRANULES && first < granules
        );
        let hdr = base.cast::<ChunkHeader>();
        // A mapping from the process cache may hold a freed heap's blocks where this chunk's
        // metadata goes.
        crate::vg::defined(base.as_ptr(), first * GRANULE);
        // SAFETY: the caller gives exclusive, aligned, writable memory at least this large.
        unsafe {
            hdr.write(ChunkHeader {
                next: None,
                len,
                mapped,
                granules: granules as Gran,
                first: first as Gran,
                frontier: first as Gran,
                clean: dirty.div_ceil(GRANULE).clamp(first, granules) as Gran,
                root: 0,
                owner: 0,
                single: false,
                map_off: 0,
                map_len: len,
                checked,
                paged: false,
                carved: false,
                lent: false,
                bin_map: 0,
                bins: [0; crate::bins::BINS],
            });
            // Only the bitmap words inside the dirty prefix need clearing: the rest is still
            // zero from the OS (and stays untouched, so it costs no memory until used).
            let words = base.add(size_of::<ChunkHeader>()).cast::<u64>();
            let dirty_words = dirty.saturating_sub(size_of::<ChunkHeader>()).div_ceil(8);
            let all = granules.div_ceil(64) * if checked { 3 } else { 1 };
            core::ptr::write_bytes(words.as_ptr(), 0, all.min(dirty_words));
        }
        Chunk(hdr)
    }

    /// Makes every block of the chunk untouched frontier again: clears the boundary bits up
    /// to the frontier and empties the index. The clean mark stays (the memory is dirty).
    ///
    /// # Safety
    /// The chunk is live and nobody uses any of its blocks any more.
    pub unsafe fn clear_blocks(self) {
        // SAFETY: the bitmap words up to the frontier's lie inside the chunk's metadata.
        unsafe {
            let h = self.h();
            let words = ((*h).frontier as usize).div_ceil(64);
            let w = self.base().add(size_of::<ChunkHeader>()).cast::<u64>();
            core::ptr::write_bytes(w.as_ptr(), 0, words);
            if (*h).checked {
                let stride = ((*h).granules as usize).div_ceil(64);
                core::ptr::write_bytes(w.add(stride).as_ptr(), 0, words);
                core::ptr::write_bytes(w.add(2 * stride).as_ptr(), 0, words);
            }
            (*h).frontier = (*h).first;
            (*h).root = 0;
            (*h).bin_map = 0;
            (*h).bins = [0; crate::bins::BINS];
        }
    }

    /// The first block of size class `k`'s list (0: empty).
    ///
    /// # Safety
    /// The chunk is live and `k < BINS`.
    #[inline]
    pub unsafe fn bin_head(self, k: usize) -> Gran {
        debug_assert!(k < crate::bins::BINS, "bin_head: no size class {k}");
        // SAFETY: a field of a live header (contract), read as a place.
        unsafe { *(&raw const (*self.h()).bins).cast::<Gran>().add(k) }
    }

    /// Sets the first block of size class `k`'s list.
    ///
    /// # Safety
    /// The chunk is live, `k < BINS`, and the caller may change its header (it owns the chunk).
    #[inline]
    pub unsafe fn set_bin_head(self, k: usize, g: Gran) {
        debug_assert!(k < crate::bins::BINS, "set_bin_head: no size class {k}");
        // SAFETY: a field of a live header (contract), written as a place.
        unsafe { *(&raw mut (*self.h()).bins).cast::<Gran>().add(k) = g }
    }

    /// The paged chunk that contains `addr` (found through the process page map, with its
    /// provenance) and the owner's identity it was published with, if any. O(1), lock-free,
    /// from the process tables alone: no chunk header is read.
    ///
    /// The tables name only published chunks (and chunks a thread's cache keeps, under the
    /// identity of a dropped heap, which no live heap has). The chunk is live if `addr` is in a
    /// block the caller holds; for any other address (a misuse), a chunk being dropped by
    /// another thread at this very moment can be named: see README "Hardening".
    #[inline]
    pub fn paged_at(addr: usize) -> Option<(Chunk, usize)> {
        let (base, owner) = crate::region::chunk_of(addr)?;
        Some((Chunk(base.cast()), owner))
    }

    /// The chunk's base address.
    #[inline]
    pub fn base(self) -> NonNull<u8> {
        self.0.cast()
    }

    /// Raw pointer to the header. Fields are read and written through it as places, only by
    /// the accessors below (never through long-lived references), so no two references to a
    /// header can overlap.
    #[inline]
    fn h(self) -> *mut ChunkHeader {
        self.0.as_ptr()
    }

    /// Pointer to the header's index root (the index links it like any child link).
    ///
    /// # Safety
    /// The chunk is live.
    #[inline]
    pub unsafe fn root_link(self) -> NonNull<u32> {
        // SAFETY: a field of a live chunk's header (contract); the pointer is derived from the
        // chunk base, so it carries the chunk's provenance.
        unsafe { NonNull::new_unchecked(&raw mut (*self.h()).root) }
    }

    /// Pointer to the start of granule `g`, derived from the chunk base.
    ///
    /// # Safety
    /// The chunk is live and `g <= granules`.
    #[inline]
    pub unsafe fn ptr(self, g: Gran) -> NonNull<u8> {
        // SAFETY: g is inside the chunk (or one past its end), so the offset stays in bounds.
        unsafe { self.base().add((g as usize) << GRANULE_SHIFT) }
    }

    /// Granule number of an address inside this chunk, if it is inside its block area
    /// (`first..frontier`) and on a granule boundary.
    ///
    /// # Safety
    /// The chunk is live.
    #[inline]
    pub unsafe fn granule_of(self, addr: usize) -> Option<Gran> {
        let off = addr.wrapping_sub(self.base().addr().get());
        // SAFETY: live chunk.
        let (first, frontier) = unsafe { ((*self.h()).first, (*self.h()).frontier) };
        let g = off >> GRANULE_SHIFT;
        if !off.is_multiple_of(GRANULE) || g < first as usize || g >= frontier as usize {
            return None;
        }
        Some(g as Gran)
    }

    /// Does this chunk's memory contain `addr`?
    ///
    /// # Safety
    /// The chunk is live.
    #[inline]
    pub unsafe fn contains(self, addr: usize) -> bool {
        // SAFETY: live chunk.
        let len = unsafe { (*self.h()).len };
        addr.wrapping_sub(self.base().addr().get()) < len
    }

    #[inline]
    fn word(self, g: Gran) -> NonNull<u64> {
        let b = self.base();
        // SAFETY: the bitmap follows the header; word g/64 exists for every g < granules (the
        // callers' contract), so the offset stays inside the chunk's metadata.
        unsafe {
            b.add(size_of::<ChunkHeader>())
                .cast::<u64>()
                .add(g as usize / 64)
        }
    }

    /// Is the boundary bit of granule `g` set (first or last granule of a free block)?
    ///
    /// # Safety
    /// The chunk is live and `g < granules`.
    #[inline]
    pub unsafe fn bit(self, g: Gran) -> bool {
        // SAFETY: word in the bitmap, see `word`.
        unsafe { self.word(g).read() >> (g % 64) & 1 != 0 }
    }

    /// The last granule in `from..=at` whose boundary bit is set, if any. O(words).
    ///
    /// # Safety
    /// The chunk is live and `at < granules`.
    pub unsafe fn prev_bit(self, from: Gran, at: Gran) -> Option<Gran> {
        let mut at = at;
        loop {
            // SAFETY: at < granules (contract; it only falls below).
            let w = unsafe { self.bitmap_word(at) } << (63 - at % 64);
            if w != 0 {
                let g = at - w.leading_zeros();
                return (g >= from).then_some(g);
            }
            let below = at - at % 64;
            if below <= from {
                return None;
            }
            at = below - 1;
        }
    }

    /// The first granule in `at..limit` whose boundary bit is set, else `limit`. O(words).
    ///
    /// # Safety
    /// The chunk is live and `limit <= granules`.
    pub unsafe fn next_bit(self, mut at: Gran, limit: Gran) -> Gran {
        while at < limit {
            // SAFETY: at < limit <= granules.
            let w = unsafe { self.bitmap_word(at) } >> (at % 64);
            if w != 0 {
                return (at + w.trailing_zeros()).min(limit);
            }
            at = (at | 63).saturating_add(1);
        }
        limit
    }

    /// Reads the bitmap word holding granule `g`'s bit.
    ///
    /// # Safety
    /// The chunk is live and `g < granules`.
    #[inline]
    pub unsafe fn bitmap_word(self, g: Gran) -> u64 {
        // SAFETY: word in the bitmap, see `word`.
        unsafe { self.word(g).read() }
    }

    #[inline]
    unsafe fn flip(self, g: Gran, on: bool) {
        let w = self.word(g);
        // SAFETY: word in the bitmap (caller keeps g < granules); the heap is single-threaded
        // behind `&mut`, so a plain read-modify-write is exclusive.
        unsafe {
            let v = w.read();
            let m = 1u64 << (g % 64);
            debug_assert!(
                (v & m != 0) != on,
                "boundary bit of granule {g} already {on}"
            );
            w.write(if on { v | m } else { v & !m });
        }
    }

    /// The word of checked-mode bitmap `which` that holds granule `g`'s bit.
    ///
    /// # Safety
    /// 1. The chunk is live;
    /// 2. it is checked (it has the used-block bitmaps);
    /// 3. `g < granules`.
    #[inline]
    unsafe fn used_word(self, which: Used, g: Gran) -> NonNull<u64> {
        // SAFETY: a checked chunk has three bitmaps of `granules.div_ceil(64)` words each after
        // its header (see `meta_granules`); word g/64 of bitmap `which` lies inside them.
        unsafe {
            let stride = ((*self.h()).granules as usize).div_ceil(64);
            self.base()
                .add(size_of::<ChunkHeader>())
                .cast::<u64>()
                .add(which as usize * stride + g as usize / 64)
        }
    }

    /// Is granule `g`'s bit set in checked-mode bitmap `which`?
    ///
    /// # Safety
    /// 1. The chunk is live;
    /// 2. it is checked;
    /// 3. `g < granules`.
    #[inline]
    pub unsafe fn used_bit(self, which: Used, g: Gran) -> bool {
        // SAFETY: `used_word`: (1) live, (2) checked, (3) `g < granules`: this function's items
        // 1-3. The word it returns lies in the chunk's metadata (aligned, initialised by `init`
        // or zero from the OS), so the read is in bounds.
        unsafe { self.used_word(which, g).read() >> (g % 64) & 1 != 0 }
    }

    /// The first granule in `at..limit` whose bit is set in checked-mode bitmap `which`, else
    /// `limit`. O(words scanned).
    ///
    /// # Safety
    /// The chunk is live, checked, and `limit <= granules`.
    pub unsafe fn next_used_bit(self, which: Used, mut at: Gran, limit: Gran) -> Gran {
        while at < limit {
            // SAFETY: at < limit <= granules.
            let w = unsafe { self.used_word(which, at).read() } >> (at % 64);
            if w != 0 {
                return (at + w.trailing_zeros()).min(limit);
            }
            at = (at | 63).saturating_add(1);
        }
        limit
    }

    /// Checked mode: marks `g..g + n` as a used block (`on`) or as no longer one.
    ///
    /// # Safety
    /// The chunk is live and checked; `g + n <= granules`, `n >= 1`.
    #[inline]
    pub unsafe fn mark_used(self, g: Gran, n: Gran, on: bool) {
        for (which, at) in [(Used::Start, g), (Used::End, g + n - 1)] {
            // SAFETY: both granules are inside the chunk (contract); the heap is behind `&mut`.
            unsafe {
                let w = self.used_word(which, at);
                let m = 1u64 << (at % 64);
                let v = w.read();
                w.write(if on { v | m } else { v & !m });
            }
        }
    }

    /// Makes `g..g + size` a free block: writes its size into the node and the footer and sets
    /// its boundary bits. Does not touch the index (links are left for it to write).
    ///
    /// # Safety
    /// 1. The chunk is live;
    /// 2. `first <= g`, `g + size <= frontier`, `size >= 1`;
    /// 3. the span is not handed out to anyone and no granule of it is in a marked free block.
    #[inline]
    pub unsafe fn mark_free(self, g: Gran, size: Gran) {
        debug_assert!(size >= 1);
        // SAFETY: the span lies inside the chunk and belongs to the heap (caller).
        unsafe {
            self.set_size(g, size);
            self.flip(g, true);
            if size > 1 {
                self.flip(g + size - 1, true);
            }
        }
    }

    /// Clears the boundary bits of the free block `g..g + size` (it is about to be handed out
    /// or merged).
    ///
    /// # Safety
    /// 1. The chunk is live;
    /// 2. `g..g + size` is a free block of it whose boundary bits are set (`mark_free`).
    #[inline]
    pub unsafe fn unmark_free(self, g: Gran, size: Gran) {
        // SAFETY: as promised by the caller, both bits are inside the chunk.
        unsafe {
            self.flip(g, false);
            if size > 1 {
                self.flip(g + size - 1, false);
            }
        }
    }

    /// Writes a free block's size into its node and its footer.
    ///
    /// # Safety
    /// `g..g + size` lies in this live chunk's block area and belongs to no user.
    #[inline]
    pub unsafe fn set_size(self, g: Gran, size: Gran) {
        // SAFETY: node and footer are inside the span the caller owns; u32 at 4-byte aligned
        // offsets of 16-byte granules.
        unsafe {
            let node = self.field(g, NodeField::Size);
            let footer = self.ptr(g + size).cast::<u32>().sub(1);
            crate::vg::defined(node.as_ptr().cast(), 4);
            crate::vg::defined(footer.as_ptr().cast(), 4);
            node.write(size);
            footer.write(size);
        }
    }

    /// The size (in granules) of the free block whose **last** granule is `last`, read from its
    /// footer.
    ///
    /// # Safety
    /// `last` is the last granule of a free block of this live chunk.
    #[inline]
    pub unsafe fn footer(self, last: Gran) -> Gran {
        // SAFETY: the footer is the last u32 of granule `last`, written by `set_size`.
        unsafe { self.ptr(last + 1).cast::<u32>().sub(1).read() }
    }

    /// Pointer to one `u32` field of the index node in free block `g`.
    ///
    /// # Safety
    /// `g` is a granule of this live chunk's block area that belongs to no user.
    #[inline]
    pub unsafe fn field(self, g: Gran, f: NodeField) -> NonNull<u32> {
        // SAFETY: each field lies in the first granule of the block.
        unsafe { self.ptr(g).cast::<u32>().add(f as usize) }
    }

    /// Reads one node field of free block `g`.
    ///
    /// # Safety
    /// 1. The chunk is live;
    /// 2. `g` is a free block of it whose node (the field read) has been written.
    #[inline]
    pub unsafe fn get(self, g: Gran, f: NodeField) -> u32 {
        // SAFETY: see the contract.
        unsafe { self.field(g, f).read() }
    }

    /// Writes one node field of free block `g`.
    ///
    /// # Safety
    /// `g` is a free block of this live chunk.
    #[inline]
    pub unsafe fn put(self, g: Gran, f: NodeField, v: u32) {
        // SAFETY: see the contract.
        unsafe {
            let p = self.field(g, f);
            crate::vg::defined(p.as_ptr().cast(), 4);
            p.write(v)
        }
    }
}

/// The chunks of a list in address order, from its head. Each chunk's `next` is read before the
/// chunk is yielded, so the loop body may relink or give back the chunk it was handed.
pub(crate) struct ChunkIter<'a> {
    next: Option<Chunk>,
    _list: core::marker::PhantomData<&'a ()>,
}

impl ChunkIter<'_> {
    /// Walks the list that starts at `head`.
    ///
    /// # Safety
    /// Every chunk reachable from `head` is live until the iterator yields it; after that it
    /// may be given back, but no other chunk of the list may, until the iterator is dropped.
    #[inline]
    pub unsafe fn new(head: Option<Chunk>) -> Self {
        ChunkIter {
            next: head,
            _list: core::marker::PhantomData,
        }
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Chunk;

    #[inline]
    fn next(&mut self) -> Option<Chunk> {
        let c = self.next?;
        // SAFETY: not yielded yet, so live (the constructor's contract).
        self.next = unsafe { c.next() };
        Some(c)
    }
}

/// Accessors for the chunk header's fields: `c.frontier()` reads, `c.set_frontier(g)` writes.
macro_rules! header_fields {
    ($($(#[$doc:meta])* $get:ident / $set:ident: $t:ty;)*) => {
        impl Chunk {
            $(
                $(#[$doc])*
                ///
                /// # Safety
                /// The chunk is live (initialised and not yet given back).
                #[inline]
                #[allow(dead_code)]
                pub unsafe fn $get(self) -> $t {
                    // SAFETY: the header of a live chunk is initialised; read as a place.
                    unsafe { (*self.h()).$get }
                }

                /// Writes the field (see the getter).
                ///
                /// # Safety
                /// The chunk is live and the caller may change its header: it owns the chunk
                /// (the heap's `&mut`, or an arena's lock), and fields that other threads read
                /// without a lock (`owner`, `len`) are written only before publication.
                #[inline]
                #[allow(dead_code)]
                pub unsafe fn $set(self, v: $t) {
                    // SAFETY: exclusive access to a live header (contract); written as a place.
                    unsafe { (*self.h()).$get = v }
                }
            )*
        }
    };
}

header_fields! {
    /// Next chunk of the same heap in address order.
    next / set_next: Option<Chunk>;
    /// Bytes in the chunk (the whole mapping or buffer).
    len / set_len: usize;
    /// Whether the chunk is an OS mapping the heap must give back.
    mapped / set_mapped: bool;
    /// Granules in the chunk, header included.
    granules / set_granules: Gran;
    /// First granule that can be a block.
    first / set_first: Gran;
    /// Start of the untouched tail.
    frontier / set_frontier: Gran;
    /// Granules at and above it have never been handed out and read as zero.
    clean / set_clean: Gran;
    /// Root of the free-block index (0 when empty).
    root / set_root: Gran;
    /// Identity of the heap or arena that owns the chunk (0: a plain heap's unpaged chunk).
    owner / set_owner: usize;
    /// A chunk made for one large block.
    single / set_single: bool;
    /// Bytes of the underlying mapping before `base`.
    map_off / set_map_off: usize;
    /// Bytes of the underlying mapping.
    map_len / set_map_len: usize;
    /// Checked mode: the used-block bitmaps follow the boundary bitmap.
    checked / set_checked: bool;
    /// Recorded in the process page map.
    paged / set_paged: bool;
    /// Carved from a provider segment.
    carved / set_carved: bool;
    /// A block of the parent heap (a child heap's chunk).
    lent / set_lent: bool;
    /// Bit `k` set iff size class `k`'s list is not empty.
    bin_map / set_bin_map: u64;
}

/// The four `u32` words of a free block's first granule.
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
pub(crate) enum NodeField {
    /// Left child in the index (lower addresses).
    Left = 0,
    /// Right child in the index (higher addresses).
    Right = 1,
    /// Largest free-block size in this node's subtree.
    Max = 2,
    /// This block's size in granules; for a one-granule block also its footer.
    Size = 3,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[repr(C, align(16))]
    struct Buf([u8; 4096]);

    #[test]
    fn tags_and_bits() {
        let mut buf = Buf([0xAA; 4096]);
        let base = NonNull::new(buf.0.as_mut_ptr()).unwrap();
        // SAFETY: the buffer is ours, aligned and 4096 bytes long.
        unsafe {
            let c = Chunk::init(base, 4096, false, 4096, false);
            assert_eq!((*c.h()).granules, 256);
            assert_eq!((*c.h()).first as usize, meta_granules(256, false));
            (*c.h()).frontier = 200;
            let g = (*c.h()).first;
            // a one-granule block: one bit, footer == size field
            c.mark_free(g, 1);
            assert!(c.bit(g) && !c.bit(g + 1));
            assert_eq!(c.footer(g), 1);
            assert_eq!(c.get(g, NodeField::Size), 1);
            c.unmark_free(g, 1);
            assert!(!c.bit(g));
            // a longer block: bits at both ends, footer at the end
            c.mark_free(g + 3, 7);
            assert!(c.bit(g + 3) && c.bit(g + 9));
            assert!((g + 4..g + 9).all(|x| !c.bit(x)));
            assert_eq!(c.footer(g + 9), 7);
            assert_eq!(c.granule_of(c.ptr(g + 3).addr().get()), Some(g + 3));
            assert_eq!(c.granule_of(c.ptr(g + 3).addr().get() + 8), None);
            assert_eq!(c.granule_of(c.ptr(200).addr().get()), None);
            assert!(c.contains(c.ptr(255).addr().get()));
            assert!(!c.contains(c.ptr(256).addr().get()));
        }
    }
}
