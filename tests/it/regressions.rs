//! One test per class of bug that allocators are known to have had, each written so that it
//! fails if isoheap had that bug, given how isoheap lays memory out: blocks are 16-byte granules,
//! used blocks carry no header, a free block has its index node in its first granule and a
//! footer in the last 4 bytes of its last granule, and a boundary bitmap marks free blocks' ends.
//!
//! - `oob_write_on_small_region`: metadata or blocks written past the end of a tiny region.
//! - `realloc_copies_exactly_old_size`: a moving grow copies too much or too little.
//! - `shrink_with_overlapping_copy`: a realigning resize copies between overlapping ranges.
//! - `huge_layouts_do_not_panic`: overflow on rounding or on alignment padding, panics.
//! - `size_flags_for_large_blocks`: a size field that overflows (u32 granules, 2^32 bytes).
//! - `merge_never_hands_out_a_block_twice`: a merge that leaves a block both used and free.
//! - `aligned_free_block_is_reused_when_full`: a false out-of-memory for an aligned request
//!   that a free block holds exactly.
//!
//! `integration` (`tests/it/integration.rs`) has lighter versions of some of these
//! (`huge_sizes_fail_without_panicking`, `grow_that_moves_copies_exactly_the_old_bytes`,
//! `move_next_to_a_free_predecessor_keeps_data`); the ones here run on every front end and
//! check more: the bytes past the old size, every offset of a realigning move, every alignment
//! and builder value at the edges, the guard bytes around a region.

use isoheap::{AllocError, BufferHeap, GRANULE, GlobalHeap, Heap, MAX_ALIGN, SharedHeap, SyncHeap};
use isoheap_testkit::bytes::{addr, all_are, assert_pattern, buffer, fill, layout, panic_text};
use isoheap_testkit::{Api2, Front, Global, Methods, Rng, span, tag_bytes};
use std::alloc::{GlobalAlloc, Layout};
use std::collections::BTreeMap;
use std::mem::MaybeUninit;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::ptr::NonNull;

// ---- front ends (the kit's; see `bad_input` for the full set) ----

/// `f`'s heap passes `check()`.
fn check(f: &dyn Front) {
    if let Err(e) = f.check() {
        panic!("{}: {e}", f.name());
    }
}

/// Runs `row` on a fresh heap of every kind that maps its own memory, plus a buffer heap of
/// `buffer_len` bytes; `global` is a `GlobalHeap` static of the calling test's own.
///
/// The `Heap` kinds map `buffer_len` bytes up front, so a row's blocks share one chunk and sit
/// next to each other in allocation order (with chunks of their own, say a larger mapping from
/// the process cache, a block could grow in place where the row expects a move).
fn every_front(buffer_len: usize, global: &'static GlobalHeap, mut row: impl FnMut(&dyn Front)) {
    let heap = Heap::builder().initial(buffer_len).build().unwrap();
    row(&Methods(&heap, "Heap"));
    let strict = Heap::builder()
        .initial(buffer_len)
        .quick_reuse(false)
        .build()
        .unwrap();
    row(&Methods(&strict, "Heap, quick_reuse(false)"));
    let unchecked = Heap::builder()
        .initial(buffer_len)
        .checked(false)
        .build()
        .unwrap();
    row(&Methods(&unchecked, "Heap, checked(false)"));
    let mut buf = buffer(buffer_len);
    let bh = Heap::from_buffer(&mut buf).unwrap();
    row(&Methods(&*bh, "BufferHeap"));
    drop(bh);
    let sync = SyncHeap::new();
    row(&Methods(&sync, "SyncHeap"));
    row(&Api2::new(
        SharedHeap::new(),
        "SharedHeap as allocator_api2::Allocator",
    ));
    row(&Global(global));
}

// ---- out-of-bounds writes on a small region ----

/// A tiny region used up to its very last granule: every byte of every block written, blocks
/// freed and reused so free blocks' nodes and footers land at the region's edges. Nothing may be
/// written outside the region (64 guard bytes on each side of the buffer, and the bytes skipped
/// to align its start and end), and `check()` must hold throughout.
#[test]
fn oob_write_on_small_region() {
    let min = BufferHeap::MIN_LEN;
    for offset in [0, 1, 8, 15] {
        for extra in (0..48).chain([100, 255, 256, 1000]) {
            let pad = (16 - offset) % 16;
            let len = pad + min + extra * GRANULE + offset % 5;
            // 64 guard bytes, the buffer `offset` bytes past a 16-byte boundary, 64 guard bytes.
            let mut mem = vec![u128::from_ne_bytes([0xEE; 16]); (len + offset).div_ceil(16) + 9];
            let start = (mem.as_ptr().addr().wrapping_neg() & 15) + 64 + offset;
            let total = mem.len() * 16;
            assert!(start + len + 64 <= total);
            let base = mem.as_mut_ptr().cast::<u8>();
            let lo = base.addr() + start + pad;
            let hi = lo + ((len - pad) & !(GRANULE - 1));
            {
                // SAFETY: `start..start+len` lies inside `mem`, which stays borrowed (through
                // `base`) and is not otherwise touched while the heap lives.
                let buf = unsafe {
                    std::slice::from_raw_parts_mut(base.add(start).cast::<MaybeUninit<u8>>(), len)
                };
                let heap = Heap::from_buffer(buf).unwrap();
                fill_small_region(&heap, lo, hi);
            }
            // SAFETY: reading the initialised bytes of `mem`.
            let bytes = unsafe { std::slice::from_raw_parts(base, total) };
            for (i, &b) in bytes.iter().enumerate() {
                let a = base.addr() + i;
                assert!(
                    (lo..hi).contains(&a) || b == 0xEE,
                    "offset {offset}, length {len}: byte {} outside the region {lo:#x}..{hi:#x} \
                     was written ({b:#x})",
                    a
                );
            }
        }
    }
    // A mapped heap limited to the smallest chunk, checked or not: filled to its last byte.
    for checked in [true, false] {
        let minimum = match Heap::builder().limit(1).checked(checked).build() {
            Err(isoheap::HeapError::TooSmall { minimum, .. }) => minimum,
            other => panic!("{other:?}"),
        };
        let heap = Heap::builder()
            .limit(minimum)
            .checked(checked)
            .build()
            .unwrap();
        let f = Methods(&heap, "Heap, limit = minimum");
        let first = heap.allocate(layout(1, 1)).unwrap();
        // SAFETY: a live 1-byte block.
        unsafe { heap.deallocate(first.cast(), layout(1, 1)) };
        let s = heap.stats();
        assert_eq!(s.chunks, 1);
        let whole = layout(s.largest_free - tag_bytes(&f), 16);
        let b = heap.allocate(whole).expect("the whole free span");
        // SAFETY: a live block of b.len() bytes: written to its last byte.
        unsafe { fill(b.cast(), b.len(), 0x31) };
        heap.check().unwrap();
        assert_eq!(heap.allocate(layout(1, 1)), Err(AllocError));
        // SAFETY: still live; then freed with its layout.
        unsafe {
            assert_pattern(b.cast(), 0, b.len(), 0x31, "the whole mapped heap");
            heap.deallocate(b.cast(), whole);
        }
        heap.check().unwrap();
    }
}

