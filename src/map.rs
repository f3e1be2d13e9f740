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
    pub const fn name(self) -> &'static str {
        match self {
            SpanKind::Used => "used",
            SpanKind::Free => "free",
            SpanKind::Frontier => "frontier",
            SpanKind::Metadata => "metadata",
        }
    }

    /// Can an allocation be served from a span of this kind (`Free` or `Frontier`)?
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
    /// ```
    /// use isoheap::{Heap, SpanKind};
    /// use core::alloc::Layout;
    ///
    /// let heap = Heap::new();
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
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Every span of every chunk, in address order.
    pub fn spans(&self) -> Spans<'h> {
        Spans {
            heap: self.heap,
            base: 0,
            at: 0,
            one_chunk: false,
        }
    }

    /// The spans of one chunk, in address order (none if the chunk is gone).
    pub fn spans_in(&self, chunk: &MapChunk) -> Spans<'h> {
        Spans {
            heap: self.heap,
            base: chunk.addr,
            at: 0,
            one_chunk: true,
        }
    }

    /// The chunks in address order.
    pub fn chunks(&self) -> Chunks<'h> {
        Chunks {
            heap: self.heap,
            next_base: 0,
        }
    }

    /// The largest span an allocation can be served from (`Free` or `Frontier`), the
    /// lowest-addressed one if several tie; `None` when nothing is free. Its length is
    /// [`Stats::largest_free`]. O(spans).
    pub fn largest_free(&self) -> Option<Span> {
        self.spans()
            .filter(|s| s.kind.is_free())
            .fold(None, |best: Option<Span>, s| match best {
                Some(b) if b.len >= s.len => Some(b),
                _ => Some(s),
            })
    }

    /// Writes the listing: a summary line, then per chunk a line with its address range
    /// followed by one line per span (address, length in bytes, kind; the largest free span
    /// is flagged). This is what [`Display`](fmt::Display) prints. For a heap built with
    /// `Heap::builder().quick_reuse(false).initial(64 << 10)` that allocated 100, 200, 300 and
    /// 16 bytes and freed the 200:
    ///
    /// ```text
    /// heap map: in use 432 B, free 68608 B in 2 spans (largest 68400 B), mapped 69632 B in 1 chunk (metadata 592 B), peak 640 B
    /// chunk 0: 0x7f3e5c2a0000..0x7f3e5c2b1000, 69632 B
    ///   0x7f3e5c2a0000        592 B  metadata
    ///   0x7f3e5c2a0250        112 B  used
    ///   0x7f3e5c2a02c0        208 B  free
    ///   0x7f3e5c2a0390        320 B  used
    ///   0x7f3e5c2a04d0      68400 B  frontier  <- largest free span
    /// ```
    pub fn write_text<W: Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        let largest = self.largest_free();
        w.write_str("heap map: ")?;
        summary(w, &self.stats, false)?;
        w.write_char('\n')?;
        for chunk in self.chunks() {
            writeln!(
                w,
                "chunk {}: {:#x}..{:#x}, {} B",
                chunk.index,
                chunk.addr,
                chunk.addr + chunk.len,
                chunk.len
            )?;
            for s in self.spans_in(&chunk) {
                write!(w, "  {:#x} {:>10} B  {}", s.addr, s.len, s.kind)?;
                if Some(s) == largest {
                    w.write_str("  <- largest free span")?;
                }
                w.write_char('\n')?;
            }
        }
        Ok(())
    }

    /// Writes the compact form: a summary line, one line per chunk with a strip of `width`
    /// characters (at least 1; each stands for `len / width` bytes of the chunk, whatever its
    /// size) and the chunk's address and size, then a legend. A character shows the kind
    /// holding most of its bytes: `#` used, `.` free, blank untouched (frontier), `m`
    /// metadata; `*` marks the largest free span (where it holds half of a character's
    /// bytes, and where it ends if it holds half of none). The same heap as in
    /// [`write_text`](Self::write_text), 64 characters wide:
    ///
    /// ```text
    /// heap map: in use 432 B, free 67 KiB in 2 spans (largest 66.8 KiB), mapped 68 KiB in 1 chunk (metadata 592 B), peak 640 B
    ///   0 |m***************************************************************| 0x7f3e5c2a0000 68 KiB
    /// # used  . free  (blank) untouched  m metadata  * largest free span
    /// ```
    pub fn write_strips<W: Write + ?Sized>(&self, w: &mut W, width: usize) -> fmt::Result {
        let largest = self.largest_free();
        w.write_str("heap map: ")?;
        summary(w, &self.stats, true)?;
        w.write_char('\n')?;
        for chunk in self.chunks() {
            write!(w, "{:>3} |", chunk.index)?;
            let mut bins = Bins::new(width, chunk.addr, chunk.len);
            let mut marked = false;
            let mut emit = |_: usize, col: &Column| {
                let c = col.symbol(marked);
                marked |= c == '*';
                w.write_char(c)
            };
            for s in self.spans_in(&chunk) {
                bins.feed(&s, Some(s) == largest, &mut emit)?;
            }
            bins.finish(&mut emit)?;
            writeln!(w, "| {:#x} {}", chunk.addr, Human(chunk.len))?;
        }
        w.write_str("# used  . free  (blank) untouched  m metadata  * largest free span\n")
    }

    /// Writes a standalone SVG image (UTF-8, no scripts): a title and the stats as a caption,
    /// a legend, then per chunk a label (address, size, used and free bytes and spans) over a
    /// strip 1000 px wide, scaled to the chunk, with the largest free span outlined and
    /// labelled. Each pixel column of a strip is coloured by the spans it covers: used, free,
    /// untouched (frontier, a lighter shade of free) or metadata (grey); a column that covers
    /// several kinds blends their colours by bytes. O(spans + chunks x 1000).
    pub fn write_svg<W: Write + ?Sized>(&self, w: &mut W) -> fmt::Result {
        let st = &self.stats;
        let largest = self.largest_free();
        let n = self.chunks().count();
        let height = SVG_TOP + n * SVG_ROW + 8;
        let full = SVG_LEFT * 2 + SVG_WIDTH;
        writeln!(
            w,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{full}" height="{height}" viewBox="0 0 {full} {height}" font-family="sans-serif" font-size="12">"#
        )?;
        w.write_str("<title>isoheap heap map</title>\n")?;
        writeln!(
            w,
            r#"<rect width="{full}" height="{height}" fill="white"/>"#
        )?;
        writeln!(
            w,
            r#"<text x="{SVG_LEFT}" y="24" font-size="16" font-weight="bold">isoheap heap map</text>"#
        )?;
        write!(w, r#"<text x="{SVG_LEFT}" y="44">"#)?;
        summary(w, st, true)?;
        w.write_str("</text>\n")?;
        // Legend.
        let mut x = SVG_LEFT;
        for (colour, label, width) in [
            (USED, "used", 60),
            (FREE, "free", 56),
            (FRONTIER, "untouched (frontier)", 150),
            (META, "metadata", 90),
        ] {
            writeln!(
                w,
                r#"<rect x="{x}" y="56" width="12" height="12" fill="{}" stroke="{OUTLINE}" stroke-width="0.5"/><text x="{}" y="66">{label}</text>"#,
                Hex(colour),
                x + 16
            )?;
            x += width;
        }
        writeln!(
            w,
            r#"<rect x="{x}" y="55" width="14" height="14" fill="none" stroke="{MARK}" stroke-width="2"/><text x="{}" y="66">largest free span</text>"#,
            x + 18
        )?;
        writeln!(
            w,
            r#"<text x="{}" y="66" fill="{GREY_TEXT}">one pixel column = chunk size / {SVG_WIDTH}; mixed columns blend by bytes</text>"#,
            x + 140
        )?;
        // `take(n)`: the height was computed for n chunks.
        for (i, chunk) in self.chunks().take(n).enumerate() {
            self.svg_chunk(w, &chunk, SVG_TOP + i * SVG_ROW, largest)?;
        }
        w.write_str("</svg>\n")
    }

    /// One chunk's label, strip and (if it holds it) the largest-free marker, from `y` down.
    fn svg_chunk<W: Write + ?Sized>(
        &self,
        w: &mut W,
        chunk: &MapChunk,
        y: usize,
        largest: Option<Span>,
    ) -> fmt::Result {
        // Per-kind totals for the label: a first pass over the chunk.
        let (mut bytes, mut spans) = ([0usize; 4], [0usize; 4]);
        for s in self.spans_in(chunk) {
            bytes[s.kind.slot()] += s.len;
            spans[s.kind.slot()] += 1;
        }
        writeln!(
            w,
            r#"<text x="{SVG_LEFT}" y="{}"><tspan font-weight="bold">chunk {}</tspan> · {:#x} · {} · used {} in {} · free {} in {} · untouched {} · metadata {}</text>"#,
            y + 12,
            chunk.index,
            chunk.addr,
            Human(chunk.len),
            Human(bytes[0]),
            Plural(spans[0], "span"),
            Human(bytes[1]),
            Plural(spans[1], "span"),
            Human(bytes[2]),
            Human(bytes[3]),
        )?;
        let top = y + 18;
        let mut bins = Bins::new(SVG_WIDTH, chunk.addr, chunk.len);
        let mut run: Option<(usize, usize, Rgb)> = None; // first column, columns, colour
        let mut emit = |col: usize, c: &Column| {
            let colour = c.colour();
            match &mut run {
                Some((_, n, rc)) if *rc == colour => {
                    *n += 1;
                    Ok(())
                }
                _ => {
                    let done = run.replace((col, 1, colour));
                    svg_run(w, done, top)
                }
            }
        };
        for s in self.spans_in(chunk) {
            bins.feed(&s, false, &mut emit)?;
        }
        bins.finish(&mut emit)?;
        svg_run(w, run, top)?;
        writeln!(
            w,
            r#"<rect x="{SVG_LEFT}" y="{top}" width="{SVG_WIDTH}" height="{SVG_STRIP}" fill="none" stroke="{OUTLINE}" stroke-width="1"/>"#
        )?;
        let Some(l) = largest.filter(|l| l.addr >= chunk.addr && l.end() <= chunk.addr + chunk.len)
        else {
            return Ok(());
        };
        let x0 = SVG_LEFT + scale(l.addr - chunk.addr, SVG_WIDTH, chunk.len);
        let x1 = SVG_LEFT + scale(l.end() - chunk.addr, SVG_WIDTH, chunk.len);
        let (x0, x1) = (x0.min(SVG_LEFT + SVG_WIDTH - 3), x1.max(x0 + 3));
        writeln!(
            w,
            r#"<rect x="{x0}" y="{}" width="{}" height="{}" fill="none" stroke="{MARK}" stroke-width="2"/>"#,
            top - 3,
            x1 - x0,
            SVG_STRIP + 6
        )?;
        let middle = (x0 + x1) / 2;
        let (tx, anchor) = if middle < SVG_LEFT + SVG_WIDTH / 2 {
            (x0, "start")
        } else {
            (x1, "end")
        };
        writeln!(
            w,
            r#"<text x="{tx}" y="{}" text-anchor="{anchor}" fill="{MARK}">largest free span: {} at {:#x}{}</text>"#,
            top + SVG_STRIP + 17,
            Human(l.len),
            l.addr,
            if l.kind == SpanKind::Frontier {
                " (untouched tail)"
            } else {
                ""
            }
        )
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
    let mut cur = heap.core().head;
    let mut index = 0;
    while let Some(c) = cur {
        if c.base().addr().get() >= base {
            return Some((index, c));
        }
        index += 1;
        // SAFETY: chunks in the list are live while the heap is borrowed and not in use
        // (Heap is !Sync, and no heap operation is running during this call).
        cur = unsafe { (*c.h()).next };
    }
    None
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
        let len = unsafe { (*c.h()).len };
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
    // SAFETY: live chunk: header fields are readable; `floor` returns index nodes, whose size
    // fields the heap wrote; bitmap words are read only below the frontier.
    unsafe {
        let h = c.h();
        let (granules, first, frontier) = ((*h).granules, (*h).first, (*h).frontier);
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
        // Not inside a free block: used up to the next boundary bit, which can only be the
        // first granule of the next free block, or up to the frontier.
        Some((at, c.next_bit(at, frontier), SpanKind::Used))
    }
}

// ---- rendering ----

/// Geometry of the SVG, in px.
const SVG_WIDTH: usize = 1000;
const SVG_LEFT: usize = 20;
const SVG_TOP: usize = 84;
const SVG_ROW: usize = 76;
const SVG_STRIP: usize = 30;

type Rgb = [u8; 3];
/// Colours by [`SpanKind::slot`]: used, free, frontier (a lighter shade of free), metadata.
const USED: Rgb = [0x2b, 0x57, 0x9a];
const FREE: Rgb = [0xf5, 0xa6, 0x23];
const FRONTIER: Rgb = [0xfb, 0xe6, 0xbf];
const META: Rgb = [0x9a, 0x9a, 0x9a];
const COLOURS: [Rgb; 4] = [USED, FREE, FRONTIER, META];
const MARK: &str = "#d62728";
const OUTLINE: &str = "#333333";
const GREY_TEXT: &str = "#666666";

/// The bytes of each kind that one column (a character or a pixel) covers.
#[derive(Default)]
struct Column {
    bytes: [usize; 4],
    /// Bytes of the largest free span.
    largest: usize,
    /// Does the largest free span end in this column?
    largest_ends: bool,
}

impl Column {
    fn total(&self) -> usize {
        self.bytes.iter().sum()
    }

    /// The strip character: `*` where the largest free span holds half of the column's
    /// bytes, or where it ends if no column before showed it (`marked`); else the kind with
    /// most bytes.
    fn symbol(&self, marked: bool) -> char {
        let total = self.total();
        if total == 0 {
            return '?';
        }
        if self.largest > 0 && (self.largest * 2 >= total || self.largest_ends && !marked) {
            return '*';
        }
        let mut best = 0;
        for k in 1..4 {
            if self.bytes[k] > self.bytes[best] {
                best = k;
            }
        }
        ['#', '.', ' ', 'm'][best]
    }

    /// The pixel colour: the kinds' colours weighted by bytes; a mixed column is rounded to
    /// steps of 8 so that runs of similar columns merge into one rectangle.
    fn colour(&self) -> Rgb {
        let total = self.total() as u128;
        if total == 0 {
            return [0xff; 3];
        }
        if let Some(k) = (0..4).find(|&k| self.bytes[k] as u128 == total) {
            return COLOURS[k];
        }
        let mut out = [0u8; 3];
        for (ch, o) in out.iter_mut().enumerate() {
            let sum: u128 = (0..4)
                .map(|k| self.bytes[k] as u128 * COLOURS[k][ch] as u128)
                .sum();
            let v = ((sum + total / 2) / total).min(255) as u8;
            *o = v & 0xf8;
        }
        out
    }
}

/// Splits one chunk's spans (fed in address order) into `width` columns of (almost) equal
/// bytes and hands each finished column to `emit`.
struct Bins {
    width: usize,
    base: usize,
    len: usize,
    /// The column being filled.
    col: usize,
    /// Offset in the chunk up to which bytes were counted.
    pos: usize,
    acc: Column,
}

type Emit<'a> = dyn FnMut(usize, &Column) -> fmt::Result + 'a;

impl Bins {
    fn new(width: usize, base: usize, len: usize) -> Bins {
        Bins {
            // Every column holds at least one byte.
            width: width.clamp(1, len.max(1)),
            base,
            len,
            col: 0,
            pos: 0,
            acc: Column::default(),
        }
    }

    /// Offset where column `i` starts.
    fn edge(&self, i: usize) -> usize {
        scale(i, self.len, self.width)
    }

    fn feed(&mut self, s: &Span, largest: bool, emit: &mut Emit<'_>) -> fmt::Result {
        let start = s.addr.saturating_sub(self.base).max(self.pos);
        let end = (s.end().saturating_sub(self.base)).min(self.len);
        // A gap (only if the heap changed under the walk) is left uncounted.
        while self.pos < start {
            let e = self.edge(self.col + 1).min(start);
            self.pos = e;
            self.close(e, emit)?;
        }
        while self.pos < end {
            let e = self.edge(self.col + 1).min(end);
            self.acc.bytes[s.kind.slot()] += e - self.pos;
            if largest {
                self.acc.largest += e - self.pos;
                self.acc.largest_ends = e == end;
            }
            self.pos = e;
            self.close(e, emit)?;
        }
        Ok(())
    }

    /// Emits the current column if `pos` reached its end.
    fn close(&mut self, pos: usize, emit: &mut Emit<'_>) -> fmt::Result {
        if self.col < self.width && pos == self.edge(self.col + 1) {
            let acc = core::mem::take(&mut self.acc);
            emit(self.col, &acc)?;
            self.col += 1;
        }
        Ok(())
    }

    /// Emits whatever columns are left (empty if the walk ended early).
    fn finish(&mut self, emit: &mut Emit<'_>) -> fmt::Result {
        while self.col < self.width {
            let acc = core::mem::take(&mut self.acc);
            emit(self.col, &acc)?;
            self.col += 1;
        }
        Ok(())
    }
}

/// `x * num / den` without overflow (`den > 0`).
fn scale(x: usize, num: usize, den: usize) -> usize {
    (x as u128 * num as u128 / den as u128) as usize
}

/// One finished run of equal-coloured pixel columns as a rectangle.
fn svg_run<W: Write + ?Sized>(
    w: &mut W,
    run: Option<(usize, usize, Rgb)>,
    top: usize,
) -> fmt::Result {
    match run {
        Some((col, n, colour)) => writeln!(
            w,
            r#"<rect x="{}" y="{top}" width="{n}" height="{SVG_STRIP}" fill="{}"/>"#,
            SVG_LEFT + col,
            Hex(colour)
        ),
        None => Ok(()),
    }
}

/// The stats on one line; sizes in exact bytes or (`human`) in KiB/MiB/GiB.
fn summary<W: Write + ?Sized>(w: &mut W, s: &Stats, human: bool) -> fmt::Result {
    let b = |n: usize| Bytes(n, human);
    write!(
        w,
        "in use {}, free {} in {} (largest {}), mapped {} in {} (metadata {}), peak {}",
        b(s.in_use),
        b(s.free),
        Plural(s.free_blocks, "span"),
        b(s.largest_free),
        b(s.mapped),
        Plural(s.chunks, "chunk"),
        b(s.metadata),
        b(s.peak_in_use)
    )
}

/// Bytes, exact (`12345 B`) or human (`12.1 KiB`).
struct Bytes(usize, bool);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            Human(self.0).fmt(f)
        } else {
            write!(f, "{} B", self.0)
        }
    }
}

