//! Memory given back: after a spike is freed, the resident size falls back to within a small
//! margin of where it was. Its own test binary with a single test, so no other test's memory
//! moves the process's resident size meanwhile. Not under Miri (no madvise, no /proc).

#![cfg(all(target_os = "linux", not(miri)))]

use isoheap::Heap;
use std::alloc::Layout;
use std::ptr::NonNull;

/// Resident bytes of this process, from `/proc/self/statm` (second field, in pages).
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn resident_size_falls_after_a_spike() {
    let heap = Heap::builder().give_back(64 << 10).build().unwrap();
    // Warm up: a small steady state.
    let small = Layout::from_size_align(64, 8).unwrap();
    let keep: Vec<NonNull<[u8]>> = (0..100).map(|_| heap.allocate(small).unwrap()).collect();
    let before = rss();
    // The spike: 64 MiB in blocks of mixed sizes, every byte written.
    let mut spike = Vec::new();
    let mut x = 12345u64;
    let mut total = 0;
    while total < 64 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = 16 + (x % 8000) as usize;
        let l = Layout::from_size_align(size, 8).unwrap();
        let p = heap.allocate(l).unwrap();
        // SAFETY: a fresh block of at least `size` bytes.
        unsafe { p.cast::<u8>().as_ptr().write_bytes(0xAB, size) };
        spike.push((p, l));
        total += size;
    }
    let peak = rss();
    assert!(
        peak > before + (48 << 20),
        "the spike is resident: {before} -> {peak}"
    );
    // Free in random order, so most memory comes back through merges, not one big block.
    let n = spike.len();
    for i in 0..n {
        let j = i + (x as usize % (n - i));
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        spike.swap(i, j);
        let (p, l) = spike[i];
        // SAFETY: allocated above with `l`, freed once.
        unsafe { heap.deallocate(p.cast(), l) };
    }
    heap.check().unwrap();
    let after = rss();
    println!(
        "rss before {before} peak {peak} after {after} ({:?})",
        isoheap::os_counters()
    );
    assert!(
        after < before + (4 << 20),
        "resident size after the spike ({after}) is not within 4 MiB of before ({before}); peak {peak}"
    );
    for p in keep {
        // SAFETY: allocated above with `small`.
        unsafe { heap.deallocate(p.cast(), small) };
    }
}