/// Fills a heap over `lo..hi` to its last granule in several ways, writing every byte of every
/// block, and checks blocks stay inside and intact.
fn fill_small_region(heap: &Heap, lo: usize, hi: usize) {
    let f = Methods(heap, "BufferHeap");
    let tag_len = tag_bytes(&f);
    let inside = |b: NonNull<[u8]>| {
        assert!(
            addr(b) >= lo && addr(b) + b.len() <= hi,
            "block {:#x}+{} outside the region {lo:#x}..{hi:#x}",
            addr(b),
            b.len()
        );
    };
    // 1. One block over all the free space.
    let s = heap.stats();
    assert_eq!(s.mapped, hi - lo);
    // The largest request: the free span, less the tag in checked mode.
    let whole = layout(s.largest_free - tag_len, 1);
    let b = heap.allocate(whole).expect("the whole free span");
    inside(b);
    assert_eq!(
        addr(b) + span(&f, whole.size()),
        hi,
        "the whole free span ends at the region's end"
    );
    // SAFETY: a live block of b.len() bytes, freed with its layout.
    unsafe {
        fill(b.cast(), b.len(), 1);
        heap.check().unwrap();
        assert_eq!(heap.allocate(layout(1, 1)), Err(AllocError));
        assert_pattern(b.cast(), 0, b.len(), 1, "the whole free span");
        heap.deallocate(b.cast(), whole);
    }
    heap.check().unwrap();

    // 2. Small blocks of mixed sizes, then single granules to the last one.
    let mut live: Vec<(NonNull<[u8]>, Layout, u8)> = Vec::new();
    let mut k = 0usize;
    loop {
        k += 1;
        let l = layout(1 + (k * 7) % 48, 1 << (k % 5));
        let Ok(b) = heap.allocate(l) else { break };
        live.push((b, l, k as u8));
    }
    let one = layout(GRANULE - tag_len, 1);
    while let Ok(b) = heap.allocate(one) {
        k += 1;
        live.push((b, one, k as u8));
    }
    assert_eq!(
        heap.stats().free,
        0,
        "filled to the last granule: {:?}",
        heap.stats()
    );
    for &(b, _, tag) in &live {
        inside(b);
        // SAFETY: a live block of b.len() bytes.
        unsafe { fill(b.cast(), b.len(), tag) };
    }
    heap.check().unwrap();
    // The last block cannot grow; shrinking it and growing it back stays inside.
    let (last, last_l, last_tag) = *live.iter().max_by_key(|(b, ..)| addr(*b)).unwrap();
    assert_eq!(
        addr(last) + span(&f, last_l.size()),
        hi,
        "the last block ends at the region's end"
    );
    // SAFETY: last is live with last_l; a refused grow leaves it so.
    unsafe {
        // One byte more than its granules hold (with the tag in checked mode).
        let more = layout(span(&f, last_l.size()) - tag_len + 1, last_l.align());
        assert_eq!(heap.grow(last.cast(), last_l, more), Err(AllocError));
        assert_pattern(
            last.cast(),
            0,
            last.len(),
            last_tag,
            "last block after a refused grow",
        );
    }
    // 3. Free every other block (free blocks get nodes and footers between used ones, up to
    // the region's end), check, refill the holes with zeroed blocks, write them fully.
    let mut i = 0;
    live.retain(|&(b, l, _)| {
        i += 1;
        if i % 2 == 0 {
            // SAFETY: live with layout l; dropped from the list.
            unsafe { heap.deallocate(b.cast(), l) };
            false
        } else {
            true
        }
    });
    heap.check().unwrap();
    for &(b, _, tag) in &live {
        // SAFETY: live blocks, filled above.
        unsafe { assert_pattern(b.cast(), 0, b.len(), tag, "block next to freed ones") };
    }
    while let Ok(b) = heap.allocate_zeroed(layout(1, 1)) {
        inside(b);
        // SAFETY: a fresh zeroed block of b.len() bytes.
        unsafe {
            assert!(all_are(b.cast(), b.len(), 0), "allocate_zeroed not zero");
            k += 1;
            fill(b.cast(), b.len(), k as u8);
        }
        live.push((b, layout(1, 1), k as u8));
    }
    heap.check().unwrap();
    for (b, l, tag) in live {
        // SAFETY: live blocks, filled above.
        unsafe {
            assert_pattern(b.cast(), 0, b.len(), tag, "block of a full region");
            heap.deallocate(b.cast(), l);
        }
    }
    heap.check().unwrap();
    let s = heap.stats();
    assert_eq!((s.in_use, s.free_blocks), (0, 1), "{s:?}");
}

