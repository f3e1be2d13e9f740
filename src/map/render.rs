//! The map's renderers: the text listing ([`Display`](core::fmt::Display)), one-line strips
//! per chunk, and the SVG picture, with their binning and formatting helpers.

#![forbid(unsafe_code)]

use super::*;

impl HeapMap<'_> {
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
    ///
    /// # Errors
    /// Only the writer's: an error from `w` is returned as soon as it happens.
    ///
    /// # Examples
    ///
    /// ```
    /// let heap = isoheap::Heap::with_capacity(4096).unwrap();
    /// let mut text = String::new();
    /// heap.map().write_text(&mut text).unwrap();
    /// assert!(text.starts_with("heap map: in use 0 B"));
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
    ///
    /// # Errors
    /// Only the writer's: an error from `w` is returned as soon as it happens.
    ///
    /// # Examples
    ///
    /// ```
    /// let heap = isoheap::Heap::with_capacity(4096).unwrap();
    /// let mut text = String::new();
    /// heap.map().write_strips(&mut text, 64).unwrap();
    /// assert_eq!(text.lines().count(), 3);                // caption, one strip, legend
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
    ///
    /// # Errors
    /// Only the writer's: an error from `w` is returned as soon as it happens.
    ///
    /// # Examples
    ///
    /// ```
    /// let heap = isoheap::Heap::with_capacity(4096).unwrap();
    /// let mut svg = String::new();
    /// heap.map().write_svg(&mut svg).unwrap();
    /// assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    /// ```
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

// ---- rendering ----

/// Geometry of the SVG, in px.
pub(super) const SVG_WIDTH: usize = 1000;
pub(super) const SVG_LEFT: usize = 20;
pub(super) const SVG_TOP: usize = 84;
pub(super) const SVG_ROW: usize = 76;
pub(super) const SVG_STRIP: usize = 30;

pub(super) type Rgb = [u8; 3];
/// Colours by [`SpanKind::slot`]: used, free, frontier (a lighter shade of free), metadata.
pub(super) const USED: Rgb = [0x2b, 0x57, 0x9a];
pub(super) const FREE: Rgb = [0xf5, 0xa6, 0x23];
pub(super) const FRONTIER: Rgb = [0xfb, 0xe6, 0xbf];
pub(super) const META: Rgb = [0x9a, 0x9a, 0x9a];
pub(super) const COLOURS: [Rgb; 4] = [USED, FREE, FRONTIER, META];
pub(super) const MARK: &str = "#d62728";
pub(super) const OUTLINE: &str = "#333333";
pub(super) const GREY_TEXT: &str = "#666666";

/// The bytes of each kind that one column (a character or a pixel) covers.
#[derive(Default)]
pub(super) struct Column {
    bytes: [usize; 4],
    /// Bytes of the largest free span.
    largest: usize,
    /// Does the largest free span end in this column?
    largest_ends: bool,
}

impl Column {
    pub(super) fn total(&self) -> usize {
        self.bytes.iter().sum()
    }

    /// The strip character: `*` where the largest free span holds half of the column's
    /// bytes, or where it ends if no column before showed it (`marked`); else the kind with
    /// most bytes.
    pub(super) fn symbol(&self, marked: bool) -> char {
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
    pub(super) fn colour(&self) -> Rgb {
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
pub(super) struct Bins {
    width: usize,
    base: usize,
    len: usize,
    /// The column being filled.
    col: usize,
    /// Offset in the chunk up to which bytes were counted.
    pos: usize,
    acc: Column,
}

pub(super) type Emit<'a> = dyn FnMut(usize, &Column) -> fmt::Result + 'a;

impl Bins {
    pub(super) fn new(width: usize, base: usize, len: usize) -> Bins {
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
    pub(super) fn edge(&self, i: usize) -> usize {
        scale(i, self.len, self.width)
    }

    pub(super) fn feed(&mut self, s: &Span, largest: bool, emit: &mut Emit<'_>) -> fmt::Result {
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
    pub(super) fn close(&mut self, pos: usize, emit: &mut Emit<'_>) -> fmt::Result {
        if self.col < self.width && pos == self.edge(self.col + 1) {
            let acc = core::mem::take(&mut self.acc);
            emit(self.col, &acc)?;
            self.col += 1;
        }
        Ok(())
    }

    /// Emits whatever columns are left (empty if the walk ended early).
    pub(super) fn finish(&mut self, emit: &mut Emit<'_>) -> fmt::Result {
        while self.col < self.width {
            let acc = core::mem::take(&mut self.acc);
            emit(self.col, &acc)?;
            self.col += 1;
        }
        Ok(())
    }
}

/// `x * num / den` without overflow (`den > 0`).
pub(super) fn scale(x: usize, num: usize, den: usize) -> usize {
    (x as u128 * num as u128 / den as u128) as usize
}

/// One finished run of equal-coloured pixel columns as a rectangle.
pub(super) fn svg_run<W: Write + ?Sized>(
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
pub(super) fn summary<W: Write + ?Sized>(w: &mut W, s: &Stats, human: bool) -> fmt::Result {
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
pub(super) struct Bytes(usize, bool);

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
pub(super) struct Human(pub(super) usize);

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
pub(super) struct Plural(usize, &'static str);

impl fmt::Display for Plural {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.0 == 1 { "" } else { "s" };
        write!(f, "{} {}{s}", self.0, self.1)
    }
}

/// `#rrggbb`.
pub(super) struct Hex(pub(super) Rgb);

impl fmt::Display for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [r, g, b] = self.0;
        write!(f, "#{r:02x}{g:02x}{b:02x}")
    }
}
