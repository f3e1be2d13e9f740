//! A picture of the heap: [`Heap::map`] lists the used and free spans of every chunk in address
//! order, and renders them as text (a listing, or one strip of characters per chunk) and as an
//! SVG (one coloured strip per chunk, the largest free span marked, the stats as a caption).
//!
//! Nothing here allocates: the spans are read from the heap one step at a time (chunk list,
//! boundary bitmap, index), and the renderers write to any [`core::fmt::Write`].
//!
//! The map never holds the heap's state across a step: each call to an iterator's `next()`
//! borrows it briefly, finds where it left off (a chunk's base address and a granule) in the
//! heap *as it is now*, reads one span and lets go. Rendering therefore stays sound even when
//! the writer allocates from the very heap it draws; the picture may then mix the states
//! before and after those allocations, but its spans still tile each chunk.

use crate::Heap;
use crate::block::{Chunk, GRANULE_SHIFT, Gran, NodeField::Size};
use crate::index;
use crate::stats::Stats;
use core::fmt::{self, Write};
use core::iter::FusedIterator;

mod render;
#[cfg(test)]
mod tests;

/// What a [`Span`] of a chunk holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SpanKind {
    /// Blocks handed out. Used blocks carry no header, so **consecutive used blocks cannot be
    /// told apart and appear as one span**: a used span runs from one free span (or the
    /// metadata) to the next.
    Used,
    /// A free block: one span, since free blocks always merge with free neighbours.
    Free,
    /// The untouched tail of a chunk (its frontier), never handed out since the chunk was
    /// mapped or the heap reset. Free too: [`Stats::free`] counts it.
    Frontier,
    /// The chunk's header and boundary bitmap, at its start.
    Metadata,
}

impl SpanKind {
    /// A lowercase name: `used`, `free`, `frontier`, `metadata`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(isoheap::SpanKind::Frontier.name(), "frontier");
    /// ```
    pub const fn name(self) -> &'static str {
        match self {
            SpanKind::Used => "used",
            SpanKind::Free => "free",
            SpanKind::Frontier => "frontier",
            SpanKind::Metadata => "metadata",
        }
    }

    /// Can an allocation be served from a span of this kind (`Free` or `Frontier`)?
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::SpanKind;
    /// assert!(SpanKind::Free.is_free() && SpanKind::Frontier.is_free());
    /// assert!(!SpanKind::Used.is_free() && !SpanKind::Metadata.is_free());
    /// ```
    pub const fn is_free(self) -> bool {
        matches!(self, SpanKind::Free | SpanKind::Frontier)
    }

    /// Bucket of the kind in the renderers' per-column counts.
    const fn slot(self) -> usize {
        match self {
            SpanKind::Used => 0,
            SpanKind::Free => 1,
            SpanKind::Frontier => 2,
            SpanKind::Metadata => 3,
        }
    }
}

impl fmt::Display for SpanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A run of bytes of one kind inside one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Span {
    /// Address of the first byte.
    pub addr: usize,
    /// Length in bytes (a multiple of [`GRANULE`](crate::GRANULE)).
    pub len: usize,
    /// What the span holds.
    pub kind: SpanKind,
    /// Position of its chunk in address order (0 for the lowest chunk), as in
    /// [`MapChunk::index`].
    pub chunk: usize,
}

impl Span {
    /// One past the last byte.
    ///
    /// # Examples
    ///
    /// ```
    /// let heap = isoheap::Heap::with_capacity(4096).unwrap();
    /// let map = heap.map();
    /// let spans: Vec<_> = map.spans().collect();
    /// for w in spans.windows(2) {
    ///     assert_eq!(w[0].end(), w[1].addr);           // spans tile each chunk
    /// }
    /// ```
    pub const fn end(&self) -> usize {
        self.addr + self.len
    }
}

/// One chunk (one mapping) of the heap, from [`HeapMap::chunks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MapChunk {
    /// Position in address order, 0 for the lowest chunk.
    pub index: usize,
    /// Base address (where its metadata starts).
    pub addr: usize,
    /// Length in bytes.
    pub len: usize,
}

/// A picture of a heap's memory, from [`Heap::map`]: its spans in address order (iterate it,
/// or see [`spans`](Self::spans) and [`chunks`](Self::chunks)), and renderers for text
/// ([`Display`](fmt::Display), [`write_strips`](Self::write_strips)) and SVG
/// ([`write_svg`](Self::write_svg)).
///
/// The map is read lazily, one span per step, from the heap as it is at that step (it borrows
/// the heap and copies nothing); only [`stats`](Self::stats) is a snapshot taken by
/// [`Heap::map`]. Use the heap in between and the later spans show its new state (see the
/// module docs): take and render the map while nothing else allocates from the heap.
#[derive(Clone, Copy)]
pub struct HeapMap<'h> {
    heap: &'h Heap,
    stats: Stats,
}

