//! The whole-heap validation walk. Read-only; O(size of the heap / 1024 + free blocks).
//!
//! For every chunk it parses the boundary bitmap into free blocks (each block's size from its
//! node must agree with its footer and with where its end bit is), checks that no two free
//! blocks touch and none touches the frontier, then walks the index in order and checks that it
//! holds exactly those blocks, with correct subtree maxima and heap order. Across chunks it
//! checks address order and that the counters agree with what it found.

use crate::bins::{self, BIN_MAX};
use crate::block::{Chunk, GRANULE_SHIFT, Gran, NodeField::Size, Used, meta_granules};
use crate::error::CheckError;
use crate::heap::HeapCore;
use crate::index;

/// Yields the free blocks of a chunk in address order by parsing its bitmap.
struct BitCursor {
    c: Chunk,
    /// Next granule to look at.
    at: Gran,
    frontier: Gran,
    granules: Gran,
}

impl BitCursor {
    /// Next set bit at or after `self.at`, if any.
    ///
    /// # Safety
    /// The chunk is live.
    unsafe fn next_bit(&mut self) -> Option<Gran> {
        if self.at >= self.granules {
            return None;
        }
        // SAFETY: the chunk is live (contract); granules is its size.
        let g = unsafe { self.c.next_bit(self.at, self.granules) };
        self.at = g.saturating_add(1);
        (g < self.granules).then_some(g)
    }

    /// The next free block `(start, size)`, or the first inconsistency found.
    ///
    /// # Safety
    /// The chunk is live.
    unsafe fn next_block(&mut self) -> Result<Option<(Gran, Gran)>, (Gran, &'static str)> {
        // SAFETY: every granule read is a set bit below the frontier, so a free block's node or
        // footer that the heap wrote.
        unsafe {
            let Some(g) = self.next_bit() else {
                return Ok(None);
            };
            if g >= self.frontier {
                return Err((g, "boundary bit set at or above the frontier"));
            }
            let s = self.c.get(g, Size);
            if s == 0 || g as u64 + s as u64 > self.frontier as u64 {
                return Err((g, "free block size is zero or runs past the frontier"));
            }
            let last = g + s - 1;
            if s > 1 {
                match self.next_bit() {
                    Some(e) if e == last => {}
                    _ => {
                        return Err((
                            g,
                            "free block's end bit is missing or another bit is inside it",
                        ));
                    }
                }
            }
            if self.c.footer(last) != s {
                return Err((g, "free block's footer disagrees with its size"));
            }
            if last + 1 == self.frontier {
                return Err((g, "free block touches the frontier (should have merged)"));
            }
            if self.c.bit(last + 1) {
                return Err((g, "two adjacent free blocks (should have merged)"));
            }
            Ok(Some((g, s)))
        }
    }
}

/// Checked mode: every used block's marks pair up (a start bit, then its end bit, no other
/// start inside), no used block overlaps a free block, and every tag and canary is intact.
/// Returns the granules in used blocks. `arena`: another thread may be deferring the free of
/// any used block, writing its first 16 bytes, so those are not read (see `verify`).
///
/// # Safety
/// `c` is a live checked chunk with blocks in `first..frontier`.
unsafe fn check_marks(
    c: Chunk,
    first: Gran,
    frontier: Gran,
    arena: bool,
) -> Result<usize, (Gran, &'static str)> {
    let mut total = 0usize;
    // SAFETY: every granule looked at lies in first..frontier of the live chunk.
    unsafe {
        if c.next_used_bit(Used::Start, 0, first) < first
            || c.next_used_bit(Used::End, 0, first) < first
        {
            return Err((0, "used-block mark inside the chunk metadata"));
        }
        let mut at = first;
        loop {
            let s = c.next_used_bit(Used::Start, at, frontier);
            let stray_end = c.next_used_bit(Used::End, at, s.min(frontier));
            if stray_end < s {
                return Err((stray_end, "used-block end mark without a start"));
            }
            if s >= frontier {
                break;
            }
            let e = c.next_used_bit(Used::End, s, frontier);
            if e >= frontier {
                return Err((s, "used block without an end mark"));
            }
            if c.next_used_bit(Used::Start, s + 1, e + 1) <= e {
                return Err((
                    s,
                    "used block's end mark is missing or another block starts inside it",
                ));
            }
            if c.next_bit(s, e + 1) <= e {
                return Err((s, "used block overlaps a free block"));
            }
            if !crate::heap::seal_intact(c, s, e + 1 - s, arena) {
                return Err((
                    s,
                    "used block's tag or canary is corrupted (a write out of bounds)",
                ));
            }
            total += (e + 1 - s) as usize;
            at = e + 1;
        }
        if c.next_used_bit(Used::Start, frontier, c.granules()) < c.granules()
            || c.next_used_bit(Used::End, frontier, c.granules()) < c.granules()
        {
            return Err((frontier, "used-block mark at or above the frontier"));
        }
    }
    Ok(total)
}