// ---- moving grow copies exactly the old size ----

/// A grow that has to move (a neighbour is allocated right after the block) copies exactly
/// `old.size()` bytes: the new block's bytes from `old.size()` on are zero after `grow_zeroed`
/// (the old block's slack up to its 16-byte rounding was filled, so copying the rounded size
/// shows), and after `grow` they are what the memory held before (a freed block whose contents
/// are known, apart from the free block's node and footer, which the heap owns while it is
/// free), so copying more than `old.size()` shows too. The blocks before and after the old and
/// the new place are intact.
#[test]
fn realloc_copies_exactly_old_size() {
    static G: GlobalHeap = GlobalHeap::new();
    every_front(4 << 20, &G, |f| {
        let n = f.name();
        // Sizes whose grow_zeroed moved (what the test is after).
        let mut moved = 0;
        for old in (1..=64).chain([100, 255, 1000, 4095, 4096, 4097, 65_537]) {
            let tag = old as u8 ^ 0x5A;
            // The landing place: a block of the new size, below everything, filled with a
            // known pattern and freed, so first fit moves the grown block there (above 64 KiB:
            // smaller free blocks are on size-class lists, a good fit, not the lowest address).
            let new = 65_536 + 2 * old + 100;
            let nl = layout(new, 16);
            let land = f.allocate(nl).expect("landing block");
            let before = f.allocate(layout(48, 16)).expect("block before");
            let ol = layout(old, 16);
            let a = f.allocate(ol).expect("old block");
            let after = f.allocate(layout(16, 16)).expect("neighbour after");
            let al = a.len();
            // SAFETY: live blocks, written within their lengths; after a successful grow only
            // the result is used.
            unsafe {
                fill(land.cast(), land.len(), 0xC3);
                fill(before.cast(), 48, 0xB0);
                fill(after.cast(), 16, 0xAF);
                // The whole returned length of the old block, slack included.
                fill(a.cast(), al, tag);
                f.deallocate(land.cast(), nl);
                let g = f
                    .grow(a.cast(), ol, nl)
                    .unwrap_or_else(|e| panic!("{n}: grow {old} -> {new}: {e}"));
                if n.starts_with("GlobalHeap") && addr(g) == addr(a) {
                    // A small block of an unchecked GlobalHeap comes from its thread's cache,
                    // not from first fit: its neighbour need not be `after`, and it may grow in
                    // place. Nothing here to test for this size.
                    f.deallocate(g.cast(), nl);
                    f.deallocate(before.cast(), layout(48, 16));
                    f.deallocate(after.cast(), layout(16, 16));
                    continue;
                }
                assert_ne!(addr(g), addr(a), "{n}: the neighbour forces a move");
                assert_eq!(addr(g), addr(land), "{n}: first fit: the landing block");
                assert_pattern(
                    g.cast(),
                    0,
                    old,
                    tag,
                    &format!("{n}: grow {old}: kept bytes"),
                );
                // Past `old`: the landing pattern, untouched, except the first granule (the
                // free block's node; `old` covers it from 16 bytes on) and the last 4 bytes of
                // the landing block's last granule (its footer). Not in checked mode, which
                // poisons freed memory (there `grow_zeroed` below is the exact check).
                if !f.checked() {
                    let tail_from = old.max(GRANULE);
                    let tail_to = new.next_multiple_of(GRANULE) - 4;
                    assert_pattern(
                        g.cast(),
                        tail_from,
                        tail_to.min(land.len()),
                        0xC3,
                        &format!("{n}: grow {old} -> {new}: bytes past the old size"),
                    );
                }
                assert_pattern(before.cast(), 0, 48, 0xB0, "block before");
                assert_pattern(after.cast(), 0, 16, 0xAF, "neighbour after");
                check(f);
                f.deallocate(g.cast(), nl);

                // grow_zeroed: zero from exactly `old` on.
                let a = f.allocate(ol).expect("old block");
                let guard = f.allocate(layout(16, 16)).expect("guard");
                fill(a.cast(), a.len(), tag);
                fill(guard.cast(), 16, 0xAE);
                if f.caps().grow_zeroes {
                    let g = f
                        .grow_zeroed(a.cast(), ol, nl)
                        .unwrap_or_else(|e| panic!("{n}: grow_zeroed {old}: {e}"));
                    // A guard right after the block forces a move. A lower hole may take the
                    // guard instead (a thread-safe heap's arena grew by chunks of several
                    // sizes; a block of up to 64 KiB is a good fit from its size-class list,
                    // not the lowest address), and then the block may grow in place; the
                    // guard's bytes are checked below either way, and most sizes must move.
                    let right_after = addr(guard) >= addr(a) + a.len()
                        && addr(guard) <= addr(a) + a.len() + 2 * GRANULE;
                    if addr(g) != addr(a) {
                        moved += 1;
                    } else {
                        assert!(!right_after, "{n}: {old}: the guard forces a move");
                    }
                    assert_pattern(g.cast(), 0, old, tag, "grow_zeroed: kept bytes");
                    assert!(
                        all_are(g.cast::<u8>().add(old), g.len() - old, 0),
                        "{n}: grow_zeroed {old} -> {new} copied more than {old} bytes or \
                         did not zero the rest"
                    );
                    f.deallocate(g.cast(), nl);
                } else {
                    f.deallocate(a.cast(), ol);
                }
                assert_pattern(guard.cast(), 0, 16, 0xAE, "guard");
                assert_pattern(after.cast(), 0, 16, 0xAF, "neighbour after");
                f.deallocate(guard.cast(), layout(16, 16));
                f.deallocate(before.cast(), layout(48, 16));
                f.deallocate(after.cast(), layout(16, 16));
            }
            check(f);
            assert_eq!(f.stats().in_use, 0, "{n}: old size {old}");
        }
        if f.caps().grow_zeroes {
            assert!(moved >= 60, "{n}: grow_zeroed moved for only {moved} sizes");
        }
    });
}