impl Heap {
    /// A map of the heap's used and free spans in address order, per chunk, for inspection and
    /// rendering (text, SVG); see [`HeapMap`].
    ///
    /// Like [`stats`](Self::stats), it first merges the blocks cached for quick reuse into the
    /// free set, so the free spans shown are those of a fully merged heap (no two adjacent)
    /// and agree with [`Stats`]. That is its only effect on the heap. O(cached blocks); walking
    /// the map costs O(mapped bytes / 1024 + spans x (log(free blocks) + chunks)): each step
    /// finds its place in the heap afresh.
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::{Heap, SpanKind};
    /// use core::alloc::Layout;
    ///
    /// let heap = Heap::with_capacity(64 << 10).unwrap(); // one chunk
    /// let l = Layout::from_size_align(100, 8).unwrap();
    /// let (a, b) = (heap.allocate(l).unwrap(), heap.allocate(l).unwrap());
    /// // SAFETY: `a` came from this heap with layout `l`.
    /// unsafe { heap.deallocate(a.cast(), l) };
    /// let kinds: Vec<SpanKind> = heap.map().into_iter().map(|s| s.kind).collect();
    /// use SpanKind::*;
    /// assert_eq!(kinds, [Metadata, Free, Used, Frontier]);
    /// println!("{}", heap.map());                 // one line per chunk and per span
    /// # unsafe { heap.deallocate(b.cast(), l) };
    /// ```
    pub fn map(&self) -> HeapMap<'_> {
        HeapMap {
            heap: self,
            stats: self.stats(),
        }
    }
}

impl<'h> HeapMap<'h> {
    /// The heap's counters when the map was taken (after the cached blocks were merged).
    ///
    /// # Examples
    ///
    /// ```
    /// let heap = isoheap::Heap::new();
    /// let v = allocator_api2::vec::Vec::<u8, _>::with_capacity_in(100, &heap);
    /// let map = heap.map();
    /// assert_eq!(map.stats(), heap.stats());
    /// # drop(v);
    /// ```
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every span of every chunk, in address order.
    ///
    /// # Examples
    ///
    /// ```
    /// use isoheap::SpanKind;
    ///
    /// let heap = isoheap::Heap::new();
    /// let v = allocator_api2::vec::Vec::<u8, _>::with_capacity_in(100, &heap);
    /// let used: usize = heap.map().spans().filter(|s| s.kind == SpanKind::Used).map(|s| s.len).sum();
    /// assert_eq!(used, heap.stats().in_use);
    /// # drop(v);
    /// ```
    pub fn spans(&self) -> Spans<'h> {
        Spans {
            heap: self.heap,
            base: 0,
            at: 0,
            one_chunk: false,
        }
    }

    /// The spans of one chunk, in address order (none if the chunk is gone).
    ///
    /// # Examples
    ///
    /// ```
    /// let heap = isoheap::Heap::with_capacity(4096).unwrap();
    /// let map = heap.map();
    /// for chunk in map.chunks() {
    ///     let bytes: usize = map.spans_in(&chunk).map(|s| s.len).sum();
    ///     assert_eq!(bytes, chunk.len);
    /// }
    /// ```
    pub fn spans_in(&self, chunk: &MapChunk) -> Spans<'h> {
        Spans {
            heap: self.heap,
            base: chunk.addr,
            at: 0,
            one_chunk: true,
        }
    }

    /// The chunks in address order.
    ///
    /// # Examples
    ///
    /// ```
    /// let heap = isoheap::Heap::with_capacity(4096).unwrap();
    /// let map = heap.map();
    /// assert_eq!(map.chunks().count(), heap.stats().chunks);
    /// ```
    pub fn chunks(&self) -> Chunks<'h> {
        Chunks {
            heap: self.heap,
            next_base: 0,
        }
    }

    /// The largest span an allocation can be served from (`Free` or `Frontier`), the
    /// lowest-addressed one if several tie; `None` when nothing is free. Its length is
    /// [`Stats::largest_free`]. O(spans).
    ///
    /// # Examples
    ///
    /// ```
    /// let heap = isoheap::Heap::with_capacity(4096).unwrap();
    /// let map = heap.map();
    /// assert_eq!(map.largest_free().map(|s| s.len), Some(heap.stats().largest_free));
    /// ```
    pub fn largest_free(&self) -> Option<Span> {
        self.spans()
            .filter(|s| s.kind.is_free())
            .fold(None, |best: Option<Span>, s| match best {
                Some(b) if b.len >= s.len => Some(b),
                _ => Some(s),
            })
    }
}

impl fmt::Display for HeapMap<'_> {
    /// The listing of [`write_text`](HeapMap::write_text).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_text(f)
    }
}

impl fmt::Debug for HeapMap<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapMap")
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<'h> IntoIterator for HeapMap<'h> {
    type Item = Span;
    type IntoIter = Spans<'h>;
    fn into_iter(self) -> Spans<'h> {
        self.spans()
    }
}

impl<'h> IntoIterator for &HeapMap<'h> {
    type Item = Span;
    type IntoIter = Spans<'h>;
    fn into_iter(self) -> Spans<'h> {
        self.spans()
    }
}