/// A set of free blocks, summed: how many, their granules, and a hash of each one's start
/// and size (so two sets that agree are the same blocks, barring a hash collision).
#[derive(Default, PartialEq, Eq)]
struct Tally {
    blocks: usize,
    granules: usize,
    hash: u64,
}

impl Tally {
    fn add(&mut self, g: Gran, s: Gran) {
        self.blocks += 1;
        self.granules += s as usize;
        let x = (u64::from(g) << 32 | u64::from(s)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.hash = self.hash.wrapping_add(x ^ x >> 29);
    }
}

impl HeapCore {
    pub(crate) fn check(&self) -> Result<(), CheckError> {
        let mut free_granules = 0usize;
        let mut free_blocks = 0usize;
        let mut used = 0usize;
        // Checked mode: granules in blocks marked used.
        let mut marked = 0usize;
        let (mut mapped, mut meta, mut chunks) = (0usize, 0usize, 0usize);
        let mut prev_end = 0usize;
        for c in self.chunks() {
            // SAFETY: a chunk of this heap's list, live.
            unsafe {
                let base = c.base().addr().get();
                let err = |g: Gran, what| CheckError {
                    addr: base + ((g as usize) << GRANULE_SHIFT),
                    what,
                };
                if base < prev_end {
                    return Err(err(0, "chunks out of address order or overlapping"));
                }
                let (granules, first, frontier) = (c.granules(), c.first(), c.frontier());
                if (granules as usize) << GRANULE_SHIFT != c.len()
                    || first as usize != meta_granules(granules as usize, c.checked())
                    || frontier < first
                    || frontier > granules
                {
                    return Err(err(0, "chunk header sizes are inconsistent"));
                }
                if c.clean() < frontier {
                    return Err(err(frontier, "clean mark below the frontier"));
                }
                if (0..first).any(|g| c.bit(g)) {
                    return Err(err(0, "boundary bit set inside the chunk metadata"));
                }
                let mut cursor = BitCursor {
                    c,
                    at: first,
                    frontier,
                    granules,
                };
                let mut chunk_free = 0usize;
                let mut walked = 0usize;
                // The size-class lists (a heap that bins): their blocks, counted and summed
                // (sizes, and a hash of where each starts and how long it is) ...
                let bins_on = self.bins_on();
                let (mut listed, mut listed_sum) = (Tally::default(), Tally::default());
                if bins_on {
                    let limit = (frontier - first) as usize;
                    bins::walk(c, limit, &mut |g, s| {
                        listed.add(g, s);
                        Ok(())
                    })
                    .map_err(|(g, what)| err(g, what))?;
                } else if c.bin_map() != 0 {
                    return Err(err(
                        0,
                        "size-class lists in use in a heap that does not bin",
                    ));
                }
                // ... must be exactly the free blocks of binned sizes that the bitmap shows; the
                // rest must be the index, in address order.
                let mut next_indexed = |cursor: &mut BitCursor| loop {
                    match cursor.next_block()? {
                        Some((b, bs)) if bins_on && bs <= BIN_MAX => listed_sum.add(b, bs),
                        other => return Ok(other),
                    }
                };
                index::walk(c, &mut |g, s| {
                    walked += 1;
                    match next_indexed(&mut cursor)? {
                        Some((b, bs)) if b == g && bs == s => {
                            chunk_free += s as usize;
                            Ok(())
                        }
                        Some((b, _)) if b < g => Err((b, "free block missing from the index")),
                        _ => Err((g, "index holds a block the bitmap does not show as free")),
                    }
                })
                .map_err(|(g, what)| err(g, what))?;
                if let Some((b, _)) = next_indexed(&mut cursor).map_err(|(g, what)| err(g, what))? {
                    return Err(err(b, "free block missing from the index"));
                }
                if listed != listed_sum {
                    return Err(err(
                        first,
                        "size-class lists disagree with the free blocks of their sizes",
                    ));
                }
                walked += listed.blocks;
                chunk_free += listed.granules;
                if c.checked() {
                    marked += check_marks(c, first, frontier, self.cfg.arena)
                        .map_err(|(g, what)| err(g, what))?;
                }
                free_granules += chunk_free;
                free_blocks += walked;
                used += (frontier - first) as usize - chunk_free;
                mapped += c.len();
                meta += (first as usize) << GRANULE_SHIFT;
                chunks += 1;
                prev_end = base + c.len();
            }
        }
        let (mut cached, mut cached_bytes) = (0usize, 0usize);
        let mut bad: Option<CheckError> = None;
        // SAFETY: the lists hold blocks of this heap; each is located in a chunk before its
        // granules are looked at.
        unsafe {
            self.quick.for_each(|p, n| {
                cached += 1;
                cached_bytes += n << GRANULE_SHIFT;
                if bad.is_none() {
                    bad = self.check_cached(p, n as Gran).err();
                }
            });
        }
        if let Some(e) = bad {
            return Err(e);
        }
        let whole = |what| {
            Err(CheckError {
                addr: self.head.map_or(0, |c| c.base().addr().get()),
                what,
            })
        };
        if free_granules != self.free_granules || free_blocks != self.free_blocks {
            return whole("free-block counters disagree with the index");
        }
        if cached != self.quick.blocks || cached_bytes != self.quick.bytes {
            return whole("quick-list counters disagree with the lists");
        }
        if used << GRANULE_SHIFT != self.in_use + cached_bytes {
            return whole("bytes in use disagree with the blocks found");
        }
        if self.cfg.checked && (marked << GRANULE_SHIFT) != self.in_use {
            return whole("blocks marked used disagree with bytes in use");
        }
        if mapped != self.mapped || meta != self.meta || chunks != self.chunks {
            return whole("mapped, metadata or chunk counters disagree with the chunks");
        }
        if self.in_use > self.peak {
            return whole("peak in use below bytes in use");
        }
        Ok(())
    }

