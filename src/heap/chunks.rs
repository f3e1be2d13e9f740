//! Chunks: getting them (growth policy), linking them in address order, finding the chunk
//! and granule of a caller's pointer, resetting and giving them all back.

use super::*;

impl HeapCore {
    /// Maps and links a chunk with at least `need` bytes of block area.
    #[cold]
    pub(crate) fn grow_by(&mut self, need: usize) -> Result<Chunk, Fail> {
        debug_assert!(need > 0, "grow_by: a chunk for nothing");
        if !self.cfg.can_grow {
            return Err(Fail::Limit);
        }
        let step = self.cfg.growth.max(self.mapped.min(MAX_STEP));
        let room = self.cfg.limit.saturating_sub(self.mapped);
        if let Some(parent) = self.cfg.parent {
            return self.lend(parent, need, step, room);
        }
        let min = chunk_len_for(need, self.cfg.checked).ok_or(Fail::Unsupported)?;
        if min > room {
            return Err(Fail::Limit);
        }
        let len = round_len(min.max(step))
            .unwrap_or(min)
            .min(max_chunk_len())
            .max(min);
        let len = if len > room { min } else { len };
        #[cfg(feature = "mmap")]
        if (self.cfg.give_back_big || self.cfg.arena) && min > crate::region::provider::MAX_CARVE {
            // Exactly one large block's worth, given back when it is freed.
            return self.map_chunk_as(min, true);
        }
        // Up to half a segment, a chunk comes from the provider: a power of two, the first
        // one sized to the request (from 512 B), later ones to the geometric step.
        #[cfg(feature = "mmap")]
        if let Some(fit) = carve_len_for(need, self.cfg.checked) {
            use crate::region::provider::MAX_CARVE;
            let step = step.checked_next_power_of_two().unwrap_or(usize::MAX);
            let want = if self.mapped == 0 {
                fit.max(self.cfg.first_min)
            } else {
                fit.max(step)
            };
            // Past half a segment the step is a mapping of its own (below). Within the limit
            // only the bare fit may do, and if the provider cannot grow, the fit may still be
            // carved from what it has.
            if want <= MAX_CARVE {
                for len in [want, fit] {
                    if len <= room
                        && let Some(c) = self.carve_chunk(len)
                    {
                        return Ok(c);
                    }
                }
            }
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

    /// A child heap's new chunk: a block of the parent, the first sized to the request, later
    /// ones to the geometric step (if the parent cannot lend that much, the bare fit). The
    /// parent counts it in use (its budget and limit apply) and as lent.
    #[cold]
    fn lend(
        &mut self,
        parent: NonNull<HeapCore>,
        need: usize,
        step: usize,
        room: usize,
    ) -> Result<Chunk, Fail> {
        let fit = lent_len_for(need, self.cfg.checked).ok_or(Fail::Unsupported)?;
        if fit > room {
            return Err(Fail::Limit);
        }
        // SAFETY: the parent outlives this child and no reference to its core is alive while
        // the child's core runs (`Config::parent`).
        let p = unsafe { &mut *parent.as_ptr() };
        // The step, within what the parent's budget still allows (a step the budget would
        // refuse is not asked for: the parent would count a refusal for nothing).
        let left = align_down(p.cfg.budget.saturating_sub(p.in_use), GRANULE);
        let want = if self.mapped == 0 {
            fit
        } else {
            fit.max(step.min(room).min(left))
        };
        let mut got = p.alloc(want, GRANULE, false).map(|b| (b, want));
        if got.is_err() && want > fit {
            got = p.alloc(fit, GRANULE, false).map(|b| (b, fit));
        }
        let (b, len) = got?;
        p.lent += len;
        // SAFETY: a block of `len` bytes (at least: only `len` are used, so a checked parent's
        // tag past them stays intact) that the parent lends to this heap until `return_chunk`,
        // aligned to a granule, larger than the metadata (`lent_len_for`); its bytes are
        // whatever the parent's block held, so all of it is dirty.
        let c = unsafe { Chunk::init(b.cast(), len, false, len, self.cfg.checked) };
        // SAFETY: c is live and ours; written before any pointer into it is handed out.
        unsafe {
            c.set_lent(true);
            self.link(c);
        }
        Ok(c)
    }

    /// Takes a chunk of `len` bytes (a power of two the provider hands out) from the chunk
    /// provider and links it in address order; `None` if the provider has no memory.
    #[cfg(feature = "mmap")]
    fn carve_chunk(&mut self, len: usize) -> Option<Chunk> {
        let (base, dirty) = if self.cfg.reentrant {
            crate::region::provider::try_carve(len)?
        } else {
            // A heap of one thread: the thread's cache first (see `region::tcache`).
            #[cfg(feature = "std")]
            if self.cfg.thread_cache {
                crate::region::tcache::carve(len)?
            } else {
                crate::region::provider::carve(len)?
            }
            #[cfg(not(feature = "std"))]
            crate::region::provider::carve(len)?
        };
        if self.cfg.owner == 0 {
            self.cfg.owner = crate::region::next_owner();
        }
        // SAFETY: a block of the provider's, `len` bytes aligned to `len` (so to a granule),
        // ours alone until given back; every byte past `dirty` reads as zero. `len` is at least
        // `carve_len_for`'s, so larger than the metadata.
        let c = unsafe { Chunk::init(base, len, true, dirty, self.cfg.checked) };
        // SAFETY: c is live and ours; its header is complete before `publish` makes it findable
        // (and before any pointer into it is handed out); `base`, `len` are the carved chunk.
        unsafe {
            c.set_map_len(len);
            c.set_owner(self.cfg.owner);
            c.set_carved(true);
            c.set_paged(true);
            self.link(c);
            // Only now may a lookup find it.
            crate::region::provider::publish(base, len, self.cfg.owner);
        }
        Some(c)
    }

    /// Maps a chunk of exactly `len` bytes (whole pages; a cached mapping may be larger) and
    /// links it in address order. Every heap that maps its memory gets *paged* chunks: aligned
    /// to the page map's unit and recorded there, so the chunk of any pointer is found in O(1)
    /// (as for the chunks the provider carves).
    pub(crate) fn map_chunk(&mut self, len: usize) -> Result<Chunk, Fail> {
        self.map_chunk_as(len, false)
    }

    /// [`map_chunk`](Self::map_chunk); `single`: a chunk made for one large block (see
    /// `Chunk::single`), as an arena's larger than its alignment unit always is.
    fn map_chunk_as(&mut self, len: usize, single: bool) -> Result<Chunk, Fail> {
        debug_assert!(
            len > 0 && len.is_multiple_of(page()),
            "map_chunk: {len} bytes is not a whole number of pages"
        );
        let paged = true;
        // A mapping a dropped heap left in the process cache, if one fits (arena chunks have
        // exact sizes; other heaps take up to 4x the size asked for, within the limit); else a
        // fresh one.
        let room = self.cfg.limit.saturating_sub(self.mapped);
        let max = if self.cfg.arena {
            len
        } else {
            len.saturating_mul(4).min(room)
        };
        let m = crate::region::acquire(len, max, paged).ok_or(Fail::Os)?;
        if paged && self.cfg.owner == 0 {
            self.cfg.owner = crate::region::next_owner();
        }
        // SAFETY: a whole mapping of m.len bytes (whole pages, aligned for paged ones), owned by
        // this heap from now on; everything past `dirty` is still zero.
        let c = unsafe { Chunk::init(m.base, m.len, true, m.dirty, self.cfg.checked) };
        // SAFETY: c is live and not yet published; these fields are written once here, before
        // the page map publishes the chunk to other threads.
        unsafe {
            c.set_map_off(m.off);
            c.set_map_len(m.map_len);
            if paged {
                c.set_owner(self.cfg.owner);
                c.set_single(single);
                c.set_paged(true);
                if !crate::region::publish(m.base, m.len, self.cfg.owner) {
                    crate::region::discard(m);
                    return Err(Fail::Os);
                }
            }
            self.link(c);
        }
        Ok(c)
    }

    /// Makes this (new, empty) heap a heap over a caller's buffer `base..base + usable`: it never
    /// grows and never gives memory to the OS, and its chunks (one per `max_piece` bytes; a tail
    /// shorter than the smallest chunk stays unused) are marked not mapped.
    ///
    /// # Safety
    /// 1. `base..base + usable` is memory the caller lends exclusively to this heap for its whole
    ///    life, readable and writable (contents may be uninitialised);
    /// 2. `base` is aligned to a granule, `usable` and `max_piece` are multiples of a granule,
    ///    `max_piece` is at most [`BUFFER_MAX_PIECE`];
    /// 3. the heap has no chunk yet.
    pub(crate) unsafe fn adopt_buffer(
        &mut self,
        base: NonNull<u8>,
        usable: usize,
        max_piece: usize,
    ) {
        let min = BUFFER_MIN_GRANULES * GRANULE;
        debug_assert!(
            self.head.is_none() && base.addr().get().is_multiple_of(GRANULE),
            "adopt_buffer: the heap must be empty and the buffer granule-aligned"
        );
        debug_assert!(
            usable.is_multiple_of(GRANULE)
                && max_piece.is_multiple_of(GRANULE)
                && (min..=BUFFER_MAX_PIECE).contains(&max_piece),
            "adopt_buffer: {usable} bytes in pieces of {max_piece}"
        );
        self.cfg.can_grow = false;
        self.cfg.limit = usable;
        // Nothing is ever given back to the OS from a buffer: skip even working out when to.
        self.cfg.give_back = usize::MAX;
        self.give_back_at = usize::MAX;
        // Nor a table for the quick lists: a buffer heap maps nothing. The table comes from the
        // buffer's start if the buffer can spare it (at least 32 KiB, or in checked mode, whose
        // detection of writes after free works on the lists, whatever still leaves a chunk);
        // else the lists stay off and every free merges.
        let (mut base, mut usable) = (base, usable);
        let table = crate::quick::BUFFER_TABLE_LEN;
        if usable >= (32 << 10).max(table + min) || (self.cfg.checked && usable >= table + min) {
            // SAFETY: the first `table` bytes of the lent memory (item 1), on a granule (item 2),
            // and the chunks below start after them; no table yet (item 3: a new heap).
            unsafe {
                self.quick.adopt_table(base);
                base = base.add(table);
            }
            usable -= table;
        } else {
            self.quick.never();
        }
        let mut off = 0;
        while usable - off >= min {
            let piece = (usable - off).min(max_piece);
            // SAFETY: `off + piece <= usable`, so the piece lies inside the lent memory (1); it
            // starts on a granule, is whole granules, at most MAX_CHUNK_GRANULES granules (2)
            // and above the metadata (piece >= min); `dirty` is the whole piece (uninitialised).
            let c = unsafe { Chunk::init(base.add(off), piece, false, piece, self.cfg.checked) };
            // SAFETY: c was just initialised, belongs to this heap alone and is not linked yet.
            unsafe { self.link(c) };
            off += piece;
        }
    }

    /// Takes chunk `c` out of the list and the counters and gives it back to the region.
    ///
    /// # Safety
    /// 1. `c` is a chunk of this heap's list;
    /// 2. it holds no block (used, cached or free): its frontier is at its first granule.
    pub(super) unsafe fn give_back_chunk(&mut self, c: Chunk) {
        // SAFETY: (1) c is live; only header fields are read and written, the list's links by
        // the heap that owns it (`&mut self`).
        unsafe {
            debug_assert!(
                c.frontier() == c.first(),
                "give_back_chunk: chunk {:p} still holds blocks",
                c.base()
            );
            if self.head == Some(c) {
                self.head = c.next();
            } else if let Some(prev) = self.chunks().find(|p| p.next() == Some(c)) {
                prev.set_next(c.next());
            }
            self.mapped -= c.len();
            self.meta -= bytes(c.first());
            self.chunks -= 1;
            // (1) unlinked now, and (2) nothing of it is used: never touched again.
            self.return_chunk(c, false);
        }
    }

    /// Gives back every mapped or carved chunk that holds no block (after flushing the quick
    /// lists); returns the bytes given back. O(chunks).
    #[cfg_attr(not(feature = "mmap"), allow(dead_code))]
    pub(crate) fn give_back_empty(&mut self) -> usize {
        self.flush();
        let mut freed = 0;
        let mut next = self.head;
        while let Some(c) = next {
            // SAFETY: c is a live chunk of this heap's list; its successor is read before it
            // may be given back; `give_back_chunk`: (1) on the list, (2) empty (frontier at its
            // first granule) and mapped or carved (not a buffer's or a parent's).
            unsafe {
                next = c.next();
                if c.frontier() == c.first() && (c.mapped() || c.carved()) {
                    freed += c.len();
                    self.give_back_chunk(c);
                }
            }
        }
        freed
    }

    /// Links a fresh chunk into the address-ordered list and counts it.
    ///
    /// # Safety
    /// `c` is a freshly initialised chunk that this heap owns and that is not linked yet.
    pub(crate) unsafe fn link(&mut self, c: Chunk) {
        debug_assert!(
            // SAFETY: c is a fresh, live chunk (contract).
            unsafe { c.next().is_none() } && self.chunks().all(|o| o != c),
            "link: chunk {:p} is linked already",
            c.base()
        );
        // SAFETY: all chunks in the list and c are live.
        unsafe {
            let len = c.len();
            self.mapped += len;
            self.meta += bytes(c.first());
            self.chunks += 1;
            let addr = c.base().addr();
            match self.head {
                Some(h) if h.base().addr() < addr => {
                    let mut prev = h;
                    while let Some(n) = prev.next()
                        && n.base().addr() < addr
                    {
                        prev = n;
                    }
                    c.set_next(prev.next());
                    prev.set_next(Some(c));
                }
                _ => {
                    c.set_next(self.head);
                    self.head = Some(c);
                }
            }
        }
    }

    /// The chunk and first granule of a block the caller says is `n` granules at `ptr`.
    /// Misuse that can be seen here (a pointer into no chunk of this heap, off a granule, past
    /// the frontier) is `Fail::Misuse`, which the trait edge turns into a panic naming the
    /// address. Without checked mode, detection stops there: an interior pointer of a live
    /// block that happens to sit on a granule is not caught (`verify` catches it).
    ///
    /// O(1) for arenas and checked heaps (the process page map); else a walk of the chunk list
    /// (O(log) of the heap size; one chunk for a buffer heap).
    #[inline]
    pub(super) fn locate(&self, ptr: NonNull<u8>, n: Gran) -> Result<(Chunk, Gran), Fail> {
        let addr = ptr.addr().get();
        if let Some(c) = self.hint.get()
            // SAFETY: the hint is a chunk of this heap's list (`HeapCore::hint`): live.
            && unsafe { c.contains(addr) }
        {
            // SAFETY: as above, and it contains addr.
            return unsafe { self.block_in(c, addr, n) };
        }
        let found = self.locate_chunk(addr, n);
        if let Ok((c, _)) = found {
            self.hint.set(Some(c));
        }
        found
    }

    /// [`locate`](Self::locate) without the hint: through the page map, or a walk of this
    /// heap's chunks.
    fn locate_chunk(&self, addr: usize, n: Gran) -> Result<(Chunk, Gran), Fail> {
        if self.cfg.owner != 0 {
            // Paged chunks: the page map gives the chunk (with its provenance) in O(1).
            return match Chunk::paged_at(addr) {
                // SAFETY: the tables say this heap's chunk holds addr, and this heap's chunks are
                // live while it is.
                Some((c, owner)) if owner == self.cfg.owner => unsafe { self.block_in(c, addr, n) },
                _ => misuse(addr, FOREIGN),
            };
        }
        for c in self.chunks() {
            // SAFETY: a chunk of this heap's list, live.
            unsafe {
                if c.contains(addr) {
                    return self.block_in(c, addr, n);
                }
            }
        }
        misuse(addr, FOREIGN)
    }

    /// Does `addr` lie inside one of this heap's chunks (header, bitmaps and block area)? Never
    /// reads memory a caller's pointer leads to. A heap that maps its chunks has an identity
    /// (`cfg.owner`) recorded with each of them in the page map: O(1), from the page map and
    /// the provider's tables alone. A heap over a caller's buffer or a child heap (whose
    /// chunks are blocks of its parent, under the parent's identity) compares with its own
    /// chunk headers: O(c) over its chunks (a buffer heap's tile the buffer; a child's double
    /// in size, so a few dozen at most).
    pub(crate) fn owns(&self, addr: usize) -> bool {
        if self.cfg.owner != 0 {
            debug_assert!(
                self.cfg.parent.is_none(),
                "owns: a child heap with an identity of its own"
            );
            return crate::region::owner_at(addr) == self.cfg.owner;
        }
        // SAFETY: every chunk of this heap's list is live.
        self.chunks().any(|c| unsafe { c.contains(addr) })
    }

    /// The granule of a block of `n` granules at `addr` in chunk `c`, if it can be one (on a
    /// granule of the block area, ending at or below the frontier).
    ///
    /// # Safety
    /// `c` is a live chunk of this heap that contains `addr`.
    #[inline]
    pub(super) unsafe fn block_in(
        &self,
        c: Chunk,
        addr: usize,
        n: Gran,
    ) -> Result<(Chunk, Gran), Fail> {
        // SAFETY: c is live (contract).
        unsafe {
            match c.granule_of(addr) {
                Some(g) if g as usize + n as usize <= c.frontier() as usize => Ok((c, g)),
                _ => misuse(addr, NOT_A_BLOCK),
            }
        }
    }

    /// Finds the caller's block of `size` bytes aligned to `align` at `ptr`: its chunk, first
    /// granule and granules. In checked mode the pointer and layout are verified against the
    /// block's marks and tag (see `verify`).
    #[inline]
    pub(super) fn find(
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

    /// Frees every block at once: each kept chunk becomes one untouched span again (its
    /// bitmap cleared up to the old frontier), chunks beyond the first `warm` bytes (in address
    /// order) are given back. O(chunks + mapped bytes / 1024), whatever the number of blocks.
    /// The peak restarts from zero.
    pub(crate) fn reset(&mut self, warm: usize) {
        self.quick.clear();
        vg::forget_all(&mut self.vg_pool);
        // SAFETY: the loop relinks or gives back only the chunk it was handed.
        let list = unsafe { ChunkIter::new(self.head.take()) };
        let mut tail: Option<Chunk> = None;
        let (mut kept, mut meta, mut chunks) = (0usize, 0usize, 0usize);
        for c in list {
            // SAFETY: c is live; it is either re-initialised in place (its mapping and clean
            // mark kept) or given back, after its fields are read.
            unsafe {
                let len = c.len();
                if self.cfg.zero_on_free {
                    wipe_blocks(c);
                }
                if kept + len <= warm || !c.mapped() {
                    c.clear_blocks();
                    c.set_next(None);
                    match tail {
                        Some(t) => t.set_next(Some(c)),
                        None => self.head = Some(c),
                    }
                    tail = Some(c);
                    kept += len;
                    meta += bytes(c.first());
                    chunks += 1;
                } else {
                    self.return_chunk(c, false);
                }
            }
        }
        self.mapped = kept;
        self.meta = meta;
        self.chunks = chunks;
        self.in_use = 0;
        self.peak = 0;
        self.refused = 0;
        // Children cannot outlive a reset (it takes `&mut`); a forgotten one's chunks are gone.
        self.lent = 0;
        self.free_granules = 0;
        self.free_blocks = 0;
    }

    /// Gives back every chunk this heap has (to the region; a buffer's to its owner). A heap
    /// that zeroes on free zeroes every block first, the ones still allocated too: a mapping
    /// may go to the next heap through the process cache, a buffer back to its owner.
    pub(crate) fn give_back_all(&mut self) {
        self.quick.release();
        vg::forget_all(&mut self.vg_pool);
        // A heap whose chunks go through the thread's cache gives up its identity with them
        // (it gets a fresh one if it grows again): the slice entries of a chunk the cache keeps
        // may still name it, which must not make anyone's `owns` true.
        let retire = self.cfg.thread_cache;
        // SAFETY: the loop gives back only the chunk it was handed.
        for c in unsafe { ChunkIter::new(self.head.take()) } {
            // SAFETY: c is live and unlinked (the list was taken), never used again; nobody
            // uses its blocks any more (the heap is being dropped or emptied).
            unsafe {
                if self.cfg.zero_on_free {
                    wipe_blocks(c);
                }
                self.return_chunk(c, retire);
            }
        }
        let mut cfg = self.cfg;
        if retire {
            cfg.owner = 0;
        }
        *self = HeapCore::new(cfg);
    }
}

/// Zeroes every byte of chunk `c`'s block area that was ever handed out (`first..frontier`).
///
/// # Safety
/// `c` is live and nobody uses any of its blocks any more.
unsafe fn wipe_blocks(c: Chunk) {
    // SAFETY: the span lies in c's block area, which is the heap's alone (contract).
    unsafe {
        let from = c.first();
        let (p, len) = (c.ptr(from).as_ptr(), bytes(c.frontier() - from));
        vg::defined(p, len);
        core::ptr::write_bytes(p, 0, len);
        vg::noaccess(p, len);
    }
}

impl HeapCore {
    /// Gives a chunk's memory back to where it came from: the parent (a child heap's chunk),
    /// the chunk provider, the process cache of mappings or the OS. Buffers are left to their
    /// owner.
    ///
    /// `retiring`: this heap's identity (`cfg.owner`) is never used again (a chunk the thread's
    /// cache keeps may then still name it in the provider's table, unpublished only when it
    /// goes to the provider or to its next heap: no lookup of a live heap can match it).
    ///
    /// # Safety
    /// `c` is a live chunk of this heap that is unlinked and never used again.
    #[cfg_attr(not(feature = "std"), allow(unused_variables))]
    pub(super) unsafe fn return_chunk(&mut self, c: Chunk, retiring: bool) {
        // The hint may be this chunk: after this, its memory may be another heap's.
        self.hint.set(None);
        // SAFETY: c is live until here; its fields are read before the memory goes. A lent
        // chunk's parent outlives this heap and is not in use meanwhile (`Config::parent`).
        unsafe {
            let len = c.len();
            if c.lent() {
                let Some(parent) = self.cfg.parent else {
                    debug_assert!(false, "return_chunk: a lent chunk in a heap with no parent");
                    return;
                };
                let p = &mut *parent.as_ptr();
                p.lent -= len;
                crate::vg::undefined(c.base().as_ptr(), len);
                // The block the parent lent, with the layout it was asked for: the parent's own
                // checks see a block of its own.
                let r = p.dealloc(c.base(), len, GRANULE);
                debug_assert!(
                    r.is_ok(),
                    "return_chunk: the parent refused its block: {r:?}"
                );
                return;
            }
            if !c.mapped() {
                // A caller's buffer goes back to its owner: every byte addressable again (memcheck).
                crate::vg::undefined(c.base().as_ptr(), len);
                return;
            }
            let dirty = (c.clean() as usize) << GRANULE_SHIFT;
            #[cfg(feature = "mmap")]
            if c.carved() {
                #[cfg(feature = "std")]
                if self.cfg.thread_cache {
                    crate::region::tcache::uncarve(c.base(), len, dirty, !retiring);
                    return;
                }
                crate::region::provider::uncarve(c.base(), len, dirty);
                return;
            }
            let m = crate::region::Mapping {
                base: c.base(),
                len,
                dirty,
                off: c.map_off(),
                map_len: c.map_len(),
            };
            crate::region::release(m, c.paged());
        }
    }
}

/// Smallest chunk length (whole pages) whose block area holds `need` bytes.
pub(super) fn chunk_len_for(need: usize, checked: bool) -> Option<usize> {
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

/// The smallest chunk the provider hands out (a power of two from 512 B) whose block area
/// holds `need` bytes, if it is at most half a segment.
#[cfg(feature = "mmap")]
pub(super) fn carve_len_for(need: usize, checked: bool) -> Option<usize> {
    use crate::region::provider::{MAX_CARVE, MIN_CARVE};
    let mut len = MIN_CARVE;
    while len <= MAX_CARVE {
        let room = len - crate::block::meta_granules(len / GRANULE, checked) * GRANULE;
        if room >= need {
            return Some(len);
        }
        len *= 2;
    }
    None
}

/// The smallest chunk (whole granules) whose block area holds `need` bytes: a child heap's
/// chunk, a block of its parent.
pub(crate) fn lent_len_for(need: usize, checked: bool) -> Option<usize> {
    let need = align_up(need.max(GRANULE), GRANULE)?;
    // The metadata of a chunk of `need` bytes is a lower bound of the metadata's: from there
    // the shortfall (one bitmap word per 1 KiB more) is made up in a step or two.
    let mut len =
        need.checked_add(crate::block::meta_granules(need / GRANULE, checked) * GRANULE)?;
    loop {
        let room =
            len.saturating_sub(crate::block::meta_granules(len / GRANULE, checked) * GRANULE);
        if room >= need {
            return (len <= max_chunk_len()).then_some(len);
        }
        len = align_up(len.checked_add(need - room)?, GRANULE)?;
    }
}

/// Rounds up to whole pages.
pub(super) fn round_len(len: usize) -> Option<usize> {
    let l = align_up(len, page())?;
    (l <= isize::MAX as usize).then_some(l)
}

pub(super) fn max_chunk_len() -> usize {
    align_down_page(MAX_CHUNK_GRANULES << GRANULE_SHIFT)
}

pub(super) fn align_down_page(x: usize) -> usize {
    align_down(x, page())
}

pub(crate) use crate::region::page;

/// Granules in the smallest chunk over a buffer: its metadata (header and bitmaps, in checked
/// mode too) plus one block granule.
pub(crate) const BUFFER_MIN_GRANULES: usize = {
    let mut g = 1;
    while crate::block::meta_granules(g, true) >= g {
        g += 1;
    }
    g
};

/// The most bytes one chunk over a buffer spans: as many granules as a chunk can number, in
/// whole 4 KiB (so a whole number of bitmap words, as for mapped chunks).
pub(crate) const BUFFER_MAX_PIECE: usize = MAX_CHUNK_GRANULES.saturating_mul(GRANULE) & !4095;

// The smallest chunk has exactly one block granule; the largest is whole bitmap words and fits
// the granule numbering.
const _: () = {
    assert!(crate::block::meta_granules(BUFFER_MIN_GRANULES, true) + 1 == BUFFER_MIN_GRANULES);
    assert!(
        BUFFER_MAX_PIECE.is_multiple_of(4096) && BUFFER_MAX_PIECE / GRANULE <= MAX_CHUNK_GRANULES
    );
    assert!(BUFFER_MAX_PIECE >= BUFFER_MIN_GRANULES * GRANULE);
};