/// The chunk of `heap` whose base is the lowest at or above `base`, with its index.
fn chunk_from(heap: &Heap, base: usize) -> Option<(usize, Chunk)> {
    // Copy the head out: no reference to the heap's state outlives this statement.
    let head = heap.with_core(|c| c.head);
    // SAFETY: chunks in the list are live while the heap is borrowed and not in use (Heap is
    // !Sync, and no heap operation runs during this walk); none is given back.
    unsafe { crate::block::ChunkIter::new(head) }
        .enumerate()
        .find(|(_, c)| c.base().addr().get() >= base)
}

/// Iterator over the chunks of a heap in address order, from [`HeapMap::chunks`].
#[derive(Clone)]
pub struct Chunks<'h> {
    heap: &'h Heap,
    /// The next chunk is the lowest at or above this address.
    next_base: usize,
}

impl Iterator for Chunks<'_> {
    type Item = MapChunk;

    fn next(&mut self) -> Option<MapChunk> {
        let (index, c) = chunk_from(self.heap, self.next_base)?;
        let addr = c.base().addr().get();
        self.next_base = addr + 1;
        // SAFETY: `chunk_from` returned a live chunk of the heap.
        let len = unsafe { c.len() };
        Some(MapChunk { index, addr, len })
    }
}

impl FusedIterator for Chunks<'_> {}

impl fmt::Debug for Chunks<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Chunks")
            .field("next_base", &self.next_base)
            .finish_non_exhaustive()
    }
}

/// Iterator over spans in address order, from [`HeapMap::spans`], [`HeapMap::spans_in`] or
/// iterating a [`HeapMap`]. The spans of a chunk tile it exactly, from its metadata to its
/// end.
#[derive(Clone)]
pub struct Spans<'h> {
    heap: &'h Heap,
    /// Base of the chunk being walked (or a lower bound for the next one, when `at == 0`).
    base: usize,
    /// Next granule of that chunk to describe; 0 means its metadata.
    at: Gran,
    /// Stop at the end of the chunk at `base`.
    one_chunk: bool,
}

impl Iterator for Spans<'_> {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        loop {
            let (index, c) = chunk_from(self.heap, self.base)?;
            let base = c.base().addr().get();
            if base != self.base {
                // The walk moves on to the next chunk (or the one asked for is gone).
                if self.one_chunk {
                    return None;
                }
                self.base = base;
                self.at = 0;
            }
            // SAFETY: `chunk_from` returned a live chunk; the heap is not in use during this
            // call, so its invariants hold.
            match unsafe { span_at(c, self.at) } {
                Some((start, end, kind)) => {
                    self.at = end;
                    return Some(Span {
                        addr: base + ((start as usize) << GRANULE_SHIFT),
                        len: ((end - start) as usize) << GRANULE_SHIFT,
                        kind,
                        chunk: index,
                    });
                }
                None if self.one_chunk => return None,
                None => {
                    self.base = base + 1;
                    self.at = 0;
                }
            }
        }
    }
}

impl FusedIterator for Spans<'_> {}

impl fmt::Debug for Spans<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Spans")
            .field("base", &self.base)
            .field("at", &self.at)
            .finish_non_exhaustive()
    }
}

/// The span of chunk `c` that starts at granule `at` (0: the metadata) as `(start, end,
/// kind)`, or `None` past the chunk's end. When `at` is inside a free block (the heap changed
/// since the previous step), the span is the rest of that block.
///
/// # Safety
/// `c` is a live chunk of a heap that is not in the middle of an operation (its invariants
/// hold).
unsafe fn span_at(c: Chunk, at: Gran) -> Option<(Gran, Gran, SpanKind)> {
    // SAFETY: live chunk: header fields are readable; a set boundary bit at a block's start
    // marks a free block, whose size field the heap wrote; bitmap words are read only below
    // the frontier.
    unsafe {
        let (granules, first, frontier) = (c.granules(), c.first(), c.frontier());
        if at == 0 {
            return Some((0, first, SpanKind::Metadata));
        }
        let at = at.max(first);
        if at >= granules {
            return None;
        }
        if at >= frontier {
            return Some((at, granules, SpanKind::Frontier));
        }
        if let Some(f) = index::floor(c, at) {
            let end = f + c.get(f, Size);
            if end > at {
                return Some((at, end.min(frontier), SpanKind::Free));
            }
        }
        // `at` starts a block (the walk goes block by block from `first`): a free one iff its
        // boundary bit is set (a block on a size-class list; indexed ones were found above).
        // (If the heap changed since the previous step, `at` may be inside a listed block: the
        // spans are then approximate until the next free block, but stay inside the chunk.)
        if c.bit(at) {
            let end = at + c.get(at, Size);
            return Some((at, end.min(frontier), SpanKind::Free));
        }
        // A used block: used up to the next boundary bit, which can only be the first granule
        // of the next free block, or up to the frontier.
        Some((at, c.next_bit(at, frontier), SpanKind::Used))
    }
}