// ---- shrink (and grow) to a larger alignment: a move between possibly overlapping ranges ----

/// A block whose start is not aligned, with free space before it, shrinks to an alignment it
/// lacks: it must move, and an aligned address lies inside the block itself, so an allocator
/// that freed first and reallocated would copy between overlapping ranges. Every offset of the
/// block from a 4096 boundary, several new sizes; contents and neighbours must be intact.
#[test]
fn shrink_with_overlapping_copy() {
    let mut failures = Vec::new();
    for quick in [true, false] {
        for off in (16..4096).step_by(16 * 13) {
            for new_size in [1, 100, 3000, 4097, 6000] {
                // One chunk that holds the whole layout (a first chunk sized to the probe would
                // not).
                let heap = Heap::builder()
                    .quick_reuse(quick)
                    .initial(64 << 10)
                    .build()
                    .unwrap();
                let f = Methods(&heap, "Heap");
                let r = catch_unwind(AssertUnwindSafe(|| overlapping_resize(&f, off, new_size)));
                if let Err(e) = r {
                    failures.push(format!(
                        "quick {quick}, offset {off}, new size {new_size}: {}",
                        panic_text(e)
                    ));
                }
            }
        }
    }
    // The same through a buffer heap and a SyncHeap.
    let mut buf = buffer(1 << 20);
    for off in (16..4096).step_by(16 * 29) {
        let heap = Heap::from_buffer(&mut buf).unwrap();
        overlapping_resize(&Methods(&*heap, "BufferHeap"), off, 3000);
    }
    for off in (16..4096).step_by(16 * 29) {
        let heap = SyncHeap::new();
        overlapping_resize(&Methods(&heap, "SyncHeap"), off, 3000);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Puts an 8192-byte block at `off` bytes past a 4096 boundary with a free block before it and
/// a used one after, then shrinks it to `new_size` at align 4096 (and, as a second case, grows
/// it at align 4096).
fn overlapping_resize(f: &dyn Front, off: usize, new_size: usize) {
    let n = f.name();
    // Find where blocks start, then pad so that the block lands at `off` mod 4096.
    let probe = f.allocate(layout(16, 16)).unwrap();
    let at = addr(probe) + span(f, 16);
    let lead_len = (off + 4096 - at % 4096) % 4096;
    // A lead block spanning exactly `lead_len` bytes (4096 if that is 0: there must be one).
    let lead_span = if lead_len == 0 { 4096 } else { lead_len };
    let lead_l = layout(lead_span - tag_bytes(f), 16);
    let lead = f.allocate(lead_l).unwrap();
    let xl = layout(8192, 16);
    let x = f.allocate(xl).unwrap();
    assert_eq!(addr(x) % 4096, off, "{n}: the block is where it should be");
    let after = f.allocate(layout(64, 16)).unwrap();
    // SAFETY: live blocks written within their layouts; after a successful resize only the
    // result is used.
    unsafe {
        fill(after.cast(), 64, 0xAF);
        fill(x.cast(), 8192, 0x42);
        f.deallocate(lead.cast(), lead_l);
        let nl = layout(new_size, 4096);
        let s = if new_size <= 8192 {
            f.shrink(x.cast(), xl, nl)
        } else {
            f.grow(x.cast(), xl, nl)
        }
        .unwrap_or_else(|e| panic!("{n}: resize to {nl:?}: {e}"));
        assert_eq!(addr(s) % 4096, 0, "{n}: resized block aligned");
        assert_ne!(addr(s), addr(x), "{n}: the block had to move");
        assert_pattern(s.cast(), 0, new_size.min(8192), 0x42, "moved block");
        assert_pattern(after.cast(), 0, 64, 0xAF, "neighbour after");
        check(f);
        // And growing to the larger alignment from a misaligned start (same overlap).
        let yl = layout(8192, 16);
        let y = f.allocate(yl).unwrap();
        fill(y.cast(), 8192, 0x24);
        let gl = layout(8192 + 4096, 4096);
        let g = f.grow(y.cast(), yl, gl);
        let g = g.unwrap_or_else(|e| panic!("{n}: grow to {gl:?}: {e}"));
        assert_eq!(addr(g) % 4096, 0);
        assert_pattern(g.cast(), 0, 8192, 0x24, "grown realigned block");
        assert_pattern(s.cast(), 0, new_size.min(8192), 0x42, "moved block, later");
        for (p, l) in [
            (s, nl),
            (g, gl),
            (after, layout(64, 16)),
            (probe, layout(16, 16)),
        ] {
            f.deallocate(p.cast(), l);
        }
    }
    check(f);
    assert_eq!(f.stats().in_use, 0, "{n}");
}

// ---- huge layouts never panic ----

/// Layouts at the edges of what `Layout` allows, and builder values at the edges of `usize`,
/// through every front end and every method: each call returns (`Err`/null, or `Ok` where the
/// request is servable), none panics, and every heap still passes `check()`.
#[test]
fn huge_layouts_do_not_panic() {
    static G: GlobalHeap = GlobalHeap::new();
    let mut layouts = Vec::new();
    for k in 0..=29u32 {
        let align = 1usize << k;
        for d in [0usize, 1, 7, 15, 16, 17, 4095, 4096] {
            for size in [
                isize::MAX as usize - d,
                isize::MAX as usize - (align - 1) - d,
                (isize::MAX as usize - (align - 1)) / 2 - d,
                u32::MAX as usize * GRANULE - d,
                (u32::MAX as usize + 1) * GRANULE - d,
                (u32::MAX as usize + 1) * GRANULE + d,
            ] {
                if let Ok(l) = Layout::from_size_align(size, align) {
                    layouts.push(l);
                }
            }
        }
    }
    let mut failures = Vec::new();
    every_front(64 << 10, &G, |f| {
        let keep_l = layout(100, 8);
        // The live block; a servable shrink to a larger alignment moves it (and it is grown
        // back), so it is tracked here.
        let keep = std::cell::Cell::new(f.allocate(keep_l).unwrap().cast::<u8>());
        // SAFETY: a fresh block of 100 bytes.
        unsafe { fill(keep.get(), 100, 0x6B) };
        for &l in &layouts {
            let r = catch_unwind(AssertUnwindSafe(|| {
                if let Ok(b) = f.allocate(l) {
                    // SAFETY: just allocated with l.
                    unsafe { f.deallocate(b.cast(), l) };
                    assert!(l.size() <= 1 << 40, "allocate({l:?}) succeeded");
                }
                // SAFETY: keep is live with keep_l; a refused grow or shrink leaves it so, a
                // successful shrink is undone by growing back, and keep follows the block.
                unsafe {
                    if l.size() >= 100 && (f.caps().align_change || l.align() == 8) {
                        if let Ok(g) = f.grow(keep.get(), keep_l, l) {
                            panic!("grow to {l:?} succeeded at {:p}", g.cast::<u8>());
                        }
                        if f.caps().grow_zeroes && f.grow_zeroed(keep.get(), keep_l, l).is_ok() {
                            panic!("grow_zeroed to {l:?} succeeded");
                        }
                    }
                    if f.caps().align_change && l.align() > 8 {
                        let sl = layout(16, l.align());
                        if let Ok(s) = f.shrink(keep.get(), keep_l, sl) {
                            // Above MAX_ALIGN only in place, where the block happens to be
                            // aligned already.
                            assert!(
                                l.align() <= MAX_ALIGN || addr(s) == addr(keep.get()),
                                "shrink to {sl:?} succeeded by moving"
                            );
                            assert_eq!(addr(s) % l.align(), 0);
                            keep.set(s.cast());
                            let back = f.grow(s.cast(), sl, keep_l).expect("grow back");
                            keep.set(back.cast());
                        }
                    }
                    assert_pattern(keep.get(), 0, 16, 0x6B, "live block");
                }
            }));
            if let Err(e) = r {
                failures.push(format!("{}: {l:?}: {}", f.name(), panic_text(e)));
                return;
            }
        }
        // SAFETY: keep is live with keep_l.
        unsafe { f.deallocate(keep.get(), keep_l) };
        check(f);
        assert_eq!(f.stats().in_use, 0, "{}", f.name());
    });
    // GlobalAlloc::realloc takes a bare usize: values no Layout allows.
    let keep_l = layout(100, 8);
    // SAFETY: non-zero size; keep stays live through refused reallocs.
    unsafe {
        let keep = G.alloc(keep_l);
        assert!(!keep.is_null());
        for k in 0..4096usize {
            for new in [
                usize::MAX - k,
                (isize::MAX as usize) - k,
                (isize::MAX as usize) + k,
            ] {
                if new > isize::MAX as usize - 7 {
                    let r = catch_unwind(AssertUnwindSafe(|| G.realloc(keep, keep_l, new)));
                    match r {
                        Ok(p) if p.is_null() => {}
                        Ok(_) => failures.push(format!("realloc to {new} succeeded")),
                        Err(e) => failures.push(format!("realloc to {new}: {}", panic_text(e))),
                    }
                }
            }
        }
        G.dealloc(keep, keep_l);
    }
    // Builder values at the edges: an error or a heap that works, never a panic.
    for (what, b) in [
        (
            "initial(isize::MAX)",
            Heap::builder().initial(isize::MAX as usize),
        ),
        ("initial(usize::MAX)", Heap::builder().initial(usize::MAX)),
        ("limit(usize::MAX)", Heap::builder().limit(usize::MAX)),
        ("growth(usize::MAX)", Heap::builder().growth(usize::MAX)),
        (
            "growth(isize::MAX)",
            Heap::builder().growth(isize::MAX as usize),
        ),
        ("growth(1)", Heap::builder().growth(1)),
        ("budget(0)", Heap::builder().budget(0)),
        ("budget(usize::MAX)", Heap::builder().budget(usize::MAX)),
        ("warm(usize::MAX)", Heap::builder().warm(usize::MAX)),
        ("give_back(0)", Heap::builder().give_back(0)),
        (
            "give_back(usize::MAX)",
            Heap::builder().give_back(usize::MAX),
        ),
        (
            "initial(1 MiB).limit(usize::MAX).growth(usize::MAX)",
            Heap::builder()
                .initial(1 << 20)
                .limit(usize::MAX)
                .growth(usize::MAX),
        ),
    ] {
        let r = catch_unwind(AssertUnwindSafe(|| {
            if let Ok(mut heap) = b.build() {
                let mut live = Vec::new();
                for i in 1..200usize {
                    let l = layout(i * 97 % 70_000 + 1, 1 << (i % 10));
                    if let Ok(p) = heap.allocate(l) {
                        live.push((p, l));
                    }
                    if i % 3 == 0
                        && let Some((p, l)) = live.pop()
                    {
                        // SAFETY: live with layout l.
                        unsafe { heap.deallocate(p.cast(), l) };
                    }
                }
                for (p, l) in live {
                    // SAFETY: live with layout l.
                    unsafe { heap.deallocate(p.cast(), l) };
                }
                heap.check().unwrap();
                assert_eq!(heap.stats().in_use, 0);
                heap.reset();
                heap.check().unwrap();
            }
        }));
        if let Err(e) = r {
            failures.push(format!("Heap::builder().{what}: {}", panic_text(e)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---- size fields of large blocks ----

/// Does the OS let this process map `bytes` of address space without reserving memory (for a
/// buffer heap over a sparse mapping)? Returns the mapping.
fn sparse_mapping(bytes: usize) -> Option<NonNull<u8>> {
    // SAFETY: a fresh anonymous private mapping; the caller unmaps it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            bytes,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED).then(|| NonNull::new(p.cast()).unwrap())
}

/// Blocks whose sizes sit at the boundaries where a size field could overflow: 2^20, 2^24,
/// 2^28, 2^31 and 2^32 bytes (2^32 bytes is 2^28 granules: a `u32` of bytes overflows there),
/// and 2^31 and nearly 2^32 granules (the `u32` granule numbers of a chunk: 32 and 64 GiB, in a
/// buffer heap over a sparse mapping, only its bitmap and the blocks' edges touched). Each is
/// allocated, written at both ends, freed, merged with its neighbours, and checked. Where the
/// OS refuses the memory, that size is skipped (and reported on stderr).
#[test]
fn size_flags_for_large_blocks() {
    // Byte-size boundaries, in a mapped heap: three blocks side by side in one chunk, freed so
    // that the middle one merges with both.
    // Checked and unchecked heaps (checked mode adds a tag to every block and side bitmaps to
    // every chunk); `check()` of a checked 12 GiB heap takes about a second in a debug build,
    // so at 2^31 and 2^32 bytes the checked heap gets the boundary size only.
    for (p, checked) in [20u32, 24, 28, 31, 32]
        .into_iter()
        .flat_map(|p| [(p, true), (p, false)])
    {
        // The largest size below the boundary, the boundary, one byte over it.
        let sizes = [(1usize << p) - GRANULE, 1 << p, (1 << p) + 1];
        for size in sizes
            .into_iter()
            .filter(|&s| !checked || p < 31 || s == 1 << p)
        {
            let built = Heap::builder()
                .initial(3 * size + 8 * GRANULE)
                .checked(checked)
                .build();
            let Ok(heap) = built else {
                eprintln!(
                    "size_flags_for_large_blocks: the OS refused {} bytes",
                    3 * size
                );
                continue;
            };
            three_blocks_merge(&Methods(&heap, "Heap::builder().initial(..)"), size);
            assert_eq!(
                heap.stats().chunks,
                1,
                "three blocks of {size} bytes in one chunk"
            );
        }
    }
    // Blocks on their own in a SyncHeap (arena chunks made for one block), around the same
    // boundaries; each size in a fresh heap, failures collected.
    let mut failures = Vec::new();
    for p in [20u32, 24, 28, 29, 31, 32] {
        for size in [(1usize << p) - GRANULE, 1 << p, (1 << p) + GRANULE] {
            let sync = SyncHeap::new();
            let l = layout(size, 16);
            let Ok(b) = sync.allocate(l) else {
                eprintln!("size_flags_for_large_blocks: SyncHeap refused {size} bytes");
                continue;
            };
            let r = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: a live block of size bytes: its ends written and read back, then
                // freed with its layout.
                unsafe {
                    b.cast::<u8>().write(0x11);
                    b.cast::<u8>().add(size - 1).write(0x22);
                    assert_eq!(b.cast::<u8>().add(size - 1).read(), 0x22);
                    sync.deallocate(b.cast(), l);
                }
                sync.check().unwrap();
                assert_eq!(sync.stats().in_use, 0);
            }));
            if let Err(e) = r {
                failures.push(format!("SyncHeap, {size} bytes: {}", panic_text(e)));
                // The block could not be freed: leave its heap (and mapping) be.
                std::mem::forget(sync);
            }
        }
    }

    // Granule-count boundaries: one chunk of the largest size a chunk can number, over a sparse
    // mapping the heap takes as a buffer.
    let max_piece = (u32::MAX as usize * GRANULE) & !4095;
    let Some(map) = sparse_mapping(max_piece) else {
        eprintln!("size_flags_for_large_blocks: no sparse mapping of {max_piece} bytes: skipped");
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        return;
    };
    {
        // SAFETY: the mapping is ours, readable and writable, and outlives the heap; the bytes
        // are zero, so valid `MaybeUninit<u8>`s either way.
        let buf = unsafe {
            std::slice::from_raw_parts_mut(map.as_ptr().cast::<MaybeUninit<u8>>(), max_piece)
        };
        let heap = Heap::from_buffer(buf).unwrap();
        let s = heap.stats();
        assert_eq!((s.chunks, s.mapped), (1, max_piece), "{s:?}");
        let f = Methods(&*heap, "BufferHeap of 2^32 granules");
        // Blocks spanning 2^31 granules exactly, the rest minus one granule, the last granule
        // (each request less the tag in checked mode, so that it spans exactly that).
        let t = tag_bytes(&f);
        let a = 1usize << 35;
        let b = s.largest_free - a - GRANULE;
        let (al, bl, cl) = (
            layout(a - t, 16),
            layout(b - t, 16),
            layout(GRANULE - t, 16),
        );
        let pa = touch_ends(&f, al, 1);
        let pb = touch_ends(&f, bl, 2);
        let pc = touch_ends(&f, cl, 3);
        assert_eq!(heap.stats().free, 0, "filled exactly");
        assert_eq!((addr(pb), addr(pc)), (addr(pa) + a, addr(pa) + a + b));
        // One `check()` here walks 64 GiB worth of metadata (about 8 s in a debug build), so
        // the state with the largest free block is the one checked; the others are verified
        // through `stats()` and where first fit puts the next blocks.
        // SAFETY: live blocks with these layouts.
        unsafe {
            f.deallocate(pa, al);
            assert_eq!(
                heap.stats().largest_free,
                a,
                "a free block of 2^31 granules"
            );
            f.deallocate(pb, bl);
            check(&f);
            assert_eq!(
                heap.stats().largest_free,
                a + b,
                "merged: nearly 2^32 granules"
            );
            // Just over 2^31 granules, and at the largest alignment, from the merged block.
            let dl = layout(a + GRANULE, 16);
            let pd = touch_ends(&f, dl, 4);
            assert_eq!(
                addr(pd),
                addr(pa),
                "first fit from the merged block's start"
            );
            let el = layout(1 << 34, MAX_ALIGN);
            let pe = touch_ends(&f, el, 5);
            f.deallocate(pd, dl);
            f.deallocate(pe, el);
            assert_eq!(heap.stats().largest_free, a + b, "merged again");
            // The merged span, handed out whole where it starts, then everything freed.
            let wl = layout(a + b - t, 16);
            let pw = touch_ends(&f, wl, 6);
            assert_eq!(addr(pw), addr(pa), "the merged span is handed out whole");
            assert_eq!(heap.stats().free, 0);
            f.deallocate(pw, wl);
            f.deallocate(pc, cl);
        }
        let s = heap.stats();
        assert_eq!((s.in_use, s.free_blocks), (0, 1), "{s:?}");
    }
    // SAFETY: our mapping, no longer used.
    unsafe { libc::munmap(map.as_ptr().cast(), max_piece) };
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Allocates `l`, writes and reads back its first and last 16 bytes.
fn touch_ends(f: &dyn Front, l: Layout, tag: u8) -> NonNull<u8> {
    let b = f
        .allocate(l)
        .unwrap_or_else(|e| panic!("{}: allocate({l:?}): {e}", f.name()))
        .cast::<u8>();
    assert_eq!(addr(b) % l.align(), 0);
    let size = l.size();
    let edge = (size / 2).clamp(1, GRANULE);
    // SAFETY: the first and last `edge` bytes of a live block of `size` bytes.
    unsafe {
        fill(b, edge, tag);
        fill(b.add(size - edge), edge, tag ^ 0xFF);
        assert_pattern(b, 0, edge, tag, "first bytes");
        assert_pattern(b.add(size - edge), 0, edge, tag ^ 0xFF, "last bytes");
    }
    b
}

/// Three blocks of `size` bytes in a row (plus a guard), freed outer first so the middle one
/// merges with both neighbours; the merged span is handed out again whole.
fn three_blocks_merge(f: &dyn Front, size: usize) {
    let l = layout(size, 16);
    let ps = [
        touch_ends(f, l, 1),
        touch_ends(f, l, 2),
        touch_ends(f, l, 3),
    ];
    let step = span(f, size);
    assert_eq!(
        (addr(ps[1]), addr(ps[2])),
        (addr(ps[0]) + step, addr(ps[0]) + 2 * step)
    );
    let guard = touch_ends(f, layout(GRANULE, 16), 4);
    // (Each check() walks the whole heap: O(heap size / 128), so they are few.)
    // SAFETY: live blocks with these layouts.
    unsafe {
        f.deallocate(ps[0], l);
        f.deallocate(ps[2], l);
        check(f);
        assert_pattern(ps[1], 0, GRANULE.min(size), 2, "middle block");
        f.deallocate(ps[1], l);
        check(f);
        let all = layout(3 * step - tag_bytes(f), 16);
        let whole = touch_ends(f, all, 5);
        assert_eq!(
            addr(whole),
            addr(ps[0]),
            "the merged span is handed out whole"
        );
        f.deallocate(whole, all);
        f.deallocate(guard, layout(GRANULE, 16));
    }
    check(f);
    assert_eq!(f.stats().in_use, 0);
}

// ---- merging never hands out a block twice ----

/// The live blocks, by start address: (pointer, layout, tag).
type Shadow = BTreeMap<usize, (NonNull<u8>, Layout, u8)>;

/// Records a fresh block, asserting it overlaps no live one, and fills its requested bytes
/// with its tag.
fn adopt(f: &dyn Front, live: &mut Shadow, b: NonNull<[u8]>, l: Layout, tag: u8) {
    let (start, len) = (addr(b), span(f, l.size()));
    assert!(
        b.len() >= l.size() && start % l.align() == 0,
        "{}: bad block",
        f.name()
    );
    if let Some((&s, &(_, sl, _))) = live.range(..=start).next_back() {
        assert!(
            s + span(f, sl.size()) <= start,
            "{}: block {start:#x}+{len} overlaps live block {s:#x}+{}",
            f.name(),
            span(f, sl.size())
        );
    }
    if let Some((&s, &(_, sl, _))) = live.range(start..).next() {
        assert!(
            start + len <= s,
            "{}: block {start:#x}+{len} overlaps live block {s:#x}+{}",
            f.name(),
            span(f, sl.size())
        );
    }
    // SAFETY: a fresh block of at least l.size() bytes.
    unsafe { b.cast::<u8>().as_ptr().write_bytes(tag, l.size()) };
    live.insert(start, (b.cast(), l, tag));
}

/// Checks a live block still holds its tag and frees it.
fn release(f: &dyn Front, live: &mut Shadow, start: usize) {
    let (p, l, tag) = live.remove(&start).unwrap();
    // SAFETY: a live block of layout l, freed with it.
    unsafe {
        assert!(
            all_are(p, l.size(), tag),
            "{}: block {start:#x}+{} was overwritten while live (handed out twice?)",
            f.name(),
            l.size()
        );
        f.deallocate(p, l);
    }
}

fn verify_all(f: &dyn Front, live: &Shadow) {
    for (&start, &(p, l, tag)) in live {
        // SAFETY: a live block of layout l.
        let intact = unsafe { all_are(p, l.size(), tag) };
        assert!(
            intact,
            "{}: live block {start:#x}+{} was overwritten",
            f.name(),
            l.size()
        );
    }
    let used: usize = live.values().map(|&(_, l, _)| span(f, l.size())).sum();
    assert_eq!(
        f.stats().in_use,
        used,
        "{}: in_use disagrees with the live blocks",
        f.name()
    );
    check(f);
}

/// Random allocation and freeing with frees arranged to merge with both neighbours; a shadow
/// map of live ranges proves no block is handed out while another live block overlaps it, and
/// every live block keeps its own fill. At the end the heap is filled again (to a limit, or to a
/// count) and checked the same way.
#[test]
fn merge_never_hands_out_a_block_twice() {
    static G: GlobalHeap = GlobalHeap::new();
    every_front(4 << 20, &G, |f| {
        let bounded = f.name() == "BufferHeap";
        let mut rng = Rng(0x0DD_B1A5 ^ f.name().len() as u64);
        let mut live = Shadow::new();
        let mut tag = 0u8;
        let mut next_tag = || {
            tag = tag.wrapping_add(1).max(1);
            tag
        };
        let new_layout = |rng: &mut Rng| {
            let size = match rng.below(10) {
                0 => 1 + rng.below(20_000),
                1..=3 => 1 + rng.below(16),
                _ => 1 + rng.below(700),
            };
            let align = if f.caps().align_change {
                1 << rng.below(9)
            } else {
                8
            };
            layout(size, align)
        };
        // Runs of three neighbours: free the outer two, then the middle one (merging both
        // ways), then refill the hole with blocks of other sizes.
        for round in 0..300 {
            let ls = [
                new_layout(&mut rng),
                new_layout(&mut rng),
                new_layout(&mut rng),
            ];
            let mut run = Vec::new();
            for l in ls {
                match f.allocate(l) {
                    Ok(b) => {
                        adopt(f, &mut live, b, l, next_tag());
                        run.push(addr(b));
                    }
                    Err(_) => assert!(bounded, "{}: allocation failed", f.name()),
                }
            }
            if run.len() == 3 {
                release(f, &mut live, run[0]);
                release(f, &mut live, run[2]);
                release(f, &mut live, run[1]);
            }
            for _ in 0..rng.below(4) {
                let l = new_layout(&mut rng);
                if let Ok(b) = f.allocate(l) {
                    adopt(f, &mut live, b, l, next_tag());
                }
            }
            if round % 50 == 0 {
                verify_all(f, &live);
            }
        }
        // Churn: random frees (merging with whatever is free around) and allocations.
        for step in 0..6000 {
            if !live.is_empty() && rng.below(100) < 48 {
                let k = rng.below(live.len());
                let start = *live.keys().nth(k).unwrap();
                release(f, &mut live, start);
            } else {
                let l = new_layout(&mut rng);
                match f.allocate(l) {
                    Ok(b) => adopt(f, &mut live, b, l, next_tag()),
                    Err(_) => assert!(bounded, "{}: allocation failed", f.name()),
                }
            }
            if step % 1000 == 0 {
                verify_all(f, &live);
            }
        }
        verify_all(f, &live);
        // Free every other block in address order, then the rest (each merging both ways).
        let starts: Vec<usize> = live.keys().copied().collect();
        for &s in starts.iter().step_by(2) {
            release(f, &mut live, s);
        }
        verify_all(f, &live);
        for &s in starts.iter().skip(1).step_by(2) {
            release(f, &mut live, s);
        }
        verify_all(f, &live);
        assert_eq!(f.stats().in_use, 0);
        // Allocate everything again: to the end of a bounded heap, else a few thousand blocks.
        let mut refused = 0;
        for _ in 0..if bounded { 100_000 } else { 4000 } {
            let l = new_layout(&mut rng);
            match f.allocate(l) {
                Ok(b) => adopt(f, &mut live, b, l, next_tag()),
                Err(_) if bounded => {
                    refused += 1;
                    if refused > 200 {
                        break;
                    }
                }
                Err(e) => panic!("{}: {e}", f.name()),
            }
        }
        verify_all(f, &live);
        let starts: Vec<usize> = live.keys().copied().collect();
        for s in starts {
            release(f, &mut live, s);
        }
        verify_all(f, &live);
        assert_eq!(f.stats().in_use, 0);
    });
}

// ---- false out-of-memory for aligned requests ----

/// In a heap that cannot grow (a buffer, or a mapped heap at its limit), freeing an aligned
/// block and asking for the same layout again must succeed: the freed span holds it exactly, at
/// the same aligned address. (First fit for alignments above 16 asks the index for `size +
/// align - 16` bytes, which a freed block of an aligned size need not have, and the heap then
/// reports out of memory although the request fits.)
#[test]
fn aligned_free_block_is_reused_when_full() {
    let mut failures = Vec::new();
    for (size, align) in [
        (20_000, 4096),
        (4096, 4096),
        (1000, 1024),
        (100, 64),
        (5000, 256),
    ] {
        let l = layout(size, align);
        let mut buf = buffer(256 << 10);
        let heap = Heap::from_buffer(&mut buf).unwrap();
        let limited = Heap::builder()
            .initial(1 << 20)
            .limit(1 << 20)
            .quick_reuse(false)
            .build()
            .unwrap();
        for (f, n) in [
            (&*heap, "BufferHeap"),
            (&limited, "Heap, initial = limit = 1 MiB"),
        ] {
            let mut blocks: Vec<NonNull<u8>> = Vec::new();
            while let Ok(b) = f.allocate(l) {
                blocks.push(b.cast());
                assert!(blocks.len() < 100_000);
            }
            assert!(
                blocks.len() >= 3,
                "{n}: only {} blocks of {l:?}",
                blocks.len()
            );
            let mid = blocks.len() / 2;
            // SAFETY: live with layout l.
            unsafe { f.deallocate(blocks[mid], l) };
            f.check().unwrap();
            match f.allocate(l) {
                Ok(b) => {
                    if addr(b) != addr(blocks[mid]) {
                        failures.push(format!("{n}: {l:?}: reused at another address"));
                    }
                    blocks[mid] = b.cast();
                }
                Err(_) => {
                    let s = f.stats();
                    failures.push(format!(
                        "{n}: {l:?}: out of memory after freeing a block of exactly that \
                         layout ({} blocks; largest free span {} bytes)",
                        blocks.len(),
                        s.largest_free
                    ));
                    blocks.remove(mid);
                }
            }
            for p in blocks {
                // SAFETY: live with layout l.
                unsafe { f.deallocate(p, l) };
            }
            f.check().unwrap();
            assert_eq!(f.stats().in_use, 0);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