    /// A cached block must lie inside a chunk's block area, start on a granule, and overlap no
    /// free block.
    fn check_cached(&self, p: core::ptr::NonNull<u8>, n: Gran) -> Result<(), CheckError> {
        let addr = p.addr().get();
        let err = |what| Err(CheckError { addr, what });
        for c in self.chunks() {
            // SAFETY: a chunk of this heap's list, live; floor returns index nodes.
            unsafe {
                if c.contains(addr) {
                    let Some(g) = c.granule_of(addr) else {
                        return err("cached block is not on a granule of the block area");
                    };
                    if g as usize + n as usize > c.frontier() as usize {
                        return err("cached block runs past the frontier");
                    }
                    if let Some(f) = index::floor(c, g + n - 1)
                        && f + c.get(f, Size) > g
                    {
                        return err("cached block overlaps a free block");
                    }
                    // A listed free block (not in the index) that overlaps the cached block has
                    // a boundary inside it. (One that strictly contains it is not seen: the
                    // bitmap alone cannot tell a listed block's start from its end.)
                    if self.bins_on() && c.next_bit(g, g + n) < g + n {
                        return err("cached block overlaps a free block");
                    }
                    return Ok(());
                }
            }
        }
        err("cached block lies in no chunk of this heap")
    }
}
