//! Bad input through every front end, one test per input kind and front end (the table in
//! `docs/bad-input.md` lists them):
//!
//! - `*_heap`: `&Heap` through allocator-api2's `Allocator`, through the inherent methods, a
//!   strict heap (`quick_reuse(false)`) and an unchecked one (`checked(false)`: checked mode is
//!   the default in debug builds);
//! - `*_core`: `&Heap` (and a `BufferHeap`'s `&Heap`) through `core::alloc::Allocator` (feature
//!   `nightly`);
//! - `*_buffer`: a `BufferHeap` from `Heap::from_buffer`, through allocator-api2 and inherent;
//! - `*_sync`: `&SyncHeap` through allocator-api2 and inherent, and `SharedHeap`;
//! - `*_global`: a `GlobalHeap` static (not the program's allocator) through `GlobalAlloc`. A
//!   global heap aborts the process on a misuse it detects, so each of these runs in a forked
//!   child: an abort becomes a failure of that test, with the child's stderr in its message.
//!
//! After every refused request the heap must still work (a block is allocated, written, freed),
//! `check()` must pass, and once everything is freed `stats().in_use` must be 0. Misuse (wrong
//! layout on free, double free, foreign pointers) is covered by `faults` (`tests/it/faults.rs`).

use isoheap::{AllocError, BufferHeap, GRANULE, GlobalHeap, Heap, HeapError, MAX_ALIGN, Stats};
#[cfg(feature = "nightly")]
use isoheap_testkit::Core;
use isoheap_testkit::bytes::{
    addr, assert_filled, assert_zero, attempt, buffer, fill, layout, report,
};
use isoheap_testkit::{Api2, Front, Methods, front_tests, span};
use std::alloc::{GlobalAlloc, Layout};
use std::mem::MaybeUninit;
use std::panic::catch_unwind;
use std::ptr::NonNull;

// ---- helpers (the front ends, one trait over all of them, are the kit's) ----

/// The length `allocate` returns for `size` bytes: exactly `size` in checked mode, else the
/// size rounded up to 16 (the whole block).
fn returned_len(f: &dyn Front, size: usize) -> usize {
    if f.checked() {
        size
    } else {
        size.next_multiple_of(GRANULE)
    }
}

/// Allocates `l` through `f`, checks the block and fills its requested bytes with `tag`.
fn alloc_filled(f: &dyn Front, l: Layout, tag: u8) -> NonNull<u8> {
    let b = f
        .allocate(l)
        .unwrap_or_else(|e| panic!("{}: allocate({l:?}): {e}", f.name()));
    assert!(
        b.len() >= l.size(),
        "{}: {l:?} got {} bytes",
        f.name(),
        b.len()
    );
    assert_eq!(addr(b) % l.align(), 0, "{}: {l:?} misaligned", f.name());
    // SAFETY: a fresh block of at least l.size() bytes.
    unsafe { fill(b.cast(), l.size(), tag) };
    b.cast()
}

fn check(f: &dyn Front, when: &str) {
    if let Err(e) = f.check() {
        panic!("{}: check() after {when}: {e}", f.name());
    }
}

/// The heap still serves a block after a refusal: allocate, write, read back, free, check.
fn still_works(f: &dyn Front, after: &str) {
    let l = layout(100, 8);
    let b = f
        .allocate(l)
        .unwrap_or_else(|e| panic!("{}: heap unusable after {after}: {e}", f.name()));
    // SAFETY: a fresh 100-byte block, freed with its layout.
    unsafe {
        fill(b.cast(), 100, 0x5A);
        assert_filled(b.cast(), 100, 0x5A, after);
        f.deallocate(b.cast(), l);
    }
    check(f, after);
}

/// Everything is freed: nothing in use and the heap consistent.
fn finish(f: &dyn Front) {
    check(f, "freeing everything");
    let s = f.stats();
    assert_eq!(s.in_use, 0, "{}: blocks left in use: {s:?}", f.name());
}

/// Asserts a refusal left the heap's use and mapping as they were.
fn assert_unchanged(f: &dyn Front, before: &Stats, what: &str) {
    let now = f.stats();
    assert_eq!(
        (now.in_use, now.mapped),
        (before.in_use, before.mapped),
        "{}: {what} changed the heap: before {before:?}, after {now:?}",
        f.name()
    );
}