/// Bytes in binary units with one decimal (`64 KiB`, `1.5 MiB`), exact below 1 KiB.
struct Human(usize);

impl fmt::Display for Human {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0 as u128;
        if n < 1024 {
            return write!(f, "{n} B");
        }
        let mut unit = 1024u128;
        let mut name = 0;
        const NAMES: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
        while name + 1 < NAMES.len() && n >= unit * 1024 {
            unit *= 1024;
            name += 1;
        }
        let tenths = (n * 10 + unit / 2) / unit;
        if tenths.is_multiple_of(10) {
            write!(f, "{} {}", tenths / 10, NAMES[name])
        } else {
            write!(f, "{}.{} {}", tenths / 10, tenths % 10, NAMES[name])
        }
    }
}

/// `1 span`, `2 spans`.
struct Plural(usize, &'static str);

impl fmt::Display for Plural {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.0 == 1 { "" } else { "s" };
        write!(f, "{} {}{s}", self.0, self.1)
    }
}

/// `#rrggbb`.
struct Hex(Rgb);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [r, g, b] = self.0;
        write!(f, "#{r:02x}{g:02x}{b:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::alloc::Layout;
    use core::ptr::NonNull;
    use std::string::String;
    use std::vec::Vec;

    fn heap() -> Heap {
        // Unchecked: the expected spans below are exact block sizes (checked mode adds a tag).
        Heap::builder()
            .quick_reuse(false)
            .checked(false)
            .initial(64 << 10)
            .build()
            .expect("64 KiB heap")
    }

    fn alloc(heap: &Heap, size: usize) -> (NonNull<u8>, Layout) {
        let l = Layout::from_size_align(size, 8).unwrap();
        (heap.allocate(l).expect("room").cast(), l)
    }

    fn free(heap: &Heap, (p, l): (NonNull<u8>, Layout)) {
        // SAFETY: `p` came from `heap` with layout `l` and is freed once.
        unsafe { heap.deallocate(p, l) };
    }

    /// The spans as (offset from the first chunk's base, length, kind).
    fn spans(map: &HeapMap<'_>) -> Vec<(usize, usize, SpanKind)> {
        let base = map.chunks().next().map_or(0, |c| c.addr);
        map.spans()
            .map(|s| (s.addr - base, s.len, s.kind))
            .collect()
    }

    /// Spans tile every chunk and add up to the stats.
    fn assert_consistent(map: &HeapMap<'_>) {
        let st = map.stats();
        let mut by_kind = [0usize; 4];
        let mut free_spans = 0;
        for chunk in map.chunks() {
            let mut at = chunk.addr;
            for s in map.spans_in(&chunk) {
                assert_eq!(s.addr, at, "spans tile chunk {}", chunk.index);
                assert_eq!(s.chunk, chunk.index);
                assert!(s.len > 0);
                at = s.end();
                by_kind[s.kind.slot()] += s.len;
                free_spans += usize::from(s.kind.is_free());
            }
            assert_eq!(at, chunk.addr + chunk.len);
        }
        let [used, free, frontier, meta] = by_kind;
        assert_eq!(used, st.in_use);
        assert_eq!(free + frontier, st.free);
        assert_eq!(meta, st.metadata);
        assert_eq!(used + free + frontier + meta, st.mapped);
        assert_eq!(free_spans, st.free_blocks);
        assert_eq!(map.chunks().count(), st.chunks);
        assert_eq!(map.largest_free().map_or(0, |s| s.len), st.largest_free);
        let flat: Vec<Span> = map.spans().collect();
        let nested: Vec<Span> = map.chunks().flat_map(|c| map.spans_in(&c)).collect();
        assert_eq!(flat, nested);
    }

    #[test]
    fn known_sequence_gives_known_map() {
        use SpanKind::*;
        let heap = heap();
        let a = alloc(&heap, 100);
        let b = alloc(&heap, 200);
        let c = alloc(&heap, 300);
        let d = alloc(&heap, 16);
        free(&heap, b);
        let map = heap.map();
        let st = map.stats();
        let (mapped, meta) = (st.mapped, st.metadata);
        assert_eq!(st.chunks, 1);
        let front = 112 + 208 + 304 + 16;
        let want = [
            (0, meta, Metadata),
            (meta, 112, Used),
            (meta + 112, 208, Free),
            (meta + 320, 320, Used), // C and D: used blocks have no header, one span
            (meta + front, mapped - meta - front, Frontier),
        ];
        assert_eq!(spans(&map), want);
        assert_eq!(st.in_use, 112 + 304 + 16);
        assert_eq!(st.peak_in_use, front);
        assert_consistent(&map);
        let largest = map.largest_free().unwrap();
        assert_eq!(
            (largest.kind, largest.len),
            (Frontier, mapped - meta - front)
        );

        // The listing: one line per span, the largest flagged.
        let mut text = String::new();
        map.write_text(&mut text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2 + want.len(), "{text}");
        assert!(
            lines[0].starts_with(&std::format!(
                "heap map: in use 432 B, free {} B in 2 spans (largest {} B), mapped {mapped} B in \
                 1 chunk (metadata {meta} B), peak 640 B",
                st.free,
                st.largest_free
            )),
            "{text}"
        );
        assert!(lines[1].starts_with("chunk 0: 0x"), "{text}");
        for (line, (_, len, kind)) in lines[2..].iter().zip(want) {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(
                words[1..4],
                [&*std::format!("{len}"), "B", kind.name()],
                "{line}"
            );
        }
        assert!(
            lines[6].ends_with("frontier  <- largest free span"),
            "{text}"
        );
        assert_eq!(std::format!("{map}"), text);

        // The strips: metadata holds most of the first character, the rest is the largest
        // free span (the untouched tail).
        let mut strips = String::new();
        map.write_strips(&mut strips, 64).unwrap();
        let strip = std::format!("  0 |m{}|", "*".repeat(63));
        assert!(
            strips.lines().nth(1).unwrap().starts_with(&strip),
            "{strips}"
        );
        assert!(strips.contains("* largest free span"));

        // The SVG: caption, legend, one strip, the marker.
        let mut svg = String::new();
        map.write_svg(&mut svg).unwrap();
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("in use 432 B"), "{svg}");
        assert!(svg.contains("chunk 0</tspan>"));
        assert!(svg.contains("largest free span: "));
        assert!(svg.contains("(untouched tail)"));
        assert!(svg.contains(&std::format!("fill=\"{}\"", Hex(USED))));
        assert_eq!(svg.matches("<svg").count(), 1);
        assert_eq!(svg.matches('<').count(), svg.matches('>').count());

        // Free the rest: first A (merges forward into B's span), then D and C (into the
        // frontier): an empty chunk is its metadata and one untouched span.
        free(&heap, a);
        let map = heap.map();
        assert_eq!(
            spans(&map)[1..3],
            [(meta, 320, Free), (meta + 320, 320, Used)]
        );
        assert_consistent(&map);
        free(&heap, d);
        free(&heap, c);
        let map = heap.map();
        assert_eq!(
            spans(&map),
            [(0, meta, Metadata), (meta, mapped - meta, Frontier)]
        );
        assert_consistent(&map);
        heap.check().unwrap();
    }

    #[test]
    fn largest_free_span_inside_the_chunk() {
        // The chunk may be larger than asked for (a mapping from the process cache), so the
        // sizes are fractions of its block area: A half, B three eighths, the tail an eighth.
        let heap = heap();
        let st = heap.stats();
        let area = st.largest_free;
        let (a_len, b_len) = ((area / 2) & !15, (area * 3 / 8) & !15);
        let a = alloc(&heap, a_len);
        let _b = alloc(&heap, b_len);
        free(&heap, a);
        let map = heap.map();
        assert_consistent(&map);
        let chunk = map.chunks().next().unwrap();
        let l = map.largest_free().unwrap();
        assert_eq!((l.kind, l.len), (SpanKind::Free, a_len));
        assert_eq!(l.addr - chunk.addr, st.metadata);
        let mut strips = String::new();
        map.write_strips(&mut strips, 64).unwrap();
        let strip = strips.lines().nth(1).unwrap();
        let cells: String = strip.chars().skip(5).take(64).collect();
        // Metadata, then A's free span, then B, then the tail; `*` where A holds half.
        let (meta, len) = (st.metadata, chunk.len);
        let stars = (0..64)
            .filter(|k| {
                let (lo, hi) = (k * len / 64, (k + 1) * len / 64);
                let overlap = hi.min(meta + a_len).saturating_sub(lo.max(meta));
                overlap * 2 >= hi - lo
            })
            .count();
        assert!(cells.starts_with("m***"), "{strips}");
        assert_eq!(cells.matches('*').count(), stars, "{strips}");
        assert!(
            cells.contains("*#") && cells.contains("# ") && cells.ends_with(' '),
            "{strips}"
        );
        let mut svg = String::new();
        map.write_svg(&mut svg).unwrap();
        let label = std::format!("largest free span: {} at {:#x}<", Human(a_len), l.addr);
        assert!(svg.contains(&label), "{svg}");
        assert!(!svg.contains("(untouched tail)"));
    }

    #[test]
    fn small_largest_span_still_marked() {
        let heap = heap();
        let area = heap.stats().largest_free;
        let _a = alloc(&heap, 100);
        let b = alloc(&heap, 200);
        let _c = alloc(&heap, area - 112 - 208);
        free(&heap, b);
        let map = heap.map();
        assert_consistent(&map);
        let kinds: Vec<SpanKind> = map.spans().map(|s| s.kind).collect();
        use SpanKind::*;
        assert_eq!(kinds, [Metadata, Used, Free, Used]);
        let mut strips = String::new();
        map.write_strips(&mut strips, 8).unwrap();
        assert!(strips.contains("  0 |*#######| 0x"), "{strips}");
    }

    #[test]
    fn cached_blocks_are_merged_first() {
        let heap = Heap::builder()
            .initial(64 << 10)
            .checked(false)
            .build()
            .unwrap();
        let blocks: Vec<_> = (0..6).map(|_| alloc(&heap, 48)).collect();
        for &b in &blocks[1..5] {
            free(&heap, b); // onto the quick lists
        }
        let kinds: Vec<SpanKind> = heap.map().spans().map(|s| s.kind).collect();
        use SpanKind::*;
        assert_eq!(kinds, [Metadata, Used, Free, Used, Frontier]);
        assert_consistent(&heap.map());
        heap.check().unwrap();
    }

    #[test]
    fn empty_heap_has_no_spans() {
        let heap = Heap::new();
        let map = heap.map();
        assert_eq!(map.spans().count(), 0);
        assert_eq!(map.largest_free(), None);
        let mut s = String::new();
        map.write_svg(&mut s).unwrap();
        assert!(s.contains("0 chunks"));
        map.write_strips(&mut s, 0).unwrap();
    }

    #[test]
    fn sizes_in_binary_units() {
        let h = |n| std::format!("{}", Human(n));
        assert_eq!(h(0), "0 B");
        assert_eq!(h(1023), "1023 B");
        assert_eq!(h(1024), "1 KiB");
        assert_eq!(h(1536), "1.5 KiB");
        assert_eq!(h(68 << 10), "68 KiB");
        assert_eq!(h((3 << 20) + (1 << 19)), "3.5 MiB");
        assert_eq!(h(usize::MAX), "16384 PiB");
    }

    /// A writer that allocates from the heap it draws: the map must not hold the heap's state
    /// across the writer's calls (Miri flags that as aliasing UB), and its spans still tile
    /// each chunk.
    struct SameHeap<'h>(allocator_api2::vec::Vec<u8, &'h Heap>);

    impl Write for SameHeap<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0.extend_from_slice(s.as_bytes());
            Ok(())
        }
    }

    #[test]
    fn render_into_a_writer_on_the_same_heap() {
        let heap = heap();
        let keep: Vec<_> = (1..8).map(|i| alloc(&heap, i * 40)).collect();
        free(&heap, keep[2]);
        free(&heap, keep[5]);
        let mut w = SameHeap(allocator_api2::vec::Vec::new_in(&heap));
        let map = heap.map();
        write!(w, "{map}").unwrap();
        map.write_strips(&mut w, 16).unwrap();
        map.write_svg(&mut w).unwrap();
        let text = core::str::from_utf8(&w.0).unwrap();
        assert!(text.starts_with("heap map: in use"), "{text}");
        assert!(text.trim_end().ends_with("</svg>"));
        heap.check().unwrap();
        drop(w);
        assert_consistent(&heap.map());
    }
}
