use super::render::{Hex, Human, USED};
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