/// Bytes the OS refuses to map in one piece on this machine (more than RAM + swap under the
/// kernel's overcommit heuristic, or in strict accounting) but that a heap chunk could describe
/// (under 64 GiB), if there is such a size. `None` where the OS would grant it (overcommit
/// always on, or a machine with more than ~40 GiB).
fn os_refused_size() -> Option<usize> {
    let mode = std::fs::read_to_string("/proc/sys/vm/overcommit_memory").ok()?;
    if mode.trim() == "1" {
        return None;
    }
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib = |key: &str| -> Option<usize> {
        let line = info.lines().find(|l| l.starts_with(key))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let total = (kib("MemTotal:")? + kib("SwapTotal:")?) << 10;
    let size = (total + total / 2).next_multiple_of(1 << 30);
    (size < (60 << 30)).then_some(size)
}

// ---- row: zero-size layouts ----

/// Zero-size layouts: a dangling, aligned pointer of length 0 that uses nothing; freeing it is
/// a no-op; growing it is allocating; shrinking to zero frees.
fn zero_size(f: &dyn Front) {
    let n = f.name();
    let keep = alloc_filled(f, layout(48, 16), 1);
    let before = f.stats();
    for k in 0..=29 {
        let align = 1usize << k;
        let l = layout(0, align);
        for zeroed in [false, true] {
            let b = if zeroed {
                f.allocate_zeroed(l)
            } else {
                f.allocate(l)
            }
            .unwrap_or_else(|e| panic!("{n}: zero-size {l:?} (zeroed: {zeroed}): {e}"));
            assert_eq!(b.len(), 0, "{n}: zero-size {l:?} has a length");
            assert_eq!(addr(b) % align, 0, "{n}: zero-size {l:?} misaligned");
            // SAFETY: a zero-size block of this heap with this layout.
            unsafe { f.deallocate(b.cast(), l) };
        }
    }
    let s = f.stats();
    assert_eq!(
        (s.in_use, s.mapped),
        (before.in_use, before.mapped),
        "{n}: zero-size traffic used or mapped memory"
    );
    for align in [1, 8, 16, 64, 4096, 1 << 20] {
        let zl = layout(0, align);
        let l = layout(100, align);
        // SAFETY: zero-size blocks of this heap grow into real ones, which shrink back to zero
        // size; every block is used within its layout.
        unsafe {
            let z = f.allocate(zl).unwrap().cast::<u8>();
            let g = f
                .grow(z, zl, l)
                .unwrap_or_else(|e| panic!("{n}: grow from zero size to {l:?}: {e}"));
            assert_eq!(addr(g) % align, 0, "{n}: grow from zero size misaligned");
            assert_eq!(g.len(), returned_len(f, 100), "{n}: grow length");
            fill(g.cast(), g.len(), 3);
            let z2 = f.allocate_zeroed(zl).unwrap().cast::<u8>();
            let gz = f
                .grow_zeroed(z2, zl, l)
                .unwrap_or_else(|e| panic!("{n}: grow_zeroed from zero size to {l:?}: {e}"));
            assert_eq!(addr(gz) % align, 0, "{n}: grow_zeroed misaligned");
            assert_zero(gz.cast(), gz.len(), "grow_zeroed from zero size");
            assert!(
                addr(g) + g.len() <= addr(gz) || addr(gz) + gz.len() <= addr(g),
                "{n}: two blocks grown from zero size overlap"
            );
            assert_eq!(
                f.stats().in_use,
                before.in_use + 2 * span(f, 100),
                "{n}: grow from zero size allocates"
            );
            assert_filled(g.cast(), g.len(), 3, "block grown from zero size");
            let s = f
                .shrink(g.cast(), l, zl)
                .unwrap_or_else(|e| panic!("{n}: shrink {l:?} to zero size: {e}"));
            assert_eq!(s.len(), 0, "{n}: shrink to zero size has a length");
            assert_eq!(addr(s) % align, 0, "{n}: shrink to zero size misaligned");
            let big = layout(0, align * 2);
            let s2 = f
                .shrink(gz.cast(), l, big)
                .unwrap_or_else(|e| panic!("{n}: shrink {l:?} to {big:?}: {e}"));
            assert_eq!((s2.len(), addr(s2) % (align * 2)), (0, 0), "{n}: {big:?}");
            assert_eq!(
                f.stats().in_use,
                before.in_use,
                "{n}: shrinking to zero size does not free"
            );
            // Freeing the zero-size results is a no-op.
            f.deallocate(s.cast(), zl);
            f.deallocate(s2.cast(), big);
            // Zero to zero, both ways.
            let z3 = f.allocate(zl).unwrap().cast::<u8>();
            let g0 = f.grow(z3, zl, zl).expect("grow zero to zero");
            let s0 = f.shrink(g0.cast(), zl, zl).expect("shrink zero to zero");
            assert_eq!((g0.len(), s0.len()), (0, 0));
            assert_eq!((addr(g0) % align, addr(s0) % align), (0, 0));
            f.deallocate(s0.cast(), zl);
        }
        assert_eq!(f.stats().in_use, before.in_use, "{n}: align {align}");
        check(f, "zero-size grow and shrink");
    }
    // SAFETY: keep is live with this layout and was filled with tag 1.
    unsafe {
        assert_filled(keep, 48, 1, "live block during zero-size traffic");
        f.deallocate(keep, layout(48, 16));
    }
    still_works(f, "zero-size traffic");
    finish(f);
}

// The buffers: big enough for a 100-byte block at 1 MiB alignment.
front_tests!(zero_size {
    heap => zero_size_heap {
        // Zero-size allocations map nothing.
        let heap = Heap::new();
        let _ = heap.allocate(layout(0, 4096)).unwrap();
        assert_eq!(heap.stats().mapped, 0);
    },
    core(3 << 20) => zero_size_core,
    buffer(3 << 20) => zero_size_buffer,
    sync => zero_size_sync,
});

// ---- row: alignments 1 ..= 2^29 ----

/// Every power of two up to `MAX_ALIGN` is served and the pointer is aligned; above it,
/// `Err(AllocError)` and nothing changes (also for grow and shrink to such an alignment).
fn align_range(f: &dyn Front) {
    let n = f.name();
    let keep_l = layout(48, 8);
    let keep = alloc_filled(f, keep_l, 2);
    let mut failures = Vec::new();
    for k in 0..=29u32 {
        let align = 1usize << k;
        let l = layout(24, align);
        if align <= MAX_ALIGN {
            attempt(&mut failures, format!("{n}: align 2^{k}"), || {
                let a = alloc_filled(f, l, k as u8);
                let z = f
                    .allocate_zeroed(l)
                    .unwrap_or_else(|e| panic!("allocate_zeroed({l:?}): {e}"));
                assert_eq!(addr(z) % align, 0, "allocate_zeroed({l:?}) misaligned");
                assert!(z.len() >= 24);
                // SAFETY: live blocks of these layouts.
                unsafe {
                    assert_zero(z.cast(), z.len(), "allocate_zeroed");
                    assert_filled(a, 24, k as u8, "aligned block");
                    f.deallocate(a, l);
                    f.deallocate(z.cast(), l);
                }
                check(f, "aligned allocations");
            });
        } else {
            let before = f.stats();
            assert_eq!(f.allocate(l), Err(AllocError), "{n}: allocate({l:?})");
            assert_eq!(f.allocate_zeroed(l), Err(AllocError), "{n}: zeroed {l:?}");
            if !addr(keep).is_multiple_of(align) {
                // SAFETY: keep is live with keep_l; a refused resize leaves it so.
                unsafe {
                    let g = layout(64, align);
                    assert_eq!(f.grow(keep, keep_l, g), Err(AllocError), "{n}: grow {g:?}");
                    assert_eq!(f.grow_zeroed(keep, keep_l, g), Err(AllocError), "{n}");
                    let s = layout(16, align);
                    assert_eq!(f.shrink(keep, keep_l, s), Err(AllocError), "{n}: {s:?}");
                }
            }
            assert_unchanged(f, &before, &format!("a request aligned to 2^{k}"));
            still_works(f, &format!("a request aligned to 2^{k}"));
        }
    }
    report(failures);
    // SAFETY: keep is live with this layout and was filled with tag 2.
    unsafe {
        assert_filled(keep, 48, 2, "live block during aligned traffic");
        f.deallocate(keep, keep_l);
    }
    finish(f);
}

/// A buffer that holds two live `MAX_ALIGN`-aligned blocks wherever it lies (the first boundary
/// may fall before the heap's metadata): three `MAX_ALIGN` spans and some. Only its metadata
/// (1/128) and the blocks' granules are ever written.
const ALIGN_BUFFER: usize = 3 * MAX_ALIGN + (1 << 20);

front_tests!(align_range {
    heap => align_range_heap,
    core(ALIGN_BUFFER) => align_range_core,
    buffer(ALIGN_BUFFER) => align_range_buffer {
        // A small buffer refuses an alignment it has no room for, and stays usable. The 64 KiB
        // window lies inside a larger buffer where no 1 MiB boundary falls inside it: a buffer
        // that straddled one could serve the block (under Valgrind, whose allocator placed it
        // so, this failed).
        let mut buf = buffer(3 << 16);
        let base = buf.as_ptr().addr();
        let off = (0..3usize)
            .map(|i| i << 16)
            .find(|&o| (base + o + 1).next_multiple_of(1 << 20) >= base + o + (1 << 16))
            .expect("one of three 64 KiB windows holds no 1 MiB boundary");
        let heap = Heap::from_buffer(&mut buf[off..off + (1 << 16)]).unwrap();
        let f = Api2::new(&*heap, "BufferHeap of 64 KiB");
        let before = f.stats();
        assert_eq!(f.allocate(layout(24, 1 << 20)), Err(AllocError));
        assert_unchanged(&f, &before, "a 1 MiB alignment in a 64 KiB buffer");
        still_works(&f, "a 1 MiB alignment in a 64 KiB buffer");
        finish(&f);
    },
    sync => align_range_sync,
});

// ---- row: sizes near isize::MAX and rounding overflow ----

/// Sizes no block can have: near `isize::MAX` (rounding them up to 16 bytes passes
/// `isize::MAX`), and past what a chunk can number (2^32 granules). Every request is
/// `Err(AllocError)`, the heap is unchanged, and a live block asked to grow to such a size stays
/// intact, usable and freeable.
fn huge_size(f: &dyn Front) {
    let n = f.name();
    let keep_l = layout(100, 8);
    let keep = alloc_filled(f, keep_l, 7);
    let before = f.stats();
    let mut layouts = Vec::new();
    for align in [1, 8, 16, 4096, MAX_ALIGN] {
        for k in 0..64 {
            // `isize::MAX - k` where Layout allows it (align 1 only: Layout rounds the size up to
            // the alignment), and the largest sizes Layout allows at this alignment.
            for size in [
                isize::MAX as usize - k,
                isize::MAX as usize - (align - 1) - k,
            ] {
                if let Ok(l) = Layout::from_size_align(size, align) {
                    layouts.push(l);
                }
            }
        }
    }
    assert!(
        layouts.len() >= 5 * 64,
        "too few layouts: {}",
        layouts.len()
    );
    // Past 2^32 granules, and far past the address space a process gets.
    let gran_max = u32::MAX as usize * GRANULE;
    for size in [
        gran_max + 1,
        gran_max + GRANULE,
        gran_max + GRANULE + 1,
        1 << 40,
        1 << 46,
        isize::MAX as usize / 2 + 1,
    ] {
        layouts.push(layout(size, 16));
        layouts.push(layout(size, 1));
    }
    for l in layouts {
        assert_eq!(f.allocate(l), Err(AllocError), "{n}: allocate({l:?})");
        assert_eq!(f.allocate_zeroed(l), Err(AllocError), "{n}: zeroed({l:?})");
        // SAFETY: keep is live with keep_l; a refused grow leaves it so.
        unsafe {
            assert_eq!(
                f.grow(keep, keep_l, l),
                Err(AllocError),
                "{n}: grow to {l:?}"
            );
            assert_eq!(
                f.grow_zeroed(keep, keep_l, l),
                Err(AllocError),
                "{n}: {l:?}"
            );
        }
    }
    assert_unchanged(f, &before, "huge requests");
    check(f, "huge requests");
    // The huge grow the README names: old small, new isize::MAX - 7.
    let huge = layout(isize::MAX as usize - 7, 8);
    // SAFETY: keep is live with keep_l; after the refusal it is still live, then grows.
    unsafe {
        assert_eq!(f.grow(keep, keep_l, huge), Err(AllocError), "{n}");
        assert_filled(keep, 100, 7, "block after a refused huge grow");
        still_works(f, "a huge grow");
        let bigger = layout(5000, 8);
        let g = f
            .grow(keep, keep_l, bigger)
            .unwrap_or_else(|e| panic!("{n}: block unusable after a refused huge grow: {e}"));
        assert_filled(g.cast(), 100, 7, "block grown after a refused huge grow");
        f.deallocate(g.cast(), bigger);
    }
    finish(f);
}

front_tests!(huge_size {
    heap => huge_size_heap {
        // A limited heap too.
        let heap = Heap::builder().limit(1 << 20).build().unwrap();
        huge_size(&Methods(&heap, "Heap (inherent methods)"));
    },
    core(64 << 10) => huge_size_core,
    buffer(64 << 10) => huge_size_buffer,
    sync => huge_size_sync,
});

// ---- row: grow to a smaller size, shrink to a larger one ----

/// Outside the trait's contract, but the heap refuses rather than misbehave: `Err(AllocError)`,
/// the block unchanged and still live.
fn wrong_direction(f: &dyn Front) {
    let n = f.name();
    let al = layout(200, 8);
    let a = alloc_filled(f, al, 11);
    let b = alloc_filled(f, layout(64, 16), 12);
    let before = f.stats();
    for (new, what) in [
        (layout(100, 8), "grow to a smaller size"),
        (
            layout(100, 4096),
            "grow to a smaller size and a larger alignment",
        ),
        (layout(0, 8), "grow to zero size"),
        (layout(199, 1), "grow by minus one byte"),
    ] {
        // SAFETY: a is live with al; a refused grow leaves it so.
        unsafe {
            assert_eq!(f.grow(a, al, new), Err(AllocError), "{n}: {what}");
            assert_eq!(f.grow_zeroed(a, al, new), Err(AllocError), "{n}: {what}");
            assert_filled(a, 200, 11, what);
        }
        assert_unchanged(f, &before, what);
        still_works(f, what);
    }
    for (new, what) in [
        (layout(300, 8), "shrink to a larger size"),
        (layout(300, 4096), "shrink to a larger size and alignment"),
        (layout(201, 8), "shrink by minus one byte"),
        (layout(5000, 1), "shrink to a much larger size"),
    ] {
        // SAFETY: as above.
        unsafe {
            assert_eq!(f.shrink(a, al, new), Err(AllocError), "{n}: {what}");
            assert_filled(a, 200, 11, what);
        }
        assert_unchanged(f, &before, what);
        still_works(f, what);
    }
    // The block is still live: it grows, its neighbour is intact, both free.
    // SAFETY: a and b are live with these layouts.
    unsafe {
        assert_filled(b, 64, 12, "neighbour of a refused resize");
        let big = layout(4000, 8);
        let g = f.grow(a, al, big).expect("block still live");
        assert_filled(g.cast(), 200, 11, "grown after refusals");
        f.deallocate(g.cast(), big);
        f.deallocate(b, layout(64, 16));
    }
    finish(f);
}

front_tests!(wrong_direction {
    heap => wrong_direction_heap,
    core(64 << 10) => wrong_direction_core,
    buffer(64 << 10) => wrong_direction_buffer,
    sync => wrong_direction_sync,
});

// ---- row: grow and shrink that change the alignment ----

/// Grow from align 16 to 4096, shrink from align 8 to 1024, and to smaller alignments: the
/// result is aligned to the new layout and the kept bytes are intact; other blocks too.
fn realign(f: &dyn Front) {
    let n = f.name();
    // Several rounds, each behind a different lead block, so the block starts at different
    // offsets (aligned or not already) and both the in-place and the moving paths run.
    for round in 0..6usize {
        let lead_l = layout(16 + round * 48, 16);
        let lead = alloc_filled(f, lead_l, 0xA0);
        let tag = round as u8;

        // Grow from align 16 to 4096 (with and without zeroing).
        let (o16, n4096) = (layout(300, 16), layout(5000, 4096));
        let a = alloc_filled(f, o16, tag);
        let az = alloc_filled(f, o16, tag ^ 0x40);
        // SAFETY: live blocks with these layouts; after a successful resize only the result is
        // used.
        unsafe {
            let g = f
                .grow(a, o16, n4096)
                .unwrap_or_else(|e| panic!("{n}: grow 16 -> 4096: {e}"));
            assert_eq!(addr(g) % 4096, 0, "{n}: grow to align 4096");
            assert!(g.len() >= 5000);
            assert_filled(g.cast(), 300, tag, "grow 16 -> 4096");
            let gz = f
                .grow_zeroed(az, o16, n4096)
                .unwrap_or_else(|e| panic!("{n}: grow_zeroed 16 -> 4096: {e}"));
            assert_eq!(addr(gz) % 4096, 0, "{n}: grow_zeroed to align 4096");
            assert_filled(gz.cast(), 300, tag ^ 0x40, "grow_zeroed 16 -> 4096");
            assert_zero(
                gz.cast::<u8>().add(300),
                gz.len() - 300,
                "grow_zeroed 16 -> 4096 tail",
            );
            assert_filled(g.cast(), 300, tag, "grow 16 -> 4096 (after the next one)");

            // Shrink from align 8 to 1024.
            let (o8, n1024) = (layout(3000, 8), layout(500, 1024));
            let s = alloc_filled(f, o8, tag ^ 0x11);
            let r = f
                .shrink(s, o8, n1024)
                .unwrap_or_else(|e| panic!("{n}: shrink 8 -> 1024: {e}"));
            assert_eq!(addr(r) % 1024, 0, "{n}: shrink to align 1024");
            assert!(r.len() >= 500);
            assert_filled(r.cast(), 500, tag ^ 0x11, "shrink 8 -> 1024");

            // Shrink to a smaller alignment (4096 -> 8), grow to a smaller one (4096 -> 16),
            // and same size, larger alignment both ways.
            let (o4096, n8) = (layout(3000, 4096), layout(500, 8));
            let t = alloc_filled(f, o4096, tag ^ 0x22);
            let r2 = f
                .shrink(t, o4096, n8)
                .unwrap_or_else(|e| panic!("{n}: shrink 4096 -> 8: {e}"));
            assert_eq!(addr(r2) % 8, 0);
            assert_filled(r2.cast(), 500, tag ^ 0x22, "shrink 4096 -> 8");
            let u_l = layout(100, 4096);
            let u = alloc_filled(f, u_l, tag ^ 0x33);
            let g16 = layout(9000, 16);
            let r3 = f
                .grow(u, u_l, g16)
                .unwrap_or_else(|e| panic!("{n}: grow 4096 -> 16: {e}"));
            assert_filled(r3.cast(), 100, tag ^ 0x33, "grow 4096 -> 16");
            let same = layout(64, 16);
            let v = alloc_filled(f, same, tag ^ 0x44);
            let to = layout(64, 2048);
            let r4 = f
                .grow(v, same, to)
                .unwrap_or_else(|e| panic!("{n}: grow 64 bytes 16 -> 2048: {e}"));
            assert_eq!(addr(r4) % 2048, 0);
            assert_filled(r4.cast(), 64, tag ^ 0x44, "grow same size 16 -> 2048");
            let r5 = f
                .shrink(r4.cast(), to, layout(64, 8192))
                .unwrap_or_else(|e| panic!("{n}: shrink 64 bytes 2048 -> 8192: {e}"));
            assert_eq!(addr(r5) % 8192, 0);
            assert_filled(r5.cast(), 64, tag ^ 0x44, "shrink same size 2048 -> 8192");

            // Nothing else changed.
            assert_filled(lead, lead_l.size(), 0xA0, "lead block");
            assert_filled(g.cast(), 300, tag, "grown block at the end");
            assert_filled(r.cast(), 500, tag ^ 0x11, "shrunk block at the end");
            check(f, "realigning resizes");
            for (p, l) in [
                (g.cast(), n4096),
                (gz.cast(), n4096),
                (r.cast(), n1024),
                (r2.cast(), n8),
                (r3.cast(), g16),
                (r5.cast(), layout(64, 8192)),
                (lead, lead_l),
            ] {
                f.deallocate(p, l);
            }
        }
        finish(f);
    }
}

front_tests!(realign {
    heap => realign_heap,
    core(256 << 10) => realign_core,
    buffer(256 << 10) => realign_buffer,
    sync => realign_sync,
});

// ---- row: heap too small, misaligned or empty buffer ----

fn assert_is_error(e: HeapError) {
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(e);
    let text = boxed.to_string();
    assert!(!text.is_empty(), "{e:?} displays as nothing");
    assert!(boxed.source().is_none());
    assert_eq!(text, e.to_string());
}

#[test]
fn too_small_heap() {
    // The minimum the builder reports for any limit below it is one and the same.
    let minimum = match Heap::builder().limit(1).build() {
        Err(HeapError::TooSmall {
            requested: 1,
            minimum,
        }) => minimum,
        other => panic!("limit(1): {other:?}"),
    };
    assert!(minimum > GRANULE);
    for tiny in [1, 15, GRANULE, 100, minimum / 2, minimum - 1] {
        let e = Heap::builder().limit(tiny).build().unwrap_err();
        assert_eq!(
            e,
            HeapError::TooSmall {
                requested: tiny,
                minimum
            }
        );
        assert_is_error(e);
    }
    let e = Heap::builder().limit(0).build().unwrap_err();
    assert_eq!(e, HeapError::ZeroSize);
    assert_is_error(e);
    assert_eq!(Heap::with_capacity(0).unwrap_err(), HeapError::ZeroSize);
    assert_eq!(
        Heap::builder().growth(0).build().unwrap_err(),
        HeapError::ZeroSize
    );
    for (initial, limit) in [
        (2 << 20, 1 << 20),
        (minimum + 1, minimum),
        (1 << 40, 1 << 30),
    ] {
        let e = Heap::builder()
            .initial(initial)
            .limit(limit)
            .build()
            .unwrap_err();
        assert_eq!(e, HeapError::LimitBelowInitial { initial, limit });
        assert_is_error(e);
    }
    let e = Heap::with_capacity(usize::MAX).unwrap_err();
    assert_eq!(
        e,
        HeapError::TooLarge {
            requested: usize::MAX
        }
    );
    assert_is_error(e);
    // The minimum itself works: one block, then Err, then usable again.
    let heap = Heap::builder().limit(minimum).build().unwrap();
    let f = Methods(&heap, "Heap (inherent methods)");
    let p = alloc_filled(&f, layout(GRANULE, 1), 1);
    assert!(heap.stats().mapped <= minimum);
    // SAFETY: p is live with this layout.
    unsafe { f.deallocate(p, layout(GRANULE, 1)) };
    still_works(&f, "the smallest heap");
    finish(&f);
}

/// Room for a `len`-byte buffer `offset` bytes past a 16-byte boundary, with 64 guard bytes on
/// each side, all set to 0xEE; returns the backing memory and the buffer's offset in it.
fn guarded(len: usize, offset: usize) -> (Vec<u128>, usize) {
    let mem = vec![u128::from_ne_bytes([0xEE; 16]); (len + offset).div_ceil(16) + 10];
    let base = mem.as_ptr().addr();
    let pad = base.wrapping_neg() & 15; // u128 is 16-aligned on x86_64, but not everywhere
    (mem, pad + 64 + offset)
}

/// The buffer `start..start+len` of `mem`.
fn slice_of(mem: &mut [u128], start: usize, len: usize) -> &mut [MaybeUninit<u8>] {
    assert!(start + len <= mem.len() * 16);
    // SAFETY: the range is inside `mem`'s initialised bytes, which the slice borrows.
    unsafe {
        std::slice::from_raw_parts_mut(mem.as_mut_ptr().cast::<MaybeUninit<u8>>().add(start), len)
    }
}

/// Asserts every byte of `mem` outside `start..end` is still 0xEE.
fn assert_guards(mem: &[u128], start: usize, end: usize, what: &str) {
    // SAFETY: reading initialised bytes of `mem`.
    let bytes = unsafe { std::slice::from_raw_parts(mem.as_ptr().cast::<u8>(), mem.len() * 16) };
    for (i, &b) in bytes.iter().enumerate() {
        if (i < start || i >= end) && b != 0xEE {
            panic!("{what}: byte {i} outside the heap's part {start}..{end} was written ({b:#x})");
        }
    }
}

#[test]
fn too_small_buffer() {
    let min = BufferHeap::MIN_LEN;
    let e = Heap::from_buffer(&mut []).unwrap_err();
    assert_eq!(e, HeapError::ZeroSize);
    assert_is_error(e);
    for offset in 0..16 {
        // An empty slice at any address.
        let (mut mem, start) = guarded(0, offset);
        assert_eq!(
            Heap::from_buffer(slice_of(&mut mem, start, 0)).unwrap_err(),
            HeapError::ZeroSize
        );
        // Too small once the start is rounded up to 16 bytes: `minimum` counts the padding.
        let pad = (16 - offset) % 16;
        for len in [1, 15, 16, min - 1, pad + min - 1]
            .into_iter()
            .filter(|&l| l < pad + min)
        {
            let (mut mem, start) = guarded(len, offset);
            let e = Heap::from_buffer(slice_of(&mut mem, start, len)).unwrap_err();
            assert_eq!(
                e,
                HeapError::TooSmall {
                    requested: len,
                    minimum: pad + min
                },
                "offset {offset}, length {len}"
            );
            assert_is_error(e);
            assert_guards(&mem, usize::MAX, 0, "refused buffer");
        }
        // The minimum at this address works and holds exactly one granule.
        let len = pad + min;
        let (mut mem, start) = guarded(len, offset);
        {
            let heap = Heap::from_buffer(slice_of(&mut mem, start, len)).unwrap();
            // One granule in checked mode (its metadata is the largest), a little more without.
            let room = heap.stats().free;
            assert!(
                room == GRANULE || (!heap.is_checked() && room > GRANULE && room <= 4 * GRANULE),
                "offset {offset}: {room} bytes free"
            );
            let f = Methods(&*heap, "Heap (inherent methods)");
            // The largest request one granule holds: 16 bytes, 14 in checked mode (the tag).
            let l = layout(GRANULE - isoheap_testkit::tag_bytes(&f), 1);
            let fillers: Vec<_> = (1..room / GRANULE)
                .map(|i| alloc_filled(&f, l, i as u8))
                .collect();
            let p = alloc_filled(&f, l, 9);
            assert_eq!(
                f.allocate(layout(1, 1)),
                Err(AllocError),
                "the blocks fill it"
            );
            // SAFETY: p and the fillers are live with layout l.
            unsafe {
                f.deallocate(p, l);
                for q in fillers {
                    f.deallocate(q, l);
                }
            }
            check(&f, "freeing the only block");
            // Usable again after the refusal: the one granule, again.
            let q = alloc_filled(&f, l, 10);
            // SAFETY: q is live with layout l, filled with tag 10.
            unsafe {
                assert_filled(q, l.size(), 10, "the smallest buffer's block");
                f.deallocate(q, l);
            }
            finish(&f);
        }
        assert_guards(&mem, start, start + len, "smallest buffer");
    }
}

#[test]
fn misaligned_buffer() {
    // As documented on `Heap::from_buffer`: a start off a 16-byte boundary is rounded up, the
    // length rounded down to whole granules; at most 15 bytes at each end go unused, and the
    // heap never writes outside what it uses.
    for offset in 1..16 {
        let len = (32 << 10) + 5;
        let pad = 16 - offset;
        let (mut mem, start) = guarded(len, offset);
        let used = (start + pad)..(start + pad + ((len - pad) & !(GRANULE - 1)));
        let lo = mem.as_ptr().addr() + used.start;
        let hi = mem.as_ptr().addr() + used.end;
        {
            let heap = Heap::from_buffer(slice_of(&mut mem, start, len)).unwrap();
            let s = heap.stats();
            assert_eq!(s.mapped, used.len(), "offset {offset}: {s:?}");
            assert_eq!(s.chunks, 1);
            let f = Api2::new(&*heap, "misaligned BufferHeap");
            let mut blocks = Vec::new();
            for i in 0usize.. {
                let l = layout(1 + (i * 37) % 700, 1 << (i % 8));
                let Ok(b) = f.allocate(l) else { break };
                assert!(addr(b) >= lo + s.metadata && addr(b) + b.len() <= hi);
                assert_eq!(addr(b) % l.align().max(GRANULE), 0);
                // SAFETY: a fresh block of b.len() bytes: write all of it.
                unsafe { fill(b.cast(), b.len(), i as u8) };
                blocks.push((b, l, i as u8));
            }
            assert!(blocks.len() > 40, "only {} blocks fit", blocks.len());
            check(&f, "filling a misaligned buffer");
            for (b, l, tag) in blocks {
                // SAFETY: live blocks with these layouts, filled above.
                unsafe {
                    assert_filled(b.cast(), b.len(), tag, "block in a misaligned buffer");
                    f.deallocate(b.cast(), l);
                }
            }
            still_works(&f, "filling a misaligned buffer");
            finish(&f);
        }
        // The bytes skipped at either end were never written (nor anything around them).
        assert_guards(&mem, used.start, used.end, "misaligned buffer");
    }
}

// ---- row: out of memory ----

/// Fills the heap with `l` blocks until it refuses (never a panic), checks the refusal changed
/// nothing, frees everything, and fills it again to the same count.
fn fill_until_refused(f: &dyn Front, l: Layout, cap: usize) {
    let n = f.name();
    let mut blocks = Vec::new();
    // Every failure is `Err(AllocError)` (the only error value there is); a panic or an abort
    // would end the test.
    while let Ok(b) = f.allocate(l) {
        // SAFETY: a fresh block of at least l.size() bytes.
        unsafe { fill(b.cast(), l.size(), blocks.len() as u8) };
        blocks.push(b.cast::<u8>());
        assert!(blocks.len() < cap, "{n}: {l:?} never ran out");
    }
    assert!(!blocks.is_empty(), "{n}: nothing fit");
    check(f, "running out of memory");
    let full = f.stats();
    // Refused again, every way: allocate, allocate_zeroed, grow of a live block.
    assert_eq!(f.allocate(l), Err(AllocError), "{n}");
    assert_eq!(f.allocate_zeroed(l), Err(AllocError), "{n}");
    let last = *blocks.last().unwrap();
    let grown = layout(full.largest_free + l.size() + 4096, l.align());
    // SAFETY: last is live with layout l; a refused grow leaves it so.
    unsafe {
        assert_eq!(
            f.grow(last, l, grown),
            Err(AllocError),
            "{n}: grow when full"
        );
        assert_filled(
            last,
            l.size(),
            (blocks.len() - 1) as u8,
            "block after refusals",
        );
    }
    assert_unchanged(f, &full, "refusals when full");
    // Freeing makes room again: one block frees room for one at alignments up to 16 (exact
    // first fit); for larger ones first fit asks for `size + align - 16`, which one freed block
    // of an aligned size need not hold (regressions::aligned_free_block_is_reused_when_full),
    // so two neighbours are freed for one.
    let count = blocks.len();
    let freed = if l.align() <= GRANULE { 1 } else { 2 };
    assert!(count >= freed, "{n}: only {count} blocks of {l:?} fit");
    for p in blocks.drain(..freed) {
        // SAFETY: live with layout l.
        unsafe { f.deallocate(p, l) };
    }
    let one = f
        .allocate(l)
        .unwrap_or_else(|e| panic!("{n}: no room for {l:?} after freeing {freed}: {e}"));
    for (i, &p) in blocks.iter().enumerate() {
        // SAFETY: live blocks, filled above with their index as tag.
        unsafe { assert_filled(p, l.size(), (i + freed) as u8, "block of a full heap") };
    }
    blocks.push(one.cast());
    for p in blocks.iter().copied() {
        // SAFETY: live with layout l.
        unsafe { f.deallocate(p, l) };
    }
    finish(f);
    let again = (0..cap).map_while(|_| f.allocate(l).ok()).count();
    assert_eq!(again, count, "{n}: {l:?}: refill");
    let s = f.stats();
    // The refill's blocks are leaked into the heap, which goes away with them.
    assert_eq!(s.in_use, again * span(f, l.size()), "{n}");
    check(f, "refilling");
}

#[test]
fn out_of_memory_heap() {
    for (quick, l) in [
        (true, layout(1000, 16)),
        (false, layout(1000, 16)),
        (true, layout(5000, 64)),
        (true, layout(100_000, 4096)),
    ] {
        let heap = Heap::builder()
            .limit(1 << 20)
            .quick_reuse(quick)
            .build()
            .unwrap();
        fill_until_refused(&Methods(&heap, "Heap (inherent methods)"), l, 10_000);
        assert!(heap.stats().mapped <= 1 << 20);
        let heap = Heap::builder()
            .limit(1 << 20)
            .quick_reuse(quick)
            .build()
            .unwrap();
        fill_until_refused(
            &Api2::new(&heap, "&Heap as allocator_api2::Allocator, limit 1 MiB"),
            l,
            10_000,
        );
    }
    // A fallible collection API sees the refusal.
    let heap = Heap::builder().limit(1 << 20).build().unwrap();
    let mut v: allocator_api2::vec::Vec<u8, &Heap> = allocator_api2::vec::Vec::new_in(&heap);
    assert!(v.try_reserve(2 << 20).is_err());
    v.try_reserve(1000).unwrap();
    drop(v);
    // An unlimited heap asked for more than the OS grants.
    if let Some(size) = os_refused_size() {
        isoheap_testkit::rows::heap(|f| {
            let before = f.stats();
            assert_eq!(
                f.allocate(layout(size, 16)),
                Err(AllocError),
                "{size} bytes"
            );
            assert_unchanged(f, &before, "a request the OS refuses");
            still_works(f, "a request the OS refuses");
            finish(f);
        });
    }
}

#[cfg(feature = "nightly")]
#[test]
fn out_of_memory_core() {
    let heap = Heap::builder().limit(1 << 20).build().unwrap();
    fill_until_refused(
        &Core::new(&heap, "&Heap as core::alloc::Allocator, limit 1 MiB"),
        layout(1000, 16),
        10_000,
    );
    let heap = Heap::builder().limit(1 << 20).build().unwrap();
    let mut v: Vec<u8, &Heap> = Vec::new_in(&heap);
    assert!(v.try_reserve(2 << 20).is_err());
    v.try_reserve(1000).unwrap();
}

#[test]
fn out_of_memory_buffer() {
    for l in [layout(1000, 16), layout(5000, 64), layout(20_000, 4096)] {
        let mut buf = buffer(256 << 10);
        let heap = Heap::from_buffer(&mut buf).unwrap();
        fill_until_refused(&Methods(&*heap, "Heap (inherent methods)"), l, 10_000);
        drop(heap);
        let heap = Heap::from_buffer(&mut buf).unwrap();
        fill_until_refused(
            &Api2::new(&*heap, "BufferHeap as allocator_api2::Allocator"),
            l,
            10_000,
        );
    }
}

/// A request far past what the OS (or a chunk) can hold: `Err(AllocError)`, nothing changed.
fn refused_by_the_os(f: &dyn Front) {
    let keep = alloc_filled(f, layout(100, 8), 4);
    let before = f.stats();
    let mut sizes = vec![1usize << 46];
    sizes.extend(os_refused_size());
    for size in sizes {
        for align in [16, 4096] {
            let l = layout(size, align);
            assert_eq!(f.allocate(l), Err(AllocError), "{}: {l:?}", f.name());
            assert_eq!(f.allocate_zeroed(l), Err(AllocError), "{}", f.name());
            // SAFETY: keep is live with this layout; a refused grow leaves it so.
            unsafe {
                assert_eq!(f.grow(keep, layout(100, 8), l), Err(AllocError));
                assert_filled(keep, 100, 4, "block after a refused grow");
            }
            assert_unchanged(f, &before, "a request the OS refuses");
            still_works(f, "a request the OS refuses");
        }
    }
    // SAFETY: keep is live with this layout.
    unsafe { f.deallocate(keep, layout(100, 8)) };
    finish(f);
}

front_tests!(refused_by_the_os {
    sync => out_of_memory_sync,
});

// ---- row: the budget ----

fn budget_refusal(f: &dyn Front, budget: usize) {
    let n = f.name();
    let l = layout(1000, 16);
    let mut blocks = Vec::new();
    while let Ok(b) = f.allocate(l) {
        blocks.push(b.cast::<u8>());
        assert!(
            blocks.len() <= budget / span(f, 1000),
            "{n}: past the budget"
        );
    }
    assert_eq!(
        blocks.len(),
        budget / span(f, 1000),
        "{n}: blocks under the budget"
    );
    let s = f.stats();
    assert_eq!(s.budget, Some(budget));
    assert_eq!(s.budget_refusals, 1, "{n}");
    assert_eq!(f.allocate_zeroed(l), Err(AllocError));
    // SAFETY: blocks[0] is live with layout l; a refused grow leaves it so.
    unsafe {
        assert_eq!(f.grow(blocks[0], l, layout(budget, 16)), Err(AllocError));
    }
    let after = f.stats();
    assert_eq!(after.budget_refusals, 3, "{n}: every refusal counted");
    assert_eq!((after.in_use, after.mapped), (s.in_use, s.mapped));
    check(f, "budget refusals");
    for p in blocks.drain(..) {
        // SAFETY: live with layout l.
        unsafe { f.deallocate(p, l) };
    }
    still_works(f, "budget refusals");
    finish(f);
    let again = (0..).map_while(|_| f.allocate(l).ok()).count();
    assert_eq!(
        again,
        budget / span(f, 1000),
        "{n}: refill under the budget"
    );
}

#[test]
fn budget_heap() {
    let heap = Heap::builder().budget(64 << 10).build().unwrap();
    budget_refusal(&Methods(&heap, "Heap (inherent methods)"), 64 << 10);
    let heap = Heap::builder().budget(64 << 10).build().unwrap();
    budget_refusal(
        &Api2::new(&heap, "&Heap as allocator_api2::Allocator, budget 64 KiB"),
        64 << 10,
    );
}

#[test]
fn budget_buffer() {
    let mut buf = buffer(256 << 10);
    let heap = Heap::from_buffer(&mut buf).unwrap();
    heap.set_budget(Some(64 << 10));
    budget_refusal(&Methods(&*heap, "Heap (inherent methods)"), 64 << 10);
}

// ---- GlobalHeap through GlobalAlloc, in a child process ----

/// Runs `body` in a forked child (a `GlobalHeap` aborts on a misuse it detects: here that is a
/// failure of this test, not of the whole test binary) and fails with the child's stderr and
/// status unless it exits cleanly within two minutes.
#[cfg(all(target_os = "linux", not(miri)))]
fn in_child(body: fn()) {
    let mut fds = [0; 2];
    // SAFETY: a fresh pipe.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: the child runs only `body` (allocations from glibc, which is fork-safe, and from
    // a `GlobalHeap` static no other thread uses) and leaves with `_exit`.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: in the child: stderr to the pipe, run, report, leave without unwinding into
        // the parent's stack or running its destructors.
        unsafe {
            libc::close(fds[0]);
            libc::dup2(fds[1], 2);
            let code = match catch_unwind(body) {
                Ok(()) => 0,
                Err(e) => {
                    let msg = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    note(&format!("panicked: {msg}"));
                    1
                }
            };
            libc::_exit(code);
        }
    }
    // SAFETY: closing our copy of the write end, then reading the read end until EOF (every
    // copy of the write end closed: the child has exited) or the deadline.
    unsafe { libc::close(fds[1]) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut out = Vec::new();
    let mut timed_out = false;
    loop {
        let mut pfd = libc::pollfd {
            fd: fds[0],
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let r = unsafe { libc::poll(&mut pfd, 1, 100) };
        if r > 0 {
            let mut buf = [0u8; 4096];
            // SAFETY: reading into our buffer.
            let k = unsafe { libc::read(fds[0], buf.as_mut_ptr().cast(), buf.len()) };
            if k <= 0 {
                break;
            }
            out.extend_from_slice(&buf[..k as usize]);
        }
        if std::time::Instant::now() > deadline {
            timed_out = true;
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            break;
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child; closing our read end.
    unsafe {
        libc::waitpid(pid, &mut status, 0);
        libc::close(fds[0]);
    }
    let text = String::from_utf8_lossy(&out);
    assert!(
        !timed_out,
        "the child hung (deadlock?); its stderr:\n{text}"
    );
    let how = if libc::WIFEXITED(status) {
        format!("exit code {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        format!("signal {}", libc::WTERMSIG(status))
    } else {
        format!("status {status:#x}")
    };
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "the child failed ({how}); its stderr:\n{text}"
    );
}

/// A line on the child's stderr (no allocation from the heap under test, no std lock).
#[cfg(all(target_os = "linux", not(miri)))]
fn note(s: &str) {
    // SAFETY: writing our own bytes to fd 2.
    unsafe {
        libc::write(2, s.as_ptr().cast(), s.len());
        libc::write(2, b"\n".as_ptr().cast(), 1);
    }
}

#[cfg(all(target_os = "linux", not(miri)))]
fn global_check(g: &GlobalHeap, when: &str) {
    if let Err(e) = g.heap().check() {
        panic!("GlobalHeap: check() after {when}: {e}");
    }
}

/// `alloc` of a 100-byte block, write, read, `dealloc`: the global heap still works.
#[cfg(all(target_os = "linux", not(miri)))]
fn global_still_works(g: &GlobalHeap, after: &str) {
    let l = layout(100, 8);
    // SAFETY: a non-zero-size layout; the block is used within it and freed with it.
    unsafe {
        let p = g.alloc(l);
        let p = NonNull::new(p).unwrap_or_else(|| panic!("GlobalHeap unusable after {after}"));
        fill(p, 100, 0x5A);
        assert_filled(p, 100, 0x5A, after);
        g.dealloc(p.as_ptr(), l);
    }
    global_check(g, after);
}

#[cfg(all(target_os = "linux", not(miri)))]
fn global_finish(g: &GlobalHeap) {
    global_check(g, "freeing everything");
    let s = g.heap().stats();
    assert_eq!(s.in_use, 0, "GlobalHeap: blocks left in use: {s:?}");
}

/// # Safety
/// `l` has a non-zero size.
#[cfg(all(target_os = "linux", not(miri)))]
unsafe fn global_alloc_filled(g: &GlobalHeap, l: Layout, tag: u8) -> NonNull<u8> {
    // SAFETY: non-zero size (contract).
    let p = unsafe { g.alloc(l) };
    let p = NonNull::new(p).unwrap_or_else(|| panic!("GlobalHeap: alloc({l:?}) is null"));
    assert_eq!(
        p.addr().get() % l.align(),
        0,
        "GlobalHeap: {l:?} misaligned"
    );
    // SAFETY: a fresh block of l.size() bytes.
    unsafe { fill(p, l.size(), tag) };
    p
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn align_range_global() {
    in_child(|| {
        static G: GlobalHeap = GlobalHeap::new();
        let keep_l = layout(48, 8);
        // SAFETY: every layout has a non-zero size; blocks are used within their layouts and
        // freed with them.
        unsafe {
            let keep = global_alloc_filled(&G, keep_l, 2);
            for k in 0..=29u32 {
                let align = 1usize << k;
                let l = layout(24, align);
                if align <= MAX_ALIGN {
                    note(&format!("align 2^{k}: alloc, alloc_zeroed, dealloc"));
                    let a = global_alloc_filled(&G, l, k as u8);
                    let z = NonNull::new(G.alloc_zeroed(l))
                        .unwrap_or_else(|| panic!("alloc_zeroed({l:?}) is null"));
                    assert_eq!(z.addr().get() % align, 0, "alloc_zeroed({l:?}) misaligned");
                    assert_zero(z, 24, "alloc_zeroed");
                    assert_filled(a, 24, k as u8, "aligned block");
                    G.dealloc(a.as_ptr(), l);
                    G.dealloc(z.as_ptr(), l);
                    global_check(&G, "aligned allocations");
                } else {
                    let before = G.heap().stats();
                    assert!(G.alloc(l).is_null(), "alloc({l:?}) is not null");
                    assert!(G.alloc_zeroed(l).is_null(), "alloc_zeroed({l:?}) not null");
                    let now = G.heap().stats();
                    assert_eq!((now.in_use, now.mapped), (before.in_use, before.mapped));
                    global_still_works(&G, &format!("a request aligned to 2^{k}"));
                }
            }
            assert_filled(keep, 48, 2, "live block during aligned traffic");
            G.dealloc(keep.as_ptr(), keep_l);
        }
        global_finish(&G);
        note("ok");
    });
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn huge_size_global() {
    in_child(|| {
        static G: GlobalHeap = GlobalHeap::new();
        let keep_l = layout(100, 8);
        // SAFETY: non-zero sizes; keep stays live with keep_l through every refused realloc
        // (GlobalAlloc: on null the old block is untouched), then is reallocated and freed.
        unsafe {
            let keep = global_alloc_filled(&G, keep_l, 7);
            let before = G.heap().stats();
            let mut layouts = Vec::new();
            for align in [1, 8, 16, 4096, MAX_ALIGN] {
                for k in 0..64 {
                    for size in [
                        isize::MAX as usize - k,
                        isize::MAX as usize - (align - 1) - k,
                    ] {
                        if let Ok(l) = Layout::from_size_align(size, align) {
                            layouts.push(l);
                        }
                    }
                }
            }
            let gran_max = u32::MAX as usize * GRANULE;
            for size in [gran_max + 1, gran_max + GRANULE, 1 << 40, 1 << 46] {
                layouts.push(layout(size, 16));
            }
            for l in layouts {
                assert!(G.alloc(l).is_null(), "alloc({l:?})");
                assert!(G.alloc_zeroed(l).is_null(), "alloc_zeroed({l:?})");
            }
            // realloc to sizes near isize::MAX and to usize-sized values that overflow when
            // rounded (no valid Layout: realloc must say null, not wrap).
            for k in 0..64 {
                for new in [
                    isize::MAX as usize - k,
                    usize::MAX - k,
                    (usize::MAX >> 1) + 1 + k,
                ] {
                    assert!(
                        G.realloc(keep.as_ptr(), keep_l, new).is_null(),
                        "realloc to {new}"
                    );
                }
            }
            assert_filled(keep, 100, 7, "block after refused reallocs");
            let now = G.heap().stats();
            assert_eq!((now.in_use, now.mapped), (before.in_use, before.mapped));
            global_still_works(&G, "huge requests");
            let r = G.realloc(keep.as_ptr(), keep_l, 5000);
            let r = NonNull::new(r).expect("block still usable after refusals");
            assert_filled(r, 100, 7, "block reallocated after refusals");
            G.dealloc(r.as_ptr(), layout(5000, 8));
        }
        global_finish(&G);
    });
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn wrong_direction_global() {
    // GlobalAlloc's realloc takes both directions: smaller and larger keep the contents.
    in_child(|| {
        static G: GlobalHeap = GlobalHeap::new();
        // SAFETY: non-zero sizes; every block is used within its current layout.
        unsafe {
            let neighbour = global_alloc_filled(&G, layout(64, 16), 0x77);
            let mut p = global_alloc_filled(&G, layout(1000, 8), 1);
            let mut size = 1000;
            let mut kept = 1000;
            for new in [100, 3000, 17, 1, 40_000, 999, 1000, 16, 5000] {
                let r = G.realloc(p.as_ptr(), layout(size, 8), new);
                let r = NonNull::new(r).unwrap_or_else(|| panic!("realloc {size} -> {new}"));
                kept = kept.min(new);
                assert_filled(r, kept, 1, &format!("realloc {size} -> {new}"));
                (p, size) = (r, new);
                global_check(&G, "realloc");
            }
            assert_filled(neighbour, 64, 0x77, "neighbour of reallocs");
            G.dealloc(p.as_ptr(), layout(size, 8));
            G.dealloc(neighbour.as_ptr(), layout(64, 16));
        }
        global_still_works(&G, "reallocs both ways");
        global_finish(&G);
    });
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn realign_global() {
    // realloc keeps the layout's alignment (it cannot change it): large alignments survive
    // growing and shrinking, and so do the contents.
    in_child(|| {
        static G: GlobalHeap = GlobalHeap::new();
        // SAFETY: non-zero sizes; every block is used within its current layout.
        unsafe {
            for align in [32, 1024, 4096, 1 << 16, 1 << 20] {
                let mut p = global_alloc_filled(&G, layout(300, align), 3);
                let guard = global_alloc_filled(&G, layout(16, 16), 4);
                let mut size = 300;
                for new in [5000, 100, 70_000, 50] {
                    let r = G.realloc(p.as_ptr(), layout(size, align), new);
                    let r = NonNull::new(r).unwrap_or_else(|| panic!("realloc {size} -> {new}"));
                    assert_eq!(r.addr().get() % align, 0, "realloc at align {align}");
                    assert_filled(r, size.min(new).min(300), 3, "realloc");
                    (p, size) = (r, new);
                }
                assert_filled(guard, 16, 4, "guard");
                G.dealloc(p.as_ptr(), layout(size, align));
                G.dealloc(guard.as_ptr(), layout(16, 16));
                global_check(&G, "realloc at a large alignment");
            }
        }
        global_finish(&G);
    });
}

#[cfg(all(target_os = "linux", not(miri)))]
#[test]
fn out_of_memory_global() {
    in_child(|| {
        static G: GlobalHeap = GlobalHeap::new();
        let keep_l = layout(100, 8);
        // SAFETY: non-zero sizes; keep stays live through refused reallocs, then is freed.
        unsafe {
            let keep = global_alloc_filled(&G, keep_l, 5);
            let before = G.heap().stats();
            let mut sizes = vec![1usize << 46];
            sizes.extend(os_refused_size());
            for size in sizes {
                for align in [16, 4096] {
                    let l = layout(size, align);
                    assert!(G.alloc(l).is_null(), "alloc({l:?})");
                    assert!(G.alloc_zeroed(l).is_null(), "alloc_zeroed({l:?})");
                }
                assert!(G.realloc(keep.as_ptr(), keep_l, size).is_null());
                assert_filled(keep, 100, 5, "block after a refused realloc");
                let now = G.heap().stats();
                assert_eq!((now.in_use, now.mapped), (before.in_use, before.mapped));
                global_still_works(&G, &format!("a request of {size} bytes"));
            }
            G.dealloc(keep.as_ptr(), keep_l);
        }
        global_finish(&G);
    });
}

/// A child asked of a heap whose budget or limit is reached: `ParentFull`, naming the sizes,
/// and nothing changes; a child whose allocations pass the parent's budget gets `AllocError`
/// and the parent counts the refusal.
#[test]
fn child_of_a_full_parent_is_refused() {
    let tight = Heap::builder().budget(4096).build().unwrap();
    let b = tight.allocate(layout(4000, 16)).unwrap();
    let before = tight.stats();
    match tight.child() {
        Err(HeapError::ParentFull { needed, available }) => {
            assert!(available < needed, "{needed} {available}");
            let text = HeapError::ParentFull { needed, available }.to_string();
            assert!(text.contains("cannot lend"), "{text}");
        }
        other => panic!("expected ParentFull, got {other:?}"),
    }
    assert_eq!(tight.stats(), before, "a refused child changes nothing");
    // SAFETY: allocated above with this layout.
    unsafe { tight.deallocate(b.cast(), layout(4000, 16)) };
    // Room for a child, but not for what it is asked.
    let child = tight.child().unwrap();
    assert!(child.allocate(layout(8000, 16)).is_err());
    assert_eq!(tight.stats().in_use, 0);
    assert!(tight.stats().budget_refusals >= 1);
    let small = child.allocate(layout(100, 16)).unwrap();
    // SAFETY: allocated above with this layout.
    unsafe { child.deallocate(small.cast(), layout(100, 16)) };
    drop(child);
    // A parent at its limit with no free span left.
    let full = Heap::builder()
        .initial(64 << 10)
        .limit(64 << 10)
        .build()
        .unwrap();
    let mut blocks = Vec::new();
    while let Ok(p) = full.allocate(layout(16, 16)) {
        blocks.push(p);
    }
    let before = full.stats();
    assert!(matches!(full.child(), Err(HeapError::ParentFull { .. })));
    assert_eq!(full.stats(), before);
    for p in blocks {
        // SAFETY: allocated above with this layout.
        unsafe { full.deallocate(p.cast(), layout(16, 16)) };
    }
    assert!(full.child().is_ok());
}
