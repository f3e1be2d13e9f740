//! `Heap::trim`: with automatic give-back off, the resident size stays up after a spike is freed
//! and falls when the program asks for it. Its own test binary with a single test, so no other
//! test's memory moves the process's resident size meanwhile. Not under Miri (no madvise, no
//! /proc).

#![cfg(all(target_os = "linux", feature = "mmap", not(miri)))]

use isoheap::{Heap, os_counters};
use std::alloc::Layout;

/// Resident bytes of this process, from `/proc/self/statm` (second field, in pages).
fn rss() -> usize {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = s.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[test]
fn trim_lowers_the_resident_size_on_demand() {
    let heap = Heap::builder().give_back(usize::MAX).build().unwrap();
    let small = Layout::from_size_align(64, 8).unwrap();
    let keep = heap.allocate(small).unwrap();
    let before = rss();
    // 48 MiB in blocks of mixed sizes, every byte written, with small keepers in between (so
    // the free memory is free blocks between used ones, not only a chunk's tail).
    let (mut spike, mut keepers) = (Vec::new(), Vec::new());
    let mut x = 12345u64;
    let mut total = 0;
    while total < 48 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let size = 4096 + (x % 60_000) as usize;
        let l = Layout::from_size_align(size, 8).unwrap();
        let p = heap.allocate(l).unwrap();
        // SAFETY: a fresh block of at least `size` bytes.
        unsafe { p.cast::<u8>().as_ptr().write_bytes(0xAB, size) };
        spike.push((p, l));
        keepers.push(heap.allocate(small).unwrap());
        total += size;
    }
    for (p, l) in spike {
        // SAFETY: allocated above with `l`, freed once.
        unsafe { heap.deallocate(p.cast(), l) };
    }
    let freed = rss();
    assert!(
        freed > before + (40 << 20),
        "with give-back off, freed memory stays resident: {before} -> {freed}"
    );
    let decommits = os_counters().decommits;
    let released = heap.trim();
    let after = rss();
    println!("rss before {before}, freed {freed}, after trim {after}; trim released {released}");
    heap.check().unwrap();
    assert!(released >= 40 << 20, "trim released {released} bytes");
    assert!(os_counters().decommits > decommits);
    assert!(
        after + (36 << 20) < freed,
        "resident size did not fall by the memory given back: {freed} -> {after}"
    );
    // SAFETY: allocated above with `small`, freed once.
    unsafe {
        for p in keepers {
            heap.deallocate(p.cast(), small);
        }
        heap.deallocate(keep.cast(), small);
    }
    heap.check().unwrap();
}
